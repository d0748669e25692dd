"""The Optuna study behind `sweep run`: storage, sampler, pruner and resume (the trials are run
by `sweep.workers`).

Storage is Optuna's RDB storage: SQLite in `DIR/study.db` by default, or any URL Optuna
takes (`postgresql://…`, `mysql://…`) so workers on several machines share one study. It is
the RDB storage (not the journal file) because only it has heartbeats in Optuna 5: a trial
whose process was killed stops beating, `fail_stale_trials` marks it failed once its grace
period (3 heartbeats) has passed, and `RetryHeartbeatStaleTrialCallback` queues a copy with
the same parameters, which the next free worker runs first.

The study records the config it was started with; a rerun with a different one is refused,
naming the changed keys, unless `--new` starts afresh.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

from skillgraft.errors import UserError
from skillgraft.sweep.config import Sweep

CONFIG_ATTR = "skillgraft_sweep_config"
MAX_RETRY = 3  # a trial whose process died is queued again at most this often (sweep.recovery)
UNCHECKED = ("n_trials", "heartbeat", "batch_size")   # how long / how fast to run, not what is searched


def _not_a_user_error(record: logging.LogRecord) -> bool:
    """Optuna logs a failed trial with its traceback; for a UserError the sweep's own progress
    line already says it in one line, so only unexpected errors keep Optuna's record."""
    return not (record.exc_info and isinstance(record.exc_info[1], UserError))


def quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logger = logging.getLogger("optuna")
    if _not_a_user_error not in logger.filters:
        logger.addFilter(_not_a_user_error)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")


def storage_url(out: Path, url: str | None) -> str:
    return url or f"sqlite:///{(Path(out) / 'study.db').resolve()}"


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def open_storage(url: str, heartbeat: int):
    """Optuna's RDB storage with heartbeats; an unreachable or unusable URL is one UserError."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    sqlite = url.startswith("sqlite")
    kwargs = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    try:
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs=kwargs, heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))
        if sqlite:
            _serialised_sqlite(storage.engine)
        return storage
    except ImportError as exc:
        raise UserError(f"--storage {shown(url)}: no database driver for it is installed ({exc.__cause__ or exc}; "
                        "for PostgreSQL: pip install 'psycopg[binary]')") from None
    except Exception as exc:  # sqlalchemy's OperationalError, ArgumentError...
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise UserError(f"--storage {shown(url)}: cannot be reached or used ({type(exc).__name__}: {reason})") from None


def _serialised_sqlite(engine) -> None:
    """SQLite as several worker processes need it.

    Python's sqlite3 starts a transaction only at the first write, so Optuna's "is this queued
    trial still waiting? then it is mine" read and its write were not one transaction: two
    workers both took enqueued trial 0 of the knowledge sweep (Optuna then refused to record it
    twice, "Cannot tell a COMPLETE trial"). Every transaction here begins with BEGIN IMMEDIATE,
    which takes the write lock first, so the check and the claim are atomic. WAL mode with
    `synchronous=NORMAL`: a commit is not a disk sync (a power cut may lose the last commits,
    never corrupt the file; a killed process loses nothing); 12 commits a trial took 8 ms each
    with syncs on this machine.
    """
    from sqlalchemy import event

    def on_connect(connection, record):
        connection.isolation_level = None  # no implicit BEGIN from sqlite3; `on_begin` issues ours
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")

    def on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_begin)
    engine.dispose()  # connections opened before the listeners reconnect with them


def recorded_config(sweep: Sweep) -> dict:
    """What identifies a study: the config without run-length keys, the base recipe's content,
    and the sha256 of every file they name (`files`: data, suites and their items, prompts)."""
    config = sweep.config.model_dump(mode="json")
    for key in UNCHECKED:
        config.pop(key, None)
    config["base"] = sweep.base_tree
    config["files"] = file_hashes(sweep)
    return config


def file_hashes(sweep: Sweep) -> dict[str, str]:
    """{what: sha256} of the files the base recipe names and of the objectives' suites (YAML and
    item files), so a resumed study notices a changed data or suite file."""
    from skillgraft.checkpoint.folder import sha256_file
    from skillgraft.config import named_files
    from skillgraft.evaluate.suites import load_suite, resolve_suite_path

    files = {f"base.{key}": path for key, path in named_files(sweep.recipe({}, "check")).items()}
    for index, entry in enumerate([*sweep.config.objectives, *sweep.config.constraints]):
        if entry.suite is not None:
            files[f"suite.{entry.suite}"] = str(resolve_suite_path(entry.suite))
            for probe_set in load_suite(entry.suite).sets:
                files[f"suite.{entry.suite}.{probe_set.name}"] = probe_set.source
    return {key: sha256_file(path) for key, path in sorted(files.items())}


def flatten(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict) and tree:
        return {k: v for key, value in tree.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
    if isinstance(tree, list) and tree and any(isinstance(v, (dict, list)) for v in tree):
        return {k: v for i, value in enumerate(tree) for k, v in flatten(value, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): tree}


def changed_keys(old: dict, new: dict) -> list[str]:
    a, b = flatten(old), flatten(new)
    return sorted(key for key in set(a) | set(b) if a.get(key, "<absent>") != b.get(key, "<absent>"))


def sampler_seed(seed: int, worker: int, done: int) -> int:
    """The seed of a worker's sampler: `seed + worker` in a new study; in a study that already
    holds `done` trials, a seed mixed from all three, so a resumed run draws a fresh stream
    instead of proposing its first run's start-up points again. The same config run the
    same sequence of invocations (and trial counts) proposes the same trials."""
    if done == 0:
        return seed + worker
    import numpy as np

    return int(np.random.SeedSequence([seed, worker, done]).generate_state(1)[0])


def make_sampler(sweep: Sweep, worker: int, done: int = 0):
    """The configured sampler; each worker gets its own seed (`sampler_seed`), so two workers
    never propose the same first points, nor a resumed run its predecessor's."""
    import optuna

    from skillgraft.sweep.space import grid

    spec, seed = sweep.config.sampler, sampler_seed(sweep.config.seed, worker, done)
    constraints = {"constraints_func": lambda t: t.user_attrs.get("result", {}).get("constraints", [])} \
        if sweep.config.constraints else {}
    try:
        if spec.name == "grid":  # visits each grid point once by itself
            return optuna.samplers.GridSampler(grid(sweep.config.space), seed=seed, **spec.options)
        if spec.name == "tpe":
            base = optuna.samplers.TPESampler(seed=seed, **constraints, **spec.options)
        elif spec.name == "nsga2":
            base = optuna.samplers.NSGAIISampler(seed=seed, **constraints, **spec.options)
        elif spec.name == "gp":
            base = optuna.samplers.GPSampler(seed=seed, **constraints, **spec.options)
        else:
            base = optuna.samplers.RandomSampler(seed=seed, **spec.options)
    except (TypeError, ValueError, ImportError) as exc:
        raise UserError(f"{sweep.source}: sampler: {exc}") from None
    from skillgraft.sweep.fresh import FreshSampler

    return FreshSampler(base, list(grid(sweep.config.space, steps_only=False)), seed)


