"""The `skillgraft` command line: one Click group; each verb is a thin call into a module.

Heavy imports (torch, transformers) happen inside the verbs, so `--help` and bad-usage
errors stay instant. Every failure the user can fix is a `UserError`: one `error:` line on
stderr and exit status 2, never a traceback; exit status 1 is left for bugs.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading

import click

from skillgraft import __version__
from skillgraft.clikit import (CONTEXT, Verbs, command, emit_json, force_option, json_option, quiet_option,
                               threads_option)
from skillgraft.errors import UserError

INTERRUPTED = 130   # exit status after Ctrl-C (128 + SIGINT)
# click ≥ 8.2 raises this (a UsageError) for a group called without a verb under standalone_mode=False
NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())
TERMINATED = 143    # exit status after SIGTERM (128 + 15)


def _offline(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:  # read by huggingface_hub and transformers when they are imported, later
        os.environ["HF_HUB_OFFLINE"] = "1"
    return value


@click.group(cls=Verbs, context_settings=CONTEXT, no_args_is_help=True)
@click.version_option(__version__, "-V", "--version", prog_name="skillgraft", message="%(prog)s %(version)s")
@click.option("--offline", is_flag=True, expose_value=False, is_eager=True, callback=_offline,
              help="Never touch the network: Hugging Face ids resolve from the local cache only "
                   "(the same as HF_HUB_OFFLINE=1).")
def cli() -> None:
    """Extract, graft and inject skills and knowledge into open LLMs.

    Models are named by folder, Hugging Face id (org/name[@revision], from the local cache or
    downloaded) or lab:NAME (the lab world's shipped models).
    """


@command("run")
@click.argument("config")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key; dotted for nested keys, digits index lists (vectors.0.base=PATH); the value "
                   "is YAML (repeatable).")
@click.option("-o", "--out", default=None, help="Output folder (overrides `output` / `output_dir`).")
@force_option
@click.option("--check", is_flag=True, help="Validate the file and print it resolved; run nothing.")
@quiet_option
@json_option
@threads_option
def run_command(config, overrides, out, force, check, quiet, as_json):
    """Run a recipe file: a graft recipe (kind: graft), a training config (kind: train) or a
    sweep (kind: sweep, as `skillgraft sweep run FILE -o OUT`).

    Relative paths in the file are relative to its folder; paths given with --set or -o are
    relative to the current directory.
    """
    from skillgraft.run import load_recipe_file, run_recipe_file, run_sweep_file

    recipe = load_recipe_file(config, list(overrides))
    if check:
        emit_json(recipe.model_dump(mode="json")) if as_json else print(recipe.model_dump_json(indent=2))
    elif recipe.kind == "sweep":
        run_sweep_file(config, list(overrides), out=out, as_json=as_json, quiet=quiet)
    else:
        run_recipe_file(recipe, out=out, force=force, quiet=quiet, as_json=as_json)


@command("verify")
@click.argument("path")
@json_option
def verify_command(path, as_json):
    """Recompute every file's sha256 against the folder's skillgraft.json; fail on changed,
    missing or unlisted weight files."""
    from skillgraft.checkpoint import verify

    report = verify(path)
    if as_json:
        emit_json(report)
    elif report["ok"]:
        print(f"ok: {report['files']} files match {path}/skillgraft.json", file=sys.stderr)
        for name in report["unlisted"]:
            print(f"  note: {name} is not in the manifest", file=sys.stderr)
    if not report["ok"]:
        problems = ([f"{n} (sha256 mismatch)" for n in report["mismatched"]]
                    + [f"{n} (missing)" for n in report["missing"]]
                    + [f"{n} (a weight file the manifest does not list)" for n in report["unlisted_weights"]])
        raise UserError(f"verify failed for {path}: {', '.join(problems)}")


def _register_verbs() -> None:
    """Attach every area's verbs, in the order a user meets them."""
    from skillgraft.convert import cli as convert_cli
    from skillgraft.data import cli as data_cli
    from skillgraft.evaluate import cli as evaluate_cli
    from skillgraft.lab import cli as lab_cli
    from skillgraft.report import cli as report_cli
    from skillgraft.sweep import cli as sweep_cli
    from skillgraft.train import cli as train_cli
    from skillgraft.vectors import cli as vectors_cli

    vectors_cli.register(cli)
    cli.add_command(verify_command)
    cli.add_command(run_command)
    evaluate_cli.register(cli)
    report_cli.register(cli)
    train_cli.register(cli)
    data_cli.register(cli)
    sweep_cli.register(cli)
    vectors_cli.register_vector(cli)
    convert_cli.register(cli)
    lab_cli.register(cli)


_register_verbs()


class Terminated(BaseException):
    """Raised by the SIGTERM handler. A BaseException, so no `except Exception` swallows it
    on the way out: every `finally` and context manager runs (temp folders are removed,
    worker processes stopped) and nothing half-written is left behind."""


def _terminated(signum, frame) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the group, map user errors to `error:` + exit 2."""
    args = sys.argv[1:] if argv is None else argv
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if in_main_thread else None
    try:
        return _run(args)
    finally:
        if in_main_thread and previous is not None:   # None: the old handler was not set from Python
            signal.signal(signal.SIGTERM, previous)
        if argv is None:
            # the process ends now: without this, the interpreter's last garbage collections walk
            # every object torch and transformers made (1.3-1.6 s on each model-loading command)
            gc.freeze()


def _run(args: list[str]) -> int:
    try:
        status = cli.main(args=args, prog_name="skillgraft", standalone_mode=False)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):
            print("error: interrupted", file=sys.stderr)
            return INTERRUPTED
        print("error: aborted", file=sys.stderr)
        return 2
    except NO_ARGS_IS_HELP as exc:  # `skillgraft`, `skillgraft data`: help, as asked for
        print(exc.ctx.get_help() if exc.ctx else cli.get_help(click.Context(cli, info_name="skillgraft")))
        return 0
    except click.UsageError as exc:
        path = exc.ctx.command_path if exc.ctx else ""
        hint = f" (see `{path} --help`)" if " " in path else ""
        message = exc.format_message() or "no command given (see `skillgraft --help`)"
        print(f"error: {message}{hint}", file=sys.stderr)
        return 2
    except click.ClickException as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Terminated:
        print("error: terminated (SIGTERM); nothing was published", file=sys.stderr)
        return TERMINATED
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
