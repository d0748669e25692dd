"""`run_suite`: several models, the same probes, the same decoding; scores and per-item outputs.

The CLI's `eval` and `compare` verbs, the training monitor and sweeps all call this one
function, with checkpoint paths, endpoint URLs or models already in memory.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from skillgraft import __version__
from skillgraft.errors import UserError
from skillgraft.evaluate.backends import Backend, as_messages, make_backend
from skillgraft.evaluate.metrics import NEEDS_REFERENCE, NO_OUTPUT, MetricContext, options_of, score_item
from skillgraft.evaluate.results import PartialLog, aggregate, retention_table, settings_key, write_json_atomic
from skillgraft.evaluate.suites import Suite, load_suite
from skillgraft.heartbeat import Heartbeat


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _quiet(message: str) -> None:
    """The log of a run that prints nothing."""


def _labelled(models: Any) -> list[tuple[str, Any]]:
    """[(label, model spec)] from one spec, a sequence of specs, or a {label: spec} mapping."""
    if isinstance(models, Mapping):
        return [(str(k), v) for k, v in models.items()]
    if isinstance(models, (str, Path, Backend, tuple)) or not isinstance(models, Sequence):
        models = [models]
    out = []
    for index, spec in enumerate(models):
        if isinstance(spec, Path):
            spec = str(spec)
        label = spec if isinstance(spec, str) else getattr(spec, "label", None) or f"model-{index}"
        out.append((label, spec))
    if len({label for label, _ in out}) != len(out):
        raise UserError("each model must appear once (labels must be unique)")
    return out


def suite_settings(suite: Suite) -> dict[str, Any]:
    """Everything about the suite that determines outputs, for the results file."""
    return {
        "suite": {"name": suite.name, "path": suite.path, "sha256": suite.sha256},
        "generation": suite.generation.model_dump(),
        "sets": {
            s.name: {
                "items": s.source,
                "n_items": len(s.items),
                "language": s.language,
                "metrics": [{"name": m.name, **options_of(m)} for m in s.metrics],
                "generation": s.generation.model_dump(),
            }
            for s in suite.sets
        },
    }


def run_suite(models: Any, suite: str | Path | Suite, *, output: str | Path | None = None,
              batch_size: int = 8, backend: str = "auto", endpoint_model: str | None = None,
              dtype: str | None = None, device: str | None = None, generation: Mapping[str, Any] | None = None,
              reference: Any = None, languages: Sequence[str] | None = None,
              log: Callable[[str], None] | None = _stderr) -> dict[str, Any]:
    """Evaluate every model on every set of `suite` and return the results dict.

    `models`: checkpoint paths, `http(s)://…/v1` URLs, `Backend`s or `(model, tokenizer)`
    pairs (one, a list, or a {label: spec} mapping). `generation` overrides the suite's
    decoding settings for every set. With `output`, finished items are logged to
    `OUTPUT.partial.jsonl` so an interrupted run resumes, and the results are written there.
    `batch_size` changes speed only: greedy outputs do not depend on it.

    `reference`: the model `kept` and `general_kl` compare with (a spec as in `models`, or
    the `references` of an earlier call); default: the first model when there are several
    (with one model and no reference, those metrics are left empty).
    """
    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    log = log or _quiet
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    if generation:
        for probe_set in suite.sets:
            probe_set.generation = probe_set.generation.model_copy(update=dict(generation))
        suite.generation = suite.generation.model_copy(update=dict(generation))
    labelled = _labelled(models)
    skipped = _sets_outside_languages(suite, labelled, languages, log) if suite.only_model_languages else {}
    settings = {**suite_settings(suite), "tool": "skillgraft", "tool_version": __version__,
                "backend": backend, "endpoint_model": endpoint_model, "dtype": dtype,
                "model_order": [label for label, _ in labelled], "batch_size": batch_size,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if skipped:
        settings["skipped_sets"] = skipped
    if reference is None and len(labelled) == 1:
        # one model and no reference: kept / general_kl would compare it with itself
        refs = References()
        if any(m.name in NEEDS_REFERENCE for s in suite.sets for m in s.metrics):
            log("note: kept and general_kl need a reference model (--reference BASE, or the base first); "
                "left empty")
    else:
        refs = references(reference if reference is not None else labelled[0][1], suite, batch_size=batch_size,
                          dtype=dtype, device=device, log=log)
    if refs:
        settings["reference"] = refs.describe
    partial = PartialLog(f"{output}.partial.jsonl" if output else None, settings_key(settings), log)
    ctx = MetricContext(references=refs)
    where = {"at": "loading the first model"}  # what the heartbeat says on a long run
    with Heartbeat(lambda: f"eval: {where['at']}", log=log, enabled=log is not _quiet):
        for label, spec in labelled:
            pending = [(s, item) for s in suite.sets for item in s.items if (label, s.name, item.id) not in partial.done]
            if not pending and label in partial.models:
                continue
            owned = not isinstance(spec, Backend)
            where["at"] = f"loading {label}"
            model = make_backend(spec, label=label, backend=backend, endpoint_model=endpoint_model,
                                 dtype=dtype, device=device)
            try:
                chat = {s.name: model.applied(s.generation).chat for s in suite.sets if s.generation.chat == "auto"}
                partial.add_model(label, {**model.describe(), **({"chat_applied": chat} if chat else {})})
                for probe_set in suite.sets:
                    todo = [item for s, item in pending if s is probe_set]
                    for start in range(0, len(todo), batch_size * 4):
                        where["at"] = f"{label} · {probe_set.name}: {start} of {len(todo)} items"
                        _run_chunk(model, label, probe_set, todo[start:start + batch_size * 4], batch_size, ctx, partial)
                    if todo:
                        log(f"{label} · {probe_set.name}: {len(todo)} items done")
            finally:
                if owned:
                    model.close()
    for judge_backend in ctx.judges.values():
        judge_backend.close()
    items = [partial.done[(label, s.name, item.id)] for label, _ in labelled for s in suite.sets for item in s.items]
    scores = aggregate(items)
    settings["models"] = {label: partial.models.get(label) for label, _ in labelled}
    judges = {m["name"]: m for s in settings["sets"].values() for m in s["metrics"] if m["name"] == "judge"}
    if judges:
        settings["judge"] = {"rubric": next(iter(judges.values()))["rubric"]}
    results: dict[str, Any] = {"settings": settings, "scores": scores, "items": items}
    if len(labelled) > 1:
        results["retention"] = retention_table(scores, labelled[0][0])
        results["settings"]["retention_baseline"] = labelled[0][0]
    if output:
        write_json_atomic(output, results)
    partial.finish()
    return results


class References(dict):
    """{set name: {item id: ReferenceAnswer}} for the sets whose metrics need a reference,
    with `describe` (what the reference was) for the results' settings."""

    def __init__(self):
        super().__init__()
        self.describe: dict[str, Any] = {}


