"""The conformance check every runtime passes, built-in or a user's.

``check_runtime`` raises ``AssertionError`` naming the first broken promise. What a runtime
may skip it declares in its capabilities, never by name here. Runtimes need not accept a
0-row batch (protocols reject empty batches before they reach a runtime), so the sample must
have at least one row; give two or more so splitting rows is exercised.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from modelport.errors import ModelNotReady
from modelport.runtimes.base import Capabilities, Runtime
from modelport.types import Signature, datatype_of

TOLERANCE = 1e-5
THREADS = 4


def check_runtime(runtime: Runtime, artifact: Path, signature: Signature, sample: Mapping[str, np.ndarray]) -> None:
    """Load ``artifact`` into ``runtime`` and check every promise of the seam on ``sample``."""
    _check_declared(runtime)
    rows = _rows(sample)
    runtime.load(artifact, signature, threads=1)
    try:
        first = runtime.predict(sample)
        _check_outputs(first, signature, rows)
        _check_same(runtime.predict(sample), first, "a second predict on the same input (determinism)", exact=True)
        if runtime.capabilities.batch_rows:
            _check_row_by_row(runtime, sample, first, rows)
        if runtime.capabilities.thread_safe:
            _check_threads(runtime, sample, first)
    finally:
        runtime.unload()
    try:
        runtime.predict(sample)
    except ModelNotReady:
        pass
    else:
        raise AssertionError(f"{runtime.kind}: predict after unload() must raise ModelNotReady")
    runtime.load(artifact, signature, threads=1)
    try:
        _check_same(runtime.predict(sample), first, "predict after unload() and load() again", exact=True)
    finally:
        runtime.unload()


def _check_declared(runtime: Runtime) -> None:
    if not isinstance(runtime, Runtime):
        raise AssertionError(f"{type(runtime).__name__} lacks load/predict/unload or kind/capabilities")
    if not isinstance(runtime.kind, str) or not runtime.kind:
        raise AssertionError(f"{type(runtime).__name__}.kind must be a non-empty string")
    if not isinstance(runtime.capabilities, Capabilities):
        raise AssertionError(f"{runtime.kind}: capabilities must be a modelport.runtimes.base.Capabilities")


def _rows(sample: Mapping[str, np.ndarray]) -> int:
    if not sample:
        raise ValueError("the conformance sample needs at least one input")
    counts = {int(np.asarray(arr).shape[0]) if np.ndim(arr) else 0 for arr in sample.values()}
    if len(counts) != 1 or min(counts) < 1:
        raise ValueError(f"every sample input needs the same number of rows, at least 1 (got {sorted(counts)})")
    return counts.pop()


def _check_outputs(outputs: Mapping[str, object], signature: Signature, rows: int) -> None:
    expected = [spec.name for spec in signature.outputs]
    if sorted(outputs) != sorted(expected):
        raise AssertionError(f"outputs are {sorted(outputs)}, the signature declares {sorted(expected)}")
    for spec in signature.outputs:
        arr = outputs[spec.name]
        if type(arr) is not np.ndarray:
            raise AssertionError(f"output {spec.name!r} is a {type(arr).__name__}, not a plain numpy.ndarray")
        if arr.dtype.kind == "O" and arr.size and not isinstance(arr.flat[0], str):
            raise AssertionError(f"output {spec.name!r} holds {type(arr.flat[0]).__name__} objects, not strings")
        got = datatype_of(arr.dtype)
        if got != spec.datatype:
            raise AssertionError(f"output {spec.name!r} has datatype {got}, the signature declares {spec.datatype}")
        want = (rows, *spec.shape[1:])
        ok = len(arr.shape) == len(want) and all(w in (-1, g) for w, g in zip(want, arr.shape, strict=True))
        if not ok:
            raise AssertionError(f"output {spec.name!r} has shape {list(arr.shape)}, expected {list(want)}")


def _check_same(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray], what: str, *, exact: bool) -> None:
    if sorted(got) != sorted(want):
        raise AssertionError(f"{what}: outputs {sorted(got)} differ from {sorted(want)}")
    for name, expected in want.items():
        actual = np.asarray(got[name])
        if actual.shape != expected.shape:
            raise AssertionError(f"{what}: output {name!r} has shape {actual.shape}, expected {expected.shape}")
        if expected.dtype.kind in "fc" and not exact:
            if not np.allclose(actual, expected, rtol=TOLERANCE, atol=TOLERANCE, equal_nan=True):
                diff = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
                raise AssertionError(f"{what}: output {name!r} differs by up to {diff:.3g}")
        elif not np.array_equal(actual, expected, equal_nan=expected.dtype.kind in "fc"):
            raise AssertionError(f"{what}: output {name!r} differs")


def _check_row_by_row(
    runtime: Runtime, sample: Mapping[str, np.ndarray], whole: Mapping[str, np.ndarray], rows: int
) -> None:
    parts = [runtime.predict({name: arr[i : i + 1] for name, arr in sample.items()}) for i in range(rows)]
    joined = {name: np.concatenate([part[name] for part in parts]) for name in whole}
    _check_same(joined, whole, "predicting rows one by one vs. together (batch_rows)", exact=False)


def _check_threads(runtime: Runtime, sample: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> None:
    results: list[Mapping[str, np.ndarray]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(5):
                results.append(runtime.predict(sample))
        except BaseException as exc:  # reported below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise AssertionError(f"predict from {THREADS} threads at once raised {errors[0]!r} (thread_safe)")
    for got in results:
        _check_same(got, want, f"predict from {THREADS} threads at once (thread_safe)", exact=True)
