"""Where a packaged model is to run, checked when it is registered.

A device (``cuda``, ``cuda:N``) the serving runtime cannot use on any machine is refused; one this
machine lacks is worth a warning, since the server that will serve it may have it (and
``serve --device cpu`` runs it on the CPU anywhere).
"""

from __future__ import annotations

from typing import Any

from modelport.errors import InvalidModel, InvalidSetting, ModelportError
from modelport.packaging.ingest import Packaged
from modelport.runtimes import KINDS


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
