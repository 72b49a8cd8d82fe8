"""How a converted or stored model is checked against the original on the registration sample:
one comparison (:func:`disagreement`, one tolerance rule), the rows checked alone as requests
come, and the shape every output must have to be batched."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from modelport.errors import InvalidModel
from modelport.types import datatype_of

TOLERANCE = 1e-5  # atol and rtol of scikit-learn, XGBoost and LightGBM models against their ONNX or stored form
ROW_CHECKS = 50  # sample rows each checked alone (the first ones), besides the whole sample


def disagreement(
    got: Mapping[str, np.ndarray],
    want: Mapping[str, np.ndarray],
    *,
    atol: float = TOLERANCE,
    rtol: float = TOLERANCE,
) -> tuple[str, float]:
    """What differs between two models' outputs (empty when nothing does), and the largest float
    difference. They agree when every output of ``want`` is in ``got`` with the same shape and
    datatype, floats within ``|got - want| <= atol + rtol·|want|`` with NaN in the same places on
    both sides (an infinity equals only itself), and the rest equal. NaN on one side only differs."""
    problems, max_diff = [], 0.0
    for name, expected in want.items():
        actual = np.asarray(got[name])
        if actual.shape != expected.shape or datatype_of(actual.dtype) != datatype_of(expected.dtype):
            problems.append(
                f"{name}: {datatype_of(actual.dtype)} {list(actual.shape)} instead of "
                f"{datatype_of(expected.dtype)} {list(expected.shape)}"
            )
        elif expected.dtype.kind == "f":
            diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
            largest = float(np.max(diff, initial=0.0, where=~np.isnan(diff)))  # NaN on both sides is agreement
            max_diff = max(max_diff, largest)
            missing = int(np.sum(np.isnan(actual) != np.isnan(expected)))
            if missing:
                problems.append(f"{name}: NaN in {missing} of {expected.size} places where the other has a number")
            elif not np.allclose(actual, expected, atol=atol, rtol=rtol, equal_nan=True):
                problems.append(f"{name}: max |Δ| = {largest:.2g}")
        elif not np.array_equal(actual, expected):
            problems.append(f"{name}: {int(np.sum(actual != expected))} of {expected.size} values differ")
    return "; ".join(problems), max_diff


def rows_alone(
    arrays: Mapping[str, np.ndarray], limit: int = ROW_CHECKS
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Each of the first ``limit`` rows of ``arrays`` as a batch of its own, with its index."""
    rows = len(next(iter(arrays.values())))
    for i in range(min(rows, limit)):
        yield i, {name: arr[i : i + 1] for name, arr in arrays.items()}


def row_of(outputs: Mapping[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    """Row ``i`` of every output, as a batch of one."""
    return {name: arr[i : i + 1] for name, arr in outputs.items()}


def checked_rows(rows: int) -> str:
    """How many sample rows were checked alone, for a note."""
    return f"each of the {rows} rows alone" if rows <= ROW_CHECKS else f"each of the first {ROW_CHECKS} rows alone"


def check_row_outputs(outputs: Mapping[str, np.ndarray], rows: int, whose: str) -> None:
    """InvalidModel unless every output has one row per input row (so requests can be batched)
    and a datatype the protocols carry; ``whose``: e.g. "the module's", for the message."""
    for name, arr in outputs.items():
        if arr.ndim == 0 or arr.shape[0] != rows:
            raise InvalidModel(
                f"{whose} output {name!r} has shape {list(arr.shape)}; give one row per input row "
                f"({rows} for the sample), so requests can be batched"
            )
        try:
            datatype_of(arr.dtype)
        except ValueError as exc:
            raise InvalidModel(f"{whose} output {name!r}: {exc}") from exc
