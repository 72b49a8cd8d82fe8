"""Who may call what: the policy by path (:func:`requirement`), the check (:class:`Gate`), used by
admission on every transport, and the authenticator's life with the app (:func:`authentication`).

Policy, when authentication is enabled (see :class:`modelport.auth.authenticator.Authenticator`):

- health (``/v2/health/live``, ``/v2/health/ready``, ``/ping``) is open;
- ``/v2/models/<m>/...`` and ``/v1/models/<m>...`` need ``may_infer(m)``; SageMaker
  ``/invocations`` names no model, so it needs the unrestricted ``infer`` scope;
- management (everything under ``/v2/repository/``, and the multi-model routes under ``/models``
  outside SageMaker mode) exists only with ``enable_management`` (404 otherwise, before any
  credential check) and always needs ``manage``, even if authentication were not enabled; in
  SageMaker mode the platform calls ``/models`` itself, so there it needs ``manage`` only when
  authentication is enabled;
- ``/metrics`` needs scope ``metrics`` (or ``manage``), so a Prometheus can scrape with a key
  that cannot call a model; it is absent (404) with ``MODELPORT_METRICS=0``;
- everything else (``/v2``, ``/docs``, ``/openapi.json``) needs any valid credentials.

401 (with ``WWW-Authenticate: Bearer``) when credentials are missing or bad, 403 when they are
good but lack the scope. Without authentication enabled everything except disabled management
is open; the startup rules (:func:`modelport.auth.authenticator.check_exposure`) allow that only on loopback
or with ``insecure_open``. Admission puts the principal in ``scope["state"]["principal"]``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, TypeVar

from starlette.types import Scope

from modelport.auth.authenticator import CREDENTIALS_HELP, Authenticator, build_authenticator, check_exposure
from modelport.auth.oidc import jwks_fetcher
from modelport.auth.principal import INFER, MANAGE, METRICS, Principal
from modelport.errors import Forbidden, ModelNotReady, ModelportError, NotFound, Unauthenticated
from modelport.serving.tasks import in_background
from modelport.settings import Settings

if TYPE_CHECKING:
    from modelport.registry.registry import Registry

log = logging.getLogger("modelport")

OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/ping"})
METRICS_PATH = "/metrics"
_MODEL_PATH = re.compile(r"/v[12]/models/([^/:]+)")
_SAGEMAKER_INVOKE = re.compile(r"/models/([^/]+)/invoke")


class NotLoopback(Forbidden):
    """A request on a non-loopback address while no authentication is configured."""


class Access(Enum):
    OPEN = "open"
    ANY = "any valid credentials"
    INFER = "infer"
    INFER_ANY = "infer (every model)"
    MANAGE = "manage"
    METRICS = "metrics"
    ABSENT = "absent"


@dataclass(frozen=True, slots=True)
class Need:
    access: Access
    model: str | None = None
    always: bool = False  # credentials needed even while authentication is not enabled


def requirement(path: str, settings: Settings) -> Need:
    """What a request to ``path`` needs."""
    if path in OPEN_PATHS:
        return Need(Access.OPEN)
    if path == METRICS_PATH:
        return Need(Access.METRICS) if settings.metrics else Need(Access.ABSENT)
    if path == "/v2/repository" or path.startswith("/v2/repository/"):
        return Need(Access.MANAGE, always=True) if settings.enable_management else Need(Access.ABSENT)
    if match := _MODEL_PATH.match(path):
        return Need(Access.INFER, match.group(1))
    if path == "/invocations":
        return Need(Access.INFER_ANY)
    if path == "/models" or path.startswith("/models/"):
        if match := _SAGEMAKER_INVOKE.fullmatch(path):
            return Need(Access.INFER, match.group(1))
        if settings.sagemaker:  # the SageMaker platform itself loads and unloads; it sends no credentials
            return Need(Access.MANAGE)
        return Need(Access.MANAGE, always=True) if settings.enable_management else Need(Access.ABSENT)
    return Need(Access.ANY)


def check(principal: Principal, need: Need) -> None:
    """:class:`Forbidden` unless ``principal`` may do what ``need`` says."""
    if need.access is Access.INFER and need.model is not None and not principal.may_infer(need.model):
        raise Forbidden(
            f"{principal.subject} may not use model {need.model!r}: "
            f"that needs scope {INFER!r} or '{INFER}:{need.model}' (it has {_listed(principal)})"
        )
    if need.access is Access.INFER_ANY and not principal.may_infer_any():
        raise Forbidden(
            f"{principal.subject} may not call this endpoint: it needs scope {INFER!r} ({_listed(principal)})"
        )
    if need.access is Access.METRICS and not principal.may_scrape():
        raise Forbidden(
            f"{principal.subject} may not read /metrics: that needs scope {METRICS!r} or {MANAGE!r} "
            f"({_listed(principal)})"
        )
    if need.access is Access.MANAGE and not principal.may_manage():
        raise Forbidden(
            f"{principal.subject} may not call management endpoints: they need scope {MANAGE!r} ({_listed(principal)})"
        )


def _listed(principal: Principal) -> str:
    return "scopes " + ", ".join(sorted(principal.scopes)) if principal.scopes else "no scopes"


class Gate:
    """Who may call what: :func:`requirement` per path (cached) and the credentials check.

    HTTP admission and the gRPC interceptor share one gate, so both apply the same policy.
    """

    CACHE_PATHS = 4096  # distinct paths (and local addresses) remembered; a cache starts over past that

    def __init__(self, settings: Settings, authenticator: Callable[[], Authenticator | None]) -> None:
        self.settings = settings
        self.authenticator = authenticator
        self._needs = _Memo(lambda path: requirement(path, settings), self.CACHE_PATHS)
        self._loopbacks = _Memo(is_loopback, self.CACHE_PATHS)

    def need(self, path: str) -> Need:
        return self._needs[path]

    def admit(
        self, need: Need, authorization: str | None, api_key: str | None, server: Address | None
    ) -> Principal | None:
        """The caller's principal (None while authentication is off); raises 401/403/503 errors.

        ``server`` is the local address the request arrived on (ASGI ``scope["server"]``): while
        authentication is off, only loopback addresses are served unless ``insecure_open`` says
        otherwise, whatever address the server was told to bind (a bare ``uvicorn --host
        0.0.0.0`` included).
        """
        authenticator = self.authenticator()
        if authenticator is None:
            raise ModelNotReady("the server is starting: models are still loading; retry shortly")
        if not authenticator.enabled and not need.always:
            if server is not None and not self.settings.insecure_open and not self._loopbacks[server[0]]:
                raise NotLoopback(
                    f"this server has no authentication configured, so it answers only requests that arrive on "
                    f"a loopback address (this one arrived on {server[0]}); create an API key (modelport keys "
                    "create --scope infer) or configure OAuth2 tokens, or set MODELPORT_INSECURE_OPEN=1 to serve "
                    "openly"
                )
            return None
        principal = authenticator.authenticate(authorization, api_key)
        if principal is None:
            raise Unauthenticated(f"this endpoint needs credentials: {CREDENTIALS_HELP}")
        check(principal, need)
        return principal


Address = tuple[str, int | None]
_V = TypeVar("_V")


class _Memo(dict[str, _V]):
    """``make(key)`` remembered per key (a hit is a plain dict lookup); starts over at ``size`` keys."""

    def __init__(self, make: Callable[[str], _V], size: int) -> None:
        super().__init__()
        self.make = make
        self.size = size

    def __missing__(self, key: str) -> _V:
        if len(self) >= self.size:
            self.clear()
        value = self[key] = self.make(key)
        return value


def is_loopback(host: str) -> bool:
    """Whether a local address (as ``scope["server"]`` gives it) can be reached from this machine only.

    ``::ffff:127.0.0.1`` counts as the IPv4 loopback it maps. Servers give IP addresses for TCP
    sockets; anything else (a Unix socket path, a test client's host name) is not a network
    address and counts as local.
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return True
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


def refused(method: str, path: str, client: str, request_id: str, exc: ModelportError) -> None:
    """Log a refused request, HTTP or gRPC (never its credentials)."""
    log.info("refused %s %s from %s (request %s): %s", method, path, client, request_id, exc.message)


def absent(scope: Scope) -> ModelportError:
    if scope["path"] == METRICS_PATH:
        return NotFound("no such endpoint: metrics are off on this server (MODELPORT_METRICS=0)")
    return NotFound(
        f"no such endpoint: {scope['method']} {scope['path']}; management endpoints are off "
        "(start the server with --enable-management and a key with scope 'manage')"
    )


@asynccontextmanager
async def authentication(
    settings: Settings, registry: Registry | None, authenticator: Authenticator | None = None
) -> AsyncIterator[Authenticator]:
    """For an app's lifespan: the authenticator (built unless given), the startup rules checked,
    and a task that reloads API keys every ``poll_seconds`` while the app runs."""
    if authenticator is None:
        fetch = jwks_fetcher(settings)  # OIDC discovery's HTTPS client, when configured
        authenticator = await asyncio.to_thread(build_authenticator, settings, registry, fetch)
    check_exposure(settings, authenticator)
    if authenticator.enabled:
        log.info("authentication on: %d active API key(s)", authenticator.active_keys)
    elif settings.sagemaker and not settings.loopback:
        log.info(
            "no authentication on %s (a model directory served as SageMaker does): whatever is in front (SageMaker, "
            "an IAM-authorized API Gateway route) decides who calls; give MODELPORT_API_KEYS_FILE otherwise",
            settings.host,
        )
    elif not settings.loopback:
        log.warning(
            "serving %s WITHOUT authentication (insecure open): anyone who can reach it can call it", settings.host
        )
    async with in_background(_refresh_forever(authenticator, settings.poll_seconds), "modelport-key-refresh"):
        yield authenticator


async def _refresh_forever(authenticator: Authenticator, seconds: float) -> None:
    failing = False
    while True:
        await asyncio.sleep(max(seconds, 0.05))
        try:
            await asyncio.to_thread(authenticator.refresh)
        except Exception as exc:  # a database hiccup: keep the last snapshot, say so once
            if not failing:
                log.warning("cannot reload API keys, keeping the last ones: %s: %s", type(exc).__name__, exc)
            failing = True
        else:
            if failing:
                log.info("API keys reloaded again")
            failing = False
