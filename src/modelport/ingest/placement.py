"""Where and how precisely a packaged model is to run, checked when it is registered.

A device (``cuda``, ``cuda:N``) the serving runtime cannot use on any machine is refused; one this
machine lacks is worth a warning, since the server that will serve it may have it (and
``serve --device cpu`` runs it on the CPU anywhere). A reduced precision (``fp16``, ``bf16``) is
measured: the stored model runs on the sample in that precision and in fp32, and the largest
deviation (absolute, and relative to the output's largest magnitude) goes in the version's notes;
past ``tolerance`` (relative, default :data:`PRECISION_TOLERANCE`) the version is refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelport.errors import InvalidModel, InvalidSetting, ModelportError
from modelport.ingest.packaged import Packaged
from modelport.runtimes import KINDS

# bf16 keeps 8 bits of mantissa: a few matrix products in it typically move an output by well under
# 1 % of its largest magnitude; past 2 % the model is not the one that was trained.
PRECISION_TOLERANCE = 0.02


def device_problem(packaged: Packaged, device: str) -> str | None:
    """Why this machine cannot run ``packaged`` on ``device`` (None when it can: it was loaded
    there). InvalidModel when the runtime that serves it runs on no such device anywhere."""
    kind = device.split(":")[0]
    if kind == "cpu":
        return None
    cls = KINDS[packaged.runtime]
    if kind not in cls.capabilities.devices:
        raise InvalidModel(
            f"the {packaged.runtime} runtime that serves this model runs on {', '.join(cls.capabilities.devices)} "
            f"only, so it cannot run on {device}; register it without a device"
        )
    try:
        _loaded(packaged, device, "fp32").unload()
    except InvalidSetting as exc:
        return exc.message
    return None


@dataclass(frozen=True)
class Deviation:
    """How far a reduced precision moves the outputs from fp32 on the sample."""

    precision: str
    rows: int
    device: str
    absolute: float  # the largest |Δ| over float outputs
    relative: float  # the largest |Δ| / max |fp32 output|, per output, over float outputs
    output: str  # the float output with the largest relative deviation
    changed: tuple[tuple[str, int, int], ...]  # non-float outputs: (name, values that differ, values)

    def note(self, tolerance: float) -> str:
        changed = "".join(f"; {n} of {total} values of {name!r} differ" for name, n, total in self.changed if n)
        return (
            f"{self.precision} deviates from fp32 by at most {self.absolute:.2g} abs / {self.relative:.2g} rel "
            f"(of the output's largest magnitude) on the {self.rows} sample rows, on {self.device}{changed}; "
            f"tolerance {tolerance:g}"
        )


def measure_precision(
    packaged: Packaged, precision: str, inputs: Mapping[str, np.ndarray], *, device: str = "cpu"
) -> Deviation:
    """Run the stored model on ``inputs`` (the sample, as requests carry it) in ``precision`` and in
    fp32 on ``device``. InvalidModel when its runtime does not offer ``precision``."""
    cls = KINDS[packaged.runtime]
    if cls.capabilities.devices == ("cpu",):
        raise InvalidModel(
            f"precision {precision}: the {packaged.runtime} runtime that serves this model computes in fp32 only; "
            "register it without a precision (runtimes that offer fp16 and bf16: torch)"
        )
    answers = []
    for each in ("fp32", precision):
        try:
            runtime = _loaded(packaged, device, each)
        except InvalidSetting as exc:
            raise InvalidModel(f"precision {precision}: {exc.message}") from None
        try:
            answers.append(runtime.predict(inputs))
        except ModelportError as exc:
            raise InvalidModel(f"the model fails on the sample in {each}: {exc.message}") from exc
        except Exception as exc:  # a runtime raises what its library raises
            raise InvalidModel(f"the model fails on the sample in {each}: {type(exc).__name__}: {exc}") from exc
        finally:
            runtime.unload()
    full, reduced = answers
    absolute, relative, worst, changed = 0.0, 0.0, "", []
    for name, want in full.items():
        got = np.asarray(reduced[name])
        if want.dtype.kind != "f":
            changed.append((name, int(np.sum(got != want)), int(want.size)))
            continue
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        largest = float(np.max(diff, initial=0.0, where=~np.isnan(diff)))
        scale = float(np.max(np.abs(want), initial=0.0, where=np.isfinite(want)))
        share = largest / scale if scale > 0 else (0.0 if largest == 0 else math.inf)
        if int(np.sum(np.isnan(got) != np.isnan(want))):
            share = math.inf  # NaN where fp32 has a number (an overflow in fp16)
        absolute = max(absolute, largest)
        if not worst or share > relative:
            relative, worst = share, name
    rows = len(next(iter(inputs.values())))
    return Deviation(precision, rows, device, absolute, relative, worst, tuple(changed))


def check_tolerance(deviation: Deviation, tolerance: float) -> None:
    """InvalidModel saying the figures when the relative deviation is past ``tolerance``."""
    if deviation.relative <= tolerance:
        return
    raise InvalidModel(
        f"in {deviation.precision} the model deviates from fp32 by up to {deviation.absolute:.3g} on the sample "
        f"(output {deviation.output!r}: {deviation.relative:.3g} of its largest magnitude), past the precision "
        f"tolerance {tolerance:g}; register it in fp32, or accept the deviation with --precision-tolerance "
        f"{_above(deviation.relative)} (precision_tolerance= in Python)"
    )


def tolerance_of(value: object) -> float:
    """A precision tolerance: a finite number >= 0 (a share of the output's largest magnitude)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidModel(
            f"the precision tolerance is a number >= 0 (a share of the output's largest magnitude), got {value!r}"
        )
    return float(value)


def _above(share: float) -> str:
    """A round tolerance just above ``share``, for a message."""
    if not math.isfinite(share):
        return "inf"
    return f"{math.ceil(share * 1000) / 1000:g}"


def _loaded(packaged: Packaged, device: str, precision: str) -> Any:
    """The packaged model loaded by its runtime on ``device`` in ``precision``, as a server would
    (no keywords for the CPU in full precision); torch's process-wide thread count left as it is."""
    runtime = KINDS[packaged.runtime]()
    keywords: dict[str, Any] = {}
    if device != "cpu" or precision != "fp32":
        keywords = {"device": device, "precision": precision}
    if packaged.runtime == "torch":
        import torch

        keywords["threads"] = torch.get_num_threads()
    try:
        runtime.load(packaged.directory, packaged.signature, **keywords)
    except (InvalidSetting, InvalidModel):
        raise
    except ModelportError as exc:
        raise InvalidModel(f"the {packaged.runtime} runtime cannot load the stored model: {exc.message}") from exc
    return runtime
