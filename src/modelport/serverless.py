"""The AWS Lambda entry point: ``modelport.serverless.handler``, the app behind API Gateway.

An image built with ``modelport build --target lambda`` runs ``python -m awslambdaric
modelport.serverless.handler``; a zip package names ``modelport.serverless.handler`` as its
handler. Each execution environment (one Lambda "instance") builds the app once, on its first
event, and keeps it for every later event:

- **What it serves** is chosen as ``modelport serve`` chooses: ``MODELPORT_MODELS`` (or
  ``MODELPORT_SERVE_ALIAS`` / ``MODELPORT_VERSION_POLICY``) serve those models from the registry
  ``MODELPORT_DATABASE_URL`` and ``MODELPORT_ARTIFACTS`` name; with none of them it serves the model
  (or bundle) baked into ``MODELPORT_SAGEMAKER_MODEL_DIR`` (default ``/opt/ml/model``), as a baked
  image does, with ``/ping`` and ``/invocations`` beside V2 and TF Serving.
- **Where it writes**: Lambda's filesystem is read-only except ``/tmp``, so ``MODELPORT_HOME``
  defaults to ``/tmp/modelport`` (payload capture and packaging scratch live under it; the
  multi-worker metrics directory is never used: one process per environment).
- **Who may call**: API Gateway makes the function reachable from outside, so the server treats it
  as a non-loopback bind (``MODELPORT_HOST`` defaults to ``0.0.0.0``): it refuses to start without
  API keys (``MODELPORT_API_KEYS_FILE``) or OAuth2 tokens (``MODELPORT_JWT_*``) unless
  ``MODELPORT_INSECURE_OPEN=1`` says that something in front (an IAM-authorized route, or nothing
  by choice) decides.
- **Start-up runs once.** The app's lifespan (authenticator, model loading and warm-up) runs at
  the cold start through mangum's own lifespan cycle, entered once and never left: mangum's
  ``lifespan="auto"`` would run start-up and shut-down around every event. Requests then go
  through ``Mangum(app, lifespan="off")``, which turns API Gateway REST (v1) and HTTP API (v2)
  events into ASGI requests (bodies with ``isBase64Encoded`` decoded first; ``Content-Encoding:
  gzip`` is the app's own business) and answers JSON, CSV and other text as text, anything else
  (V2 binary tensors) base64-encoded.
- **Background work under the freeze.** Lambda freezes the process between events. The app's
  background tasks (API key reloads, the registry watcher, metrics) are asyncio tasks on the event
  loop made here, which runs only while an event is handled: they sleep through the freeze and
  catch up on the next event. Threads (payload capture's writer, shadow predictions) are frozen with
  the process and resume; what they have not written when Lambda ends the environment is lost,
  which is why capture on Lambda is best left off (``/tmp`` is lost then anyway).

The app of an execution environment is a module-level cache (:func:`_environment`), the one
process-wide state in modelport: Lambda imports the handler module once per environment and then
calls a plain function per event, with nowhere else to keep what the cold start built. Everything
else is built by :class:`LambdaApp` from settings read once, as ``build_app`` does for a server.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelport.errors import InvalidSetting, ModelportError
from modelport.settings import ENVIRONMENT, Settings

LAMBDA_HOME = Path("/tmp/modelport")  # Lambda's only writable path is /tmp
# Answered as text, not base64: mangum's defaults (text/*, application/json, ...) and any +json type.
TEXT_TYPES = (
    "text/",
    "application/json",
    "+json",
    "application/javascript",
    "application/xml",
    "application/vnd.oai.openapi",
)


def lambda_settings(env: Mapping[str, str] | None = None) -> Settings:
    """The settings of the handler: ``Settings.from_env`` with Lambda's defaults where a variable is unset
    (``MODELPORT_HOME=/tmp/modelport``, ``MODELPORT_HOST=0.0.0.0``); the model directory's mode
    (``sagemaker``) unless models, an alias or a policy are named."""
    env = os.environ if env is None else env
    defaults: dict[str, Any] = {}
    if ENVIRONMENT["home"][0] not in env:
        defaults["home"] = LAMBDA_HOME
    if ENVIRONMENT["host"][0] not in env:
        defaults["host"] = "0.0.0.0"  # reachable through API Gateway: the startup rules want credentials
    settings = Settings.from_env(env, **defaults)
    if settings.models or settings.serve_alias or settings.version_policy:
        return settings
    if settings.sagemaker_multi_model:
        raise InvalidSetting(
            "a multi-model endpoint (MODELPORT_SAGEMAKER_MULTI_MODEL) is SageMaker's; on Lambda serve the models "
            "baked into the image, or name registry models with MODELPORT_MODELS"
        )
    if not settings.sagemaker_model_dir.is_dir():
        raise InvalidSetting(
            "no models to serve: name registry models with MODELPORT_MODELS (or MODELPORT_SERVE_ALIAS / "
            f"MODELPORT_VERSION_POLICY), or bake a model into {settings.sagemaker_model_dir} "
            "(MODELPORT_SAGEMAKER_MODEL_DIR; modelport build --target lambda does)"
        )
    return settings.with_(sagemaker=True)


class LambdaApp:
    """The app of one execution environment: its event loop, its lifespan (started here, once) and the
    mangum adapter that turns each API Gateway event into a request and the answer into a response."""

    def __init__(self, settings: Settings) -> None:
        try:
            from mangum import Mangum
            from mangum.exceptions import LifespanFailure
            from mangum.protocols import LifespanCycle
        except ImportError as exc:
            raise ModelportError(
                f"the Lambda handler needs the aws extra ({exc.name} is not installed): pip install 'modelport[aws]'"
            ) from None
        from modelport.server.app import build_app

        self.settings = settings
        app = build_app(settings)
        # One loop for the environment's life: mangum runs each event on the current loop, and the
        # lifespan's tasks live on it between events.
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self._lifespan = LifespanCycle(app, "on")
        try:
            self._lifespan.__enter__()  # start-up: models loaded and warmed here, at the cold start
        except LifespanFailure as exc:
            self._close_loop()
            reason = str(exc).removeprefix("Lifespan startup failure.").strip() or "the app failed to start"
            raise ModelportError(reason.removeprefix("cannot start: ")) from None
        except BaseException:
            self._close_loop()
            raise
        self._adapter = Mangum(app, lifespan="off", text_mime_types=list(TEXT_TYPES))

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        asyncio.set_event_loop(self.loop)  # whoever ran in between (a test) may have set another
        response: dict[str, Any] = self._adapter(event, context)
        return response

    def close(self) -> None:
        """Shut the app down (its lifespan's end) and close the loop. Lambda never calls this: it freezes and
        then ends the process; tests and the cold-start benchmark do."""
        asyncio.set_event_loop(self.loop)
        try:
            self._lifespan.__exit__(None, None, None)
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        try:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()
        asyncio.set_event_loop(None)


@functools.cache
def _environment() -> LambdaApp:
    """The execution environment's app, built on the first event (see the module's docstring for why
    this is module-level). A failed start is not cached: the next event tries again.

    In Lambda (``AWS_LAMBDA_FUNCTION_NAME`` is set in every execution environment) the ``modelport``
    logger gets its own handler on stdout, which Lambda sends to CloudWatch, at ``MODELPORT_LOG_LEVEL``
    (the runtime's root logger shows warnings only); elsewhere logging is left to the caller.
    """
    settings = lambda_settings()
    if "AWS_LAMBDA_FUNCTION_NAME" in os.environ:
        from modelport.server.logs import configure_modelport

        configure_modelport(settings.log_level, settings.log_format)
    return LambdaApp(settings)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda handler: an API Gateway REST (v1) or HTTP API (v2) event in, its response out.

    The first event of an execution environment builds the app and loads the models (the cold start);
    a start-up that fails raises, so Lambda reports the error and the next event tries again.
    """
    return _environment()(event, context)


def close() -> None:
    """Shut down the app :func:`handler` built, if any, so the next event starts afresh (for tests and
    benchmarks in one process; Lambda itself ends the process instead)."""
    if _environment.cache_info().currsize:
        app = _environment()
        _environment.cache_clear()
        app.close()