def references(spec: Any, suite: Suite, *, batch_size: int = 8, dtype: str | None = None, device: str | None = None,
               log: Callable[[str], None] | None = None) -> References:
    """The reference's answers to every set that needs them (`kept`, `general_kl`), from the
    cache when the reference is a folder whose answers were computed before; `spec` may also
    be the `References` of an earlier call (the training monitor's step-0 model)."""
    from skillgraft.evaluate.reference import model_fingerprint, reference_answers

    if isinstance(spec, References):
        return spec
    sets = [s for s in suite.sets if any(m.name in NEEDS_REFERENCE for m in s.metrics)]
    refs = References()
    if not sets:
        return refs
    folder, loaded = None, []
    if isinstance(spec, (str, Path)):
        from skillgraft.evaluate.backends.endpoint import is_endpoint

        if is_endpoint(str(spec)):
            raise UserError(f"reference {spec}: kept and general_kl need a local reference model, not an endpoint "
                            "(pass --reference FOLDER)")
        from skillgraft.checkpoint.kinds import local_model

        folder = local_model(str(spec)).path
    label = str(spec) if folder is not None else getattr(spec, "label", "in-memory model")

    def load():
        if not loaded:
            loaded.append(make_backend(str(folder) if folder is not None else spec, label="reference",
                                       dtype=dtype, device=device))
        return loaded[0]

    fingerprint = model_fingerprint(folder) if folder is not None else None
    has_template = _has_chat_template(folder, spec) if any(s.generation.chat == "auto" for s in sets) else False
    try:
        for probe_set in sets:
            generation = probe_set.generation
            if generation.chat == "auto":
                generation = generation.model_copy(update={"chat": has_template})
            prompts = [as_messages(item.input, generation) for item in probe_set.items]
            answers = reference_answers(prompts, generation, fingerprint=fingerprint, load=load,
                                        batch_size=batch_size, log=log)
            refs[probe_set.name] = {item.id: answer for item, answer in zip(probe_set.items, answers)}
    finally:
        if loaded and isinstance(spec, (str, Path)):
            loaded[0].close()
    refs.describe = {"model": label, "fingerprint": fingerprint}
    return refs


