"""modelport: take a trained model to a fast, versioned, safe production API.

import modelport
modelport.register(model, name="iris", sample_input=X.head(), alias="production")
model = modelport.load("iris@production")
model.predict(X.head())
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelport.version import __version__

__all__ = ["__version__", "load", "register"]

if TYPE_CHECKING:
    from modelport.api import load, register


def __getattr__(name: str) -> Any:
    # The API pulls in the registry and runtimes; import them on first use, not with the package.
    if name in ("load", "register"):
        from modelport import api

        return getattr(api, name)
    raise AttributeError(f"module 'modelport' has no attribute {name!r}")
