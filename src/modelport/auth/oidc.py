"""OpenID Connect discovery: an issuer's token-signing keys (JWKS), fetched over HTTPS.

The core (:class:`modelport.auth.tokens.RemoteKeys`) caches the keys and decides when to fetch them;
this module only fetches. :class:`Discovery` reads ``<issuer>/.well-known/openid-configuration``,
whose ``issuer`` must be the configured issuer exactly and whose ``jwks_uri`` must be https, then
the JWKS document at ``jwks_uri``. The discovery document is read again only when fetching the
JWKS fails (the JWKS may have moved). Every answer must be a 200 with a JSON object of at most
1 MiB, within the timeout; redirects are not followed. Server certificates are verified against
``settings.jwt_ca_bundle`` when given, else the system's CAs (``SSL_CERT_FILE`` is honoured).
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from modelport.errors import InvalidSetting, ModelportError
from modelport.settings import Settings

WELL_KNOWN = "/.well-known/openid-configuration"
TIMEOUT_SECONDS = 5.0  # per fetch step; an unknown kid's refetch waits this long at most
MAX_DOCUMENT_BYTES = 1024 * 1024


class Discovery:
    """Fetches the JWKS of ``issuer`` (an https URL) by OpenID Connect discovery; callable."""

    def __init__(self, issuer: str, *, ca_bundle: Path | None = None, timeout: float = TIMEOUT_SECONDS) -> None:
        parts = urlsplit(issuer)
        if parts.scheme != "https" or not parts.hostname:
            raise InvalidSetting(
                f"OIDC discovery needs an https issuer URL, e.g. https://login.example.com/, not {issuer!r} "
                "(--jwt-issuer, MODELPORT_JWT_ISSUER)"
            )
        self.issuer = issuer
        self.url = issuer.rstrip("/") + WELL_KNOWN
        self._verify = _ssl_context(ca_bundle)
        self._timeout = timeout
        self._jwks_uri: str | None = None

    def __call__(self) -> dict[str, Any]:
        """The issuer's JWKS document; :class:`ModelportError` saying what failed."""
        jwks_uri = self._jwks_uri or self._discover()
        try:
            document = self._get(jwks_uri, "the JWKS")
        except ModelportError:
            self._jwks_uri = None
            raise
        self._jwks_uri = jwks_uri
        return document

    def _discover(self) -> str:
        document = self._get(self.url, "the OpenID Connect discovery document")
        if document.get("issuer") != self.issuer:
            raise ModelportError(
                f"the discovery document at {self.url} is for issuer {str(document.get('issuer'))[:200]!r}, "
                f"not {self.issuer!r}: set --jwt-issuer to exactly the issuer your tokens carry in 'iss'"
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or urlsplit(jwks_uri).scheme != "https":
            raise ModelportError(f"the discovery document at {self.url} names no https 'jwks_uri'")
        return jwks_uri

    def _get(self, url: str, what: str) -> dict[str, Any]:
        body = bytearray()
        try:
            with (
                httpx.Client(verify=self._verify, timeout=self._timeout) as client,
                client.stream("GET", url, headers={"accept": "application/json"}) as response,
            ):
                if response.status_code != 200:
                    raise ModelportError(f"{what} at {url} answered HTTP {response.status_code}, not 200")
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise ModelportError(f"{what} at {url} is larger than {MAX_DOCUMENT_BYTES} bytes")
        except httpx.HTTPError as exc:
            raise ModelportError(f"cannot fetch {what} from {url}: {_reason(exc)}") from None
        try:
            document = json.loads(body)
        except ValueError:
            raise ModelportError(f"{what} at {url} is not JSON") from None
        if not isinstance(document, dict):
            raise ModelportError(f"{what} at {url} is not a JSON object")
        return document


def jwks_fetcher(settings: Settings) -> Discovery | None:
    """The JWKS fetch function ``settings`` ask for (``jwt_discovery``), or None."""
    if not settings.jwt_discovery or not settings.jwt_issuer:
        return None  # without an issuer, the token verifier says what to set
    return Discovery(settings.jwt_issuer, ca_bundle=settings.jwt_ca_bundle)


def _ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    if ca_bundle is None:
        return httpx.create_ssl_context()
    try:
        return ssl.create_default_context(cafile=str(ca_bundle))
    except ssl.SSLError:  # before OSError, its base class
        raise InvalidSetting(
            f"{ca_bundle} is not a PEM CA bundle (MODELPORT_JWT_CA_BUNDLE): give the certificates of the CAs "
            "that sign the identity provider's HTTPS certificate"
        ) from None
    except OSError as exc:
        raise InvalidSetting(
            f"cannot read the CA bundle {ca_bundle} (MODELPORT_JWT_CA_BUNDLE): {exc.strerror or exc}"
        ) from None


def _reason(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text:
        text += "; if the identity provider's certificate comes from a private CA, set MODELPORT_JWT_CA_BUNDLE"
    return text
