"""What every packager makes (:class:`Packaged`, in a fresh directory of the work folder) and how
it words what went wrong: the trust hint and an exception's reason for a message or a note."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelport.types import Signature

TRUST_HINT = "Register it only if you trust its source, with --trust-pickle (CLI) or trust_pickle=True (Python)"


@dataclass(frozen=True)
class Packaged:
    directory: Path  # a directory with the artifact's files, inside workdir; the caller stores it
    runtime: str  # kind that serves it
    framework: str  # "sklearn" | "onnx" | "python" | "xgboost" | "lightgbm" | "torch" | "tensorflow" | a plugin's
    signature: Signature
    environment: dict[str, str]
    notes: tuple[str, ...]  # human-readable facts for `modelport show`
    trusted_code: bool  # the artifact executes code when loaded (pickle, custom Python)
    # the sample as the signature's inputs (what a request would carry), where the packager has it
    sample: Mapping[str, np.ndarray] | None = None


def new_directory(workdir: Path) -> Path:
    """A new, empty artifact directory inside ``workdir`` (made if missing)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="artifact-", dir=workdir))


def reason(exc: BaseException) -> str:
    """An exception's type and the first line of its message, for a message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(":. ")


def whole_reason(exc: BaseException) -> str:
    """An exception's type and its whole message on one line (:func:`reason` keeps the first line):
    for a note that says why a conversion failed, whose cause is often past the first line."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}".rstrip(":. ")