def _has_chat_template(folder: Path | None, spec: Any) -> bool:
    """Whether the reference has a chat template, read without loading its weights when it is a
    folder (its answers may all be cached)."""
    if folder is None:
        return make_backend(spec, label="reference").has_chat_template
    from skillgraft.tokenizer import read_chat_template

    return read_chat_template(folder) is not None


def _sets_outside_languages(suite: Suite, labelled: list[tuple[str, Any]], languages: Sequence[str] | None,
                            log: Callable[[str], None]) -> dict[str, str]:
    """Drop the sets whose `language` no model speaks (`suite.sets` is edited in place);
    {set name: why} for the results. Endpoints cannot be asked: they keep every set."""
    from skillgraft.evaluate.languages import model_languages, tokenizer_languages

    codes = sorted({s.language for s in suite.sets if s.language})
    if languages:
        spoken, how = {code.lower() for code in languages}, "given with --languages"
    else:
        spoken, hows = set(), []
        for label, spec in labelled:
            if isinstance(spec, (str, Path)):
                from skillgraft.evaluate.backends.endpoint import is_endpoint

                if is_endpoint(str(spec)):
                    spoken.update(codes)
                    continue
                from skillgraft.checkpoint.kinds import local_model

                found, how = model_languages(local_model(str(spec)).path, codes)
            else:
                backend = make_backend(spec, label=label)
                tokenizer = getattr(backend, "tokenizer", None)
                found, how = (tokenizer_languages(tokenizer, codes), "detected from its tokenizer") \
                    if tokenizer is not None else (codes, "not known")
            spoken.update(found)
            hows.append(how)
        how = " / ".join(sorted(set(hows))) or "not known"
    kept = [s for s in suite.sets if not s.language or s.language in spoken]
    if not kept:
        log(f"note: none of the suite's languages ({', '.join(codes)}) is the models' ({how}); scoring every set "
            "(--languages to choose)")
        return {}
    skipped = {s.name: f"language {s.language}: not the models' ({how}; --languages to score it)"
               for s in suite.sets if s not in kept}
    if skipped:
        log(f"note: skipping {', '.join(skipped)}: the models speak {', '.join(sorted(spoken & set(codes)))} "
            f"({how}); --languages {','.join(codes)} scores them all")
    suite.sets[:] = kept
    return skipped


def _run_chunk(model: Backend, label: str, probe_set, items, batch_size: int, ctx: MetricContext, partial: PartialLog) -> None:
    """Generate (and score choices) for a chunk of items, then record each finished item."""
    generation = model.applied(probe_set.generation)
    prompts = [as_messages(item.input, generation) for item in items]
    if all(m.name in NO_OUTPUT for m in probe_set.metrics):
        outputs: list[str | None] = [None] * len(items)   # nothing reads an answer: none generated
    else:
        outputs = model.generate(prompts, generation, batch_size=batch_size)
    logliks: list[list[float] | None] = [None] * len(items)
    if any(m.name == "choice_loglik" for m in probe_set.metrics):
        logliks = model.loglik(prompts, [item.choices for item in items], generation, batch_size)
    refs = [ctx.references[probe_set.name][item.id] for item in items] if probe_set.name in ctx.references else None
    kls: list[float | None] = [None] * len(items)
    if refs and any(m.name == "general_kl" for m in probe_set.metrics) and _same_prompts(model, prompts, refs):
        from skillgraft.evaluate.reference import kl_to

        kls = kl_to(model, refs, batch_size)
    for index, (item, output, scores) in enumerate(zip(items, outputs, logliks)):
        metrics: dict[str, Any] = {}
        details: dict[str, Any] = {}
        for spec in probe_set.metrics:
            numbers, extra = score_item(spec, item, output, probe_set=probe_set, ctx=ctx, logliks=scores,
                                        reference=refs[index] if refs else None, kl=kls[index])
            metrics.update(numbers)
            details.update(extra)
        partial.add({"model": label, "set": probe_set.name, "id": item.id, "prompt": item.input,
                     "output": output, "metrics": metrics, "details": details, "tags": item.tags})


def _same_prompts(model: Backend, prompts: list, refs: list) -> bool:
    """general_kl compares distributions on the reference's tokens: only meaningful when the
    candidate is a local model that encodes the prompts to the same ids (same tokenizer and
    chat template); elsewhere it is left empty rather than computed on mismatched tokens."""
    if not hasattr(model, "answer_logprobs"):
        return False
    return all(model.encode(p) == r.prompt_ids for p, r in zip(prompts[:4], refs[:4]))
