"""What every edgeloop command line shares, the device's and the server's: one `error:` line, `--json`, progress
only for a person, and ultralytics' chatter kept off stdout. Device-safe: typer and rich only.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

try:  # typer 0.29 carries its own copy of click, whose exceptions are not the `click` package's
    from typer import _click as click
except ImportError:  # pragma: no cover - older typer, on click itself
    import click  # type: ignore[no-redef]

# soft_wrap: a line longer than the terminal is left for the terminal to wrap; otherwise rich breaks it at 80
# columns wherever output is not a terminal (a log, a pipe, a test), and one error becomes three lines.
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class EdgeloopGroup(TyperGroup):
    """The root command: click's own usage errors speak like ours (one `error:` line, exit 2, not a boxed
    `Error`), and a boolean flag shows no `<bool>` in `--help` (its name says it all)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _hide_flag_metavars(self)  # typer builds every subcommand before the root: the whole tree is here

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _NoArgsIsHelp as exc:  # `edgeloop review`: help is the answer, as before
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if getattr(exc, "ctx", None) else ""
            err.print(f"[bold red]error:[/] {escape(exc.format_message())}{where}")
            sys.exit(exc.exit_code)
        except typer.Abort:
            err.print("[bold red]error:[/] aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)  # non-standalone click returns typer.Exit's code


def edgeloop_app(name: str, help: str) -> typer.Typer:
    """A root command line with the settings both of ours need: help when called bare, no shell-completion
    commands, tracebacks left plain (typer's boxed ones hide the `error:` line), and EdgeloopGroup's errors."""
    return typer.Typer(name=name, help=help, no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False, cls=EdgeloopGroup)


_NoArgsIsHelp = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2; older ones print help themselves


def _hide_flag_metavars(command: click.Command) -> None:
    for param in command.params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    help_option = command.get_help_option(click.Context(command))  # made once and cached by click
    if help_option is not None:
        help_option.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _hide_flag_metavars(sub)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]



def emit(result: object, as_json: bool, human: object | None = None) -> None:
    """`--json`: the result as one JSON line on stdout; otherwise `human` (or the result as lines) for people."""
    if as_json:
        print(json.dumps(result, default=str))
    elif human is None:
        console.print(as_lines(result), markup=False, highlight=False)
    else:
        console.print(human)


def as_lines(result: object) -> str:
    """A result nobody wrote a sentence for: one `key: value` line per field (nested values as JSON), never
    a Python dict's repr."""
    if not isinstance(result, dict):
        return str(result)
    return "\n".join(f"{str(k).replace('_', ' ')}: "
                     f"{v if v is None or isinstance(v, (str, int, float)) else json.dumps(v, default=str)}"
                     for k, v in result.items())


def show_progress(as_json: bool) -> bool:
    """Progress bars only for a person watching: on a pipe or in a log a finished transient bar leaves a blank
    line behind, and `--json` output is for programs."""
    return not as_json and err.is_terminal


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: MESSAGE` as one line on stderr; `raise fail(...)` ends the command with `code`."""
    err.print(f"[bold red]error:[/] {escape(message)}")  # escaped: a message may quote [brackets]
    return typer.Exit(code)


@contextlib.contextmanager
def failing_on(*errors: type[Exception]) -> Iterator[None]:
    """The errors a command expects (its domain's refusals: bad input, a missing model) end it as `fail` does,
    with their message on one `error:` line and exit 2; anything else is a bug and keeps its traceback."""
    try:
        yield
    except errors as exc:
        raise fail(str(exc)) from exc


@contextlib.contextmanager
def ultralytics_to_stderr() -> Iterator[None]:
    """ultralytics logs and draws progress on stdout; here both go to stderr, so stdout carries
    only our result (`--json` output stays parseable). Everything is put back afterwards."""
    with _ultralytics_to(sys.stderr):
        yield


@contextlib.contextmanager
def ultralytics_quiet(log: Path | None, *, verbose: bool = False) -> Iterator[None]:
    """ultralytics' chatter (banners, AutoUpdate notices, export summaries naming temporary folders) kept
    off the terminal: appended to `log`, or dropped when None. `verbose`: on stderr instead, as it comes.
    stderr itself is left alone: our own warnings (an unsigned publish, say) must still reach the person."""
    if verbose:
        with ultralytics_to_stderr():
            yield
        return
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    with open(log or os.devnull, "a") as sink, _ultralytics_to(sink):
        yield


@contextlib.contextmanager
def _ultralytics_to(stream: TextIO) -> Iterator[None]:
    """ultralytics' logger and whatever prints to stdout meanwhile go to `stream`; put back afterwards."""
    import logging

    from ultralytics.utils import LOGGER

    handlers = [h for h in LOGGER.handlers if isinstance(h, logging.StreamHandler)]
    saved = [h.stream for h in handlers]
    for handler in handlers:
        handler.stream = stream  # not setStream(): it flushes the old stream, which may be closed
    try:
        with contextlib.redirect_stdout(stream):
            yield
    finally:
        for handler, stream_before in zip(handlers, saved, strict=True):
            handler.stream = stream_before
