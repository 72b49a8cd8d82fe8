"""modelport: take a trained model to a fast, versioned, safe production API."""

from __future__ import annotations

__version__ = "0.1.0"
