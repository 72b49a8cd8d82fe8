"""The ASGI entry point for running modelport under an ASGI server of your own:
``uvicorn --factory modelport.app:create_app`` (settings from ``MODELPORT_*``), or
``build_app(settings)`` from Python. The app itself lives in :mod:`modelport.server.app`;
``modelport serve`` is the way to run it with the connection limits of :mod:`modelport.server.http`.
"""

from __future__ import annotations

from modelport.server.app import build_app, create_app

__all__ = ["build_app", "create_app"]
