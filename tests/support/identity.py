"""A real OpenID provider for tests: HTTPS on 127.0.0.1 (a port the kernel picks), serving the
discovery document and the JWKS of its signers, counting the requests it answers."""

from __future__ import annotations

import json
import ssl
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.pki import Pki
from tests.support.tokens import Signer

DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/keys"
SYMMETRIC = {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}


class IdentityProvider:
    """Serves ``signers``' public keys; ``requests`` counts answered paths. Change ``signers`` to
    rotate keys, set ``broken`` to answer a JWKS of one symmetric key (never usable to verify
    tokens), :meth:`stop` to go down."""

    def __init__(self, pki: Pki) -> None:
        self.signers: list[Signer] = []
        self.requests: Counter[str] = Counter()
        self.broken = False
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.requests[self.path] += 1
                if self.path == DISCOVERY_PATH:
                    body: Any = {"issuer": provider.issuer, "jwks_uri": provider.base + JWKS_PATH}
                elif self.path == JWKS_PATH:
                    keys = [s.jwk() for s in provider.signers] if not provider.broken else [SYMMETRIC]
                    body = {"keys": keys}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki.server_cert, pki.server_key)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        port = self._server.server_address[1]
        self.base = f"https://127.0.0.1:{port}"
        self.issuer = self.base + "/"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()
        self._running = True

    @property
    def jwks_fetches(self) -> int:
        return self.requests[JWKS_PATH]

    def stop(self) -> None:
        """Go down: connections to the port are refused from now on."""
        if self._running:
            self._running = False
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