def make_pruner(sweep: Sweep):
    import optuna

    spec = sweep.config.pruner
    if spec is None:
        return optuna.pruners.NopPruner()
    classes = {"median": optuna.pruners.MedianPruner, "percentile": optuna.pruners.PercentilePruner,
               "hyperband": optuna.pruners.HyperbandPruner,
               "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
               "threshold": optuna.pruners.ThresholdPruner}
    try:
        return classes[spec.name](**spec.options)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{sweep.source}: pruner: {exc}") from None


def prepare_study(sweep: Sweep, out: Path, url: str | None, name: str, *, new: bool,
                  allow_changed_data: bool = False) -> str:
    """Create the study, or check that the existing one was started with this config and the same
    files (`allow_changed_data`: the files may differ); returns the URL."""
    import optuna

    quiet_optuna()
    url = storage_url(out, url)
    Path(out).mkdir(parents=True, exist_ok=True)
    storage = open_storage(url, sweep.config.heartbeat)
    directions = [o.direction for o in sweep.config.objectives]
    wanted = recorded_config(sweep)
    exists = name in {s.study_name for s in storage.get_all_studies()}
    if exists and new:
        optuna.delete_study(study_name=name, storage=storage)
        shutil.rmtree(Path(out) / "trials", ignore_errors=True)
        exists = False
    if exists:
        old = optuna.load_study(study_name=name, storage=storage).user_attrs.get(CONFIG_ATTR)
        if old is not None and (allow_changed_data or "files" not in old):  # (studies before file hashes)
            old, wanted = {**old, "files": None}, {**wanted, "files": None}
        if old is not None and old != wanted:
            keys = changed_keys(old, wanted)
            files = any(key.startswith("files.") for key in keys)
            raise UserError(f"{sweep.source}: the config changed since study {name!r} in {shown(url)} was started "
                            f"(changed: {', '.join(keys)}); rerun with the same config, or pass --new to start afresh"
                            + ("; --allow-changed-data continues with the changed files" if files else ""))
    else:
        study = optuna.create_study(study_name=name, storage=storage, directions=directions)
        study.set_user_attr(CONFIG_ATTR, wanted)
        for point in sweep.config.enqueue:
            study.enqueue_trial(point)
    return url


def load(sweep: Sweep, url: str, name: str, worker: int = 0):
    import optuna

    quiet_optuna()
    study = optuna.load_study(study_name=name, storage=open_storage(url, sweep.config.heartbeat),
                              sampler=make_sampler(sweep, worker), pruner=make_pruner(sweep))
    done = len(study.get_trials(deepcopy=False))
    if done:
        study.sampler = make_sampler(sweep, worker, done)
    return study
