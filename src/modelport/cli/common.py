"""What every ``modelport`` command shares: the consoles, the error handler, the registry of the
standard settings, reading data, logging, and the state the root options set for one run.

Errors print as one line; exit code 2 for usage errors (bad arguments, bad references, bad
settings), 1 for failures, 130 for Ctrl-C. A traceback is shown only with ``modelport --debug``.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, get_type_hints

import numpy as np
import orjson
import typer
from rich.console import Console
from rich.markup import escape

from modelport.errors import InvalidReference, InvalidScope, InvalidSetting, ModelportError
from modelport.settings import Settings

if TYPE_CHECKING:
    from modelport.registry.registry import Registry

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)

P = ParamSpec("P")
R = TypeVar("R")
Handled = Callable[[Callable[..., Any]], Callable[..., Any]]  # what ``handled`` is, for modules given it


class UsageError(ModelportError):
    """A command-line mistake: exit code 2."""


@dataclass(frozen=True, slots=True)
class CliState:
    """What the root options set for one run (``ctx.obj`` of the root context)."""

    debug: bool = False  # --debug: errors keep their tracebacks


def fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


_CONTEXT = "modelport_context"  # the parameter through which typer hands a handled command its context


def handled(func: Callable[P, R]) -> Callable[P, R]:
    """Turn every error into one clear line and the right exit code (tracebacks with --debug).

    The command's context comes in through one more keyword parameter that typer fills and the
    command never sees: ``--debug`` is read from the root context's ``CliState`` of this run (none,
    in an app without the root callback: debug off), never from a process-wide flag."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        ctx: Any = kwargs.pop(_CONTEXT, None)  # typer's click Context (typer.Context's base), or None
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except Exception as exc:
            state = ctx.find_root().obj if ctx is not None else None
            if isinstance(state, CliState) and state.debug:
                raise
            if isinstance(exc, InvalidReference | InvalidScope | InvalidSetting | UsageError):
                raise fail(str(exc), 2) from None
            if isinstance(exc, ModelportError):
                raise fail(str(exc), 1) from None
            detail = str(exc).strip().splitlines()
            what = f"{type(exc).__name__}: {detail[0]}" if detail else type(exc).__name__
            raise fail(f"unexpected {what} (run modelport --debug ... for the traceback)", 1) from None

    signature = inspect.signature(func, eval_str=True)
    context = inspect.Parameter(_CONTEXT, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=typer.Context)
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), context]
    )
    wrapper.__annotations__ = {**get_type_hints(func, include_extras=True), _CONTEXT: typer.Context}
    return wrapper


def open_registry(settings: Settings | None = None, *, create: bool = False) -> Registry:
    """The registry of ``settings`` (default: the environment's). Only registering (and keys create)
    makes one: every other command finds none where there is none, and says where it looked (exit 1)."""
    from modelport.registry.registry import Registry

    return Registry.open(Settings.from_env() if settings is None else settings, create=create)


def when(moment: Any) -> str:
    """A stored time as the tables show it."""
    return str(moment.strftime("%Y-%m-%d %H:%M:%S UTC")) if moment is not None else ""


@contextmanager
def opened_registry(*, create: bool = False) -> Iterator[Any]:
    """``open_registry()``, closed when the block ends."""
    registry = open_registry(create=create)
    try:
        yield registry
    finally:
        registry.close()


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a file; False for text too long to be a path (inline JSON)."""
    try:
        return path.is_file()
    except OSError:
        return False


def read_data(source: str) -> Any:
    """Read inline JSON, or a .json / .csv / .npy file, as data for a sample or a prediction."""
    path = Path(source)
    text = source.strip()
    if text[:1] in "[{" and not _is_file(path):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"--input is not valid JSON: {exc}") from None
    if not _is_file(path):
        raise UsageError(f"{source!r} is neither a file nor inline JSON")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        import pandas as pd

        try:
            frame = pd.read_csv(path)
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            why = _first_line(exc)
            raise UsageError(f"cannot read {path} as CSV (a header row, then one row per line): {why}") from None
        if frame.empty:
            raise UsageError(f"{path} has a header but no rows; add at least one row of values")
        return frame
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            why = _first_line(exc)
            raise UsageError(f"cannot read {path} as a NumPy .npy array (pickled ones are refused): {why}") from None
    if suffix == ".json":
        try:
            return orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"{path} is not valid JSON: {exc}") from None
    raise UsageError(f"cannot read {path}: use a .json, .csv or .npy file")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def configure_cli_logging(debug: bool) -> None:
    """The ``modelport`` logger's warnings (and, with --debug, everything) as plain lines on stderr."""
    import logging

    class CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
        """Writes to the ``sys.stderr`` of the moment (an in-process run, e.g. a test's, swaps it)."""

        def __init__(self) -> None:
            logging.Handler.__init__(self)

        @property
        def stream(self) -> Any:
            return sys.stderr

        @stream.setter
        def stream(self, value: Any) -> None:
            pass

    logger = logging.getLogger("modelport")
    if not logger.handlers:
        handler = CurrentStderr()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
