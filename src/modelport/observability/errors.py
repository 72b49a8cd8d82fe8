"""Error reports to Sentry (the ``sentry`` extra): faults while answering, and failed model loads.

:class:`ErrorReports` is made by the app when ``SENTRY_DSN`` is set (``settings.sentry_dsn``) and
started by its lifespan, so each worker process of ``serve --workers N`` has its own client, made
after the worker started (the SDK's sending thread does not survive a fork), and flushes it at
shutdown. It never calls ``sentry_sdk.init``: the client is the app's own (``sentry_sdk.Client``)
and events go through it with a scope of their own, so nothing is process-global, no integration
patches any library, and two apps in one process (tests) do not see each other's reports.

What is reported: an answer of 500 (admission's fault path, HTTP and gRPC ``INTERNAL`` alike:
an unhandled exception, or a model that failed to predict) with the exception and its cause,
tagged with the request id, protocol, model, version and trace id; and a version that failed to
load, tagged with its model and version.

What is never sent: request bodies, headers (only method and path, without the query string),
frame-local variables, breadcrumbs, user details (:func:`client_options`: in sentry-sdk 2.x
``send_default_pii`` stays off, the SDK's default, which keeps its own event scrubber on; 3.x
replaced those options with ``data_collection``, told to collect none of it); and :func:`scrub` (the
``before_send``) removes whatever a request part still holds and replaces API keys
(``mp_<id>_<secret>``), bearer tokens and JWTs in any text of the event with ``[Filtered]``.
"""

from __future__ import annotations

import inspect
import logging
import re
from typing import TYPE_CHECKING, Any

from modelport.errors import ModelportError
from modelport.types import Exchange

if TYPE_CHECKING:
    import sentry_sdk

logger = logging.getLogger("modelport")

FILTERED = "[Filtered]"
FLUSH_SECONDS = 2.0  # at shutdown, how long queued reports may take to leave
_SECRETS = re.compile(
    r"mp_[A-Za-z0-9]+_[A-Za-z0-9_\-]+"  # modelport API keys
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=\-]+"  # bearer credentials
    r"|eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"  # JWTs
)
_REQUEST_KEPT = ("method", "url")  # what a request part may hold: no data, query, cookies, headers, env


class ErrorReports:
    """Sends reports to the project of ``dsn`` once :meth:`start` made the client (see the module
    docstring); before that, and after :meth:`close`, reports are dropped."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._client: sentry_sdk.Client | None = None

    def start(self) -> None:
        """Make the client (a clear error when the extra is not installed)."""
        try:
            import sentry_sdk
        except ImportError:
            raise ModelportError(
                "SENTRY_DSN is set but the sentry extra is not installed: pip install 'modelport[sentry]' "
                "(or unset SENTRY_DSN)"
            ) from None
        self._client = sentry_sdk.Client(
            self.dsn,
            before_send=scrub,
            **client_options(sentry_sdk.VERSION),
            max_request_body_size="never",
            default_integrations=False,  # no logging hook, no patched libraries: only what is captured here
            auto_enabling_integrations=False,
            integrations=[],
        )
        logger.info("reporting errors to Sentry (%s)", _host(self.dsn))

    @property
    def client(self) -> sentry_sdk.Client | None:
        """The app's own client while it runs (None before :meth:`start` and after :meth:`close`)."""
        return self._client

    def close(self) -> None:
        """Send what is queued (at most ``FLUSH_SECONDS``) and stop the client."""
        client, self._client = self._client, None
        if client is not None:
            client.close(timeout=FLUSH_SECONDS)

    def request_failed(
        self, error: BaseException, exchange: Exchange, *, method: str, path: str, trace_id: str | None = None
    ) -> None:
        """A request answered 500 because of ``error``."""
        tags = {"request_id": exchange.request_id, "protocol": exchange.protocol}
        if exchange.model:
            tags["model"] = exchange.model
        if exchange.version is not None:
            tags["version"] = str(exchange.version)
        if trace_id is not None:
            tags["trace_id"] = trace_id
        self._capture(error, tags, request={"method": method, "url": path.partition("?")[0]})

    def load_failed(self, model: str, version: int, error: BaseException) -> None:
        """Version ``version`` of ``model`` failed to load or warm up."""
        self._capture(error, {"model": model, "version": str(version), "phase": "load"})

    def _capture(self, error: BaseException, tags: dict[str, str], request: dict[str, object] | None = None) -> None:
        client = self._client
        if client is None:
            return
        try:
            import sentry_sdk
            from sentry_sdk.utils import event_from_exception

            # A scope of our own whose client is the app's: sentry-sdk 3.x builds the event from the
            # options of the current client (2.x takes them as an argument), never a global one.
            with sentry_sdk.new_scope() as scope:
                scope.set_client(client)
                for key, value in tags.items():
                    scope.set_tag(key, value)
                options: dict[str, Any] = {}
                if "client_options" in inspect.signature(event_from_exception).parameters:
                    options["client_options"] = client.options  # sentry-sdk 2.x
                event, hint = event_from_exception(error, **options)
                if request is not None:
                    event["request"] = request
                client.capture_event(event, hint, scope)
        except Exception:  # a report must never fail a request or a load
            logger.warning("could not report an error to Sentry", exc_info=True)


def client_options(version: str) -> dict[str, Any]:
    """What the client of sentry-sdk ``version`` is told not to collect: frame variables, and in 3.x
    (where ``data_collection`` replaced ``include_local_variables`` and ``send_default_pii``)
    user details and bodies as well. 2.x keeps PII off by leaving ``send_default_pii`` unset, its
    default, which also keeps the SDK's own event scrubber on."""
    major = int(version.split(".")[0])
    if major >= 3:
        return {"data_collection": {"user_info": False, "stack_frame_variables": False, "http_bodies": []}}
    return {"include_local_variables": False}


def scrub(event: Any, hint: Any) -> Any:
    """``before_send``: the request part cut to method and path, frame variables and breadcrumbs
    dropped, and every API key, bearer token or JWT in any string replaced with ``[Filtered]``."""
    request = event.get("request")
    if isinstance(request, dict):
        kept = {key: request[key] for key in _REQUEST_KEPT if key in request}
        if isinstance(kept.get("url"), str):
            kept["url"] = kept["url"].partition("?")[0]
        event["request"] = kept
    event.pop("breadcrumbs", None)
    for exception in (event.get("exception") or {}).get("values") or ():
        for frame in (exception.get("stacktrace") or {}).get("frames") or ():
            frame.pop("vars", None)
    return _redacted(event)


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return _SECRETS.sub(FILTERED, value)
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item) for item in value]
    return value


def _host(dsn: str) -> str:
    """The DSN without its key, for the log."""
    return dsn.rpartition("@")[2]
