"""The `skillgraft` command line: one Typer app, each verb a thin call into a module.

Heavy imports (torch, transformers) happen inside the verbs, so `--help` and bad-usage
errors stay instant. Every failure the user can fix is a `UserError`: one `error:` line on
stderr and exit status 2, never a traceback; exit status 1 is left for bugs.
"""

from __future__ import annotations

import signal
import sys
import threading

import click
import typer

from skillgraft.errors import UserError

app = typer.Typer(
    name="skillgraft",
    help="Extract, graft and inject skills and knowledge into open LLMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_verbs() -> None:
    """Attach every area's verbs; each `register` defines commands with lazy imports."""
    from skillgraft import cli_graft

    cli_graft.register(app)
    for module_name in (
        "skillgraft.evaluate.cli",
        "skillgraft.train.cli",
        "skillgraft.lab.cli",
        "skillgraft.convert.cli",
    ):
        try:
            module = __import__(module_name, fromlist=["register"])
        except ModuleNotFoundError as exc:  # area not built yet
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        module.register(app)


_register_verbs()


def command_group() -> click.Group:
    """The Click group behind the Typer app, with the Click-native `graft` verb added."""
    from skillgraft.cli_graft import graft_command

    group = typer.main.get_command(app)
    group.add_command(graft_command)
    return group


def _exception_classes(name: str) -> tuple[type, ...]:
    """`name` (Exit, Abort, UsageError, ClickException) from real Click and from the Click
    copy and exceptions newer Typer releases ship, so both kinds of command map alike."""
    modules = [click.exceptions]
    for module_name in ("typer._click.exceptions", "typer.exceptions"):
        try:
            modules.append(__import__(module_name, fromlist=["_"]))
        except ImportError:
            pass
    return tuple({getattr(m, name) for m in modules if isinstance(getattr(m, name, None), type)})


_EXIT = _exception_classes("Exit")
_ABORT = _exception_classes("Abort")
_USAGE = _exception_classes("UsageError")
_CLICK = _exception_classes("ClickException")


INTERRUPTED = 130   # exit status after Ctrl-C (128 + SIGINT)
TERMINATED = 143    # exit status after SIGTERM (128 + 15)


class Terminated(BaseException):
    """Raised by the SIGTERM handler. A BaseException, so no `except Exception` swallows it
    on the way out: every `finally` and context manager runs (temp folders are removed,
    worker processes stopped) and nothing half-written is left behind."""


def _terminated(signum, frame) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, map user errors to `error:` + exit 2."""
    args = sys.argv[1:] if argv is None else argv
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if in_main_thread else None
    try:
        return _run(args)
    finally:
        if in_main_thread and previous is not None:   # None: the old handler was not set from Python
            signal.signal(signal.SIGTERM, previous)


def _run(args: list[str]) -> int:
    try:
        status = command_group().main(args=args, prog_name="skillgraft", standalone_mode=False)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except _EXIT as exc:
        return exc.exit_code
    except _ABORT:
        print("error: aborted", file=sys.stderr)
        return 2
    except _USAGE as exc:
        command = exc.ctx.command_path.split(" ", 1)[-1] if exc.ctx else ""
        hint = f" (see `skillgraft {command} --help`)" if exc.ctx and " " in exc.ctx.command_path else ""
        message = exc.format_message() or "no command given (see `skillgraft --help`)"
        print(f"error: {message}{hint}", file=sys.stderr)
        return 2
    except _CLICK as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Terminated:
        print("error: terminated (SIGTERM); nothing was published", file=sys.stderr)
        return TERMINATED
    if status == INTERRUPTED:   # Typer turns Ctrl-C into Exit(130), which Click returns
        print("error: interrupted", file=sys.stderr)
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
