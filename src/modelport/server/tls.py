"""TLS for both transports: the certificate settings, checked before anything binds.

``settings.tls_certfile`` and ``settings.tls_keyfile`` (both or neither) make the REST APIs (under
uvicorn) and the gRPC endpoint serve TLS only; ``settings.tls_client_ca`` also makes them require
a client certificate signed by one of its CAs (mutual TLS). :func:`server_tls` reads and checks
the files with errors that say what is wrong; :func:`uvicorn_options` turns them into uvicorn's
options, and the gRPC endpoint builds its credentials from the same PEM bytes.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelport.errors import InvalidSetting
from modelport.settings import Settings

_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_PRIVATE_KEY = re.compile(rb"-----BEGIN (?:RSA |EC |)PRIVATE KEY-----")
FLAGS = {
    "certfile": "--tls-certfile (MODELPORT_TLS_CERTFILE)",
    "keyfile": "--tls-keyfile (MODELPORT_TLS_KEYFILE)",
    "client_ca": "--tls-client-ca (MODELPORT_TLS_CLIENT_CA)",
}


@dataclass(frozen=True, slots=True)
class ServerTLS:
    """A server's checked TLS material: the files and their PEM bytes."""

    certfile: Path
    keyfile: Path
    client_ca: Path | None
    certificate_chain: bytes
    private_key: bytes
    client_ca_pem: bytes | None

    @property
    def description(self) -> str:
        return "TLS, client certificates required" if self.client_ca is not None else "TLS"


def server_tls(settings: Settings) -> ServerTLS | None:
    """The checked TLS files of ``settings``, None without TLS; :class:`InvalidSetting` saying
    which file is wrong and how (missing half, unreadable, not PEM, encrypted, key and certificate
    that do not match)."""
    certfile, keyfile, client_ca = settings.tls_certfile, settings.tls_keyfile, settings.tls_client_ca
    if certfile is None and keyfile is None:
        if client_ca is not None:
            raise InvalidSetting(
                f"{FLAGS['client_ca']} asks clients for certificates, which needs TLS: "
                f"also give {FLAGS['certfile']} and {FLAGS['keyfile']}"
            )
        return None
    if certfile is None or keyfile is None:
        given, missing = ("certfile", "keyfile") if keyfile is None else ("keyfile", "certfile")
        raise InvalidSetting(
            f"TLS needs the server's certificate and its private key: {FLAGS[given]} is set, "
            f"so also give {FLAGS[missing]}"
        )
    chain = _read(certfile, "certificate", "certfile")
    if _CERTIFICATE not in chain:
        raise InvalidSetting(
            f"{certfile} is not a PEM certificate ({_CERTIFICATE.decode()}): {FLAGS['certfile']} takes the "
            "server's certificate, followed by any intermediate CA certificates"
        )
    key = _read(keyfile, "private key", "keyfile")
    if b"ENCRYPTED" in key:
        raise InvalidSetting(
            f"{keyfile} is an encrypted private key, and the server cannot ask for its password: "
            f"decrypt it (openssl pkey -in {keyfile} -out server.key) and make it readable by the server's user only"
        )
    if not _PRIVATE_KEY.search(key):
        raise InvalidSetting(f"{keyfile} is not a PEM private key (-----BEGIN PRIVATE KEY-----)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile, password=_no_password)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise InvalidSetting(f"{keyfile} is not the private key of the certificate in {certfile}") from None
        raise InvalidSetting(f"{certfile} and {keyfile} cannot serve TLS: {exc.reason or exc}") from None
    ca_pem = None
    if client_ca is not None:
        ca_pem = _read(client_ca, "client CA bundle", "client_ca")
        try:
            context.load_verify_locations(cadata=ca_pem.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError):
            raise InvalidSetting(
                f"{client_ca} is not a PEM CA bundle: {FLAGS['client_ca']} takes the certificates "
                f"({_CERTIFICATE.decode()}) of the CAs that sign client certificates"
            ) from None
    return ServerTLS(certfile, keyfile, client_ca, chain, key, ca_pem)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's ``ssl_*`` options for ``settings`` (none without TLS), checked first."""
    tls = server_tls(settings)
    if tls is None:
        return {}
    options: dict[str, Any] = {"ssl_certfile": str(tls.certfile), "ssl_keyfile": str(tls.keyfile)}
    if tls.client_ca is not None:
        options |= {"ssl_ca_certs": str(tls.client_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return options


def _read(path: Path, what: str, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidSetting(f"cannot read the TLS {what} {path} ({FLAGS[flag]}): {exc.strerror}") from None


def _no_password() -> bytes:
    raise InvalidSetting("the TLS private key is encrypted; decrypt it first")  # never prompt on a terminal
