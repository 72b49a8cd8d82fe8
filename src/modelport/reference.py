"""Model references: ``iris``, ``iris@3``, ``iris@production``, ``iris@latest``.

One parser for the CLI, the Python API and the server's URL segments, with one error message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelport.errors import InvalidReference

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
ALIAS_PATTERN = r"[a-z][a-z0-9-]{0,62}"
LATEST = "latest"

_NAME_RE = re.compile(NAME_PATTERN)
_ALIAS_RE = re.compile(ALIAS_PATTERN)
_VERSION_RE = re.compile(r"[1-9][0-9]{0,8}")

REFERENCE_HELP = (
    "a model reference is NAME, NAME@VERSION, NAME@ALIAS or NAME@latest "
    "(e.g. iris, iris@3, iris@production); names use letters, digits, '_', '.', '-'; "
    "aliases match [a-z][a-z0-9-]*"
)


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed reference. Exactly one of ``version`` and ``alias`` is set, or neither (latest)."""

    name: str
    version: int | None = None
    alias: str | None = None

    @property
    def is_latest(self) -> bool:
        return self.version is None and self.alias is None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def _bad(text: str) -> InvalidReference:
    return InvalidReference(f"invalid model reference {text!r}: {REFERENCE_HELP}")


def parse_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise _bad(name)
    return name


def parse_selector(name: str, selector: str) -> Reference:
    """Parse what follows the ``@`` (or a URL's version segment) for model ``name``."""
    if _VERSION_RE.fullmatch(selector):
        return Reference(name, version=int(selector))
    if selector == LATEST:
        return Reference(name)
    if _ALIAS_RE.fullmatch(selector):
        return Reference(name, alias=selector)
    raise _bad(f"{name}@{selector}")


def parse_reference(text: str) -> Reference:
    """Parse ``NAME[@VERSION|@ALIAS]``; raise :class:`InvalidReference` with the grammar."""
    name, sep, selector = text.strip().partition("@")
    if not _NAME_RE.fullmatch(name) or (sep and not selector):
        raise _bad(text)
    if not sep:
        return Reference(name)
    try:
        return parse_selector(name, selector)
    except InvalidReference:
        raise _bad(text) from None


def validate_alias(alias: str) -> str:
    """Check a new alias name; ``latest`` and version numbers are reserved."""
    if alias == LATEST or not _ALIAS_RE.fullmatch(alias):
        raise InvalidReference(f"invalid alias {alias!r}: aliases match [a-z][a-z0-9-]* and 'latest' is reserved")
    return alias
