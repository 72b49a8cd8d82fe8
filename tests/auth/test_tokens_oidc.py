"""OAuth2 tokens with keys found by OpenID Connect discovery, against a real HTTPS identity provider
the test starts (its own CA): key rotation, the refetch rate limit, an issuer that goes down, and
the verified-token cache. Cache and rate limit run on a clock the test moves."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelport.auth.authenticator import build_authenticator
from modelport.auth.oidc import Discovery, jwks_fetcher
from modelport.auth.tokens import LEEWAY_SECONDS, RemoteKeys, TokenCache, TokenVerifier
from modelport.errors import InvalidSetting, ModelportError, Unauthenticated
from modelport.server.app import build_app
from modelport.serving.manager import ModelManager
from modelport.settings import Settings
from tests.support.identity import DISCOVERY_PATH, IdentityProvider
from tests.support.pki import Pki, make_pki
from tests.support.serving import DirectorySource, client_for, fake_version
from tests.support.tokens import AUDIENCE, Signer

REFETCH = 30.0
MAX_AGE = 3600.0


class Clock:
    """Seconds that move only when the test says so (starting at the real time, as tokens do)."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def key_a() -> Signer:
    return Signer.rsa("key-a")


@pytest.fixture(scope="module")
def key_b() -> Signer:
    return Signer.ec("key-b")


@pytest.fixture
def idp(pki: Pki, key_a: Signer) -> Iterator[IdentityProvider]:
    provider = IdentityProvider(pki)
    provider.signers = [key_a]
    yield provider
    provider.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def verifier_for(idp: IdentityProvider, pki: Pki, clock: Clock, cache: TokenCache | None = None) -> TokenVerifier:
    keys = RemoteKeys(
        Discovery(idp.issuer, ca_bundle=pki.ca),
        source=f"the JWKS of {idp.issuer}",
        max_age=MAX_AGE,
        min_interval=REFETCH,
        clock=clock,
    )
    keys.load()
    return TokenVerifier(keys, issuer=idp.issuer, audience=AUDIENCE, cache=cache, clock=clock)


def token(signer: Signer, idp: IdentityProvider, **claims: object) -> str:
    """A token from ``idp``, valid for a day unless ``claims`` say otherwise (the tests' clock moves
    up to a few hours ahead)."""
    return signer.token(issuer=idp.issuer, **{"expires_in": 86_400, **claims})  # type: ignore[arg-type]


def test_server_settings_discover_the_issuers_keys_over_https(
    idp: IdentityProvider, pki: Pki, key_a: Signer, settings: Settings
) -> None:
    settings = settings.with_(jwt_discovery=True, jwt_issuer=idp.issuer, jwt_audience=AUDIENCE, jwt_ca_bundle=pki.ca)
    authenticator = build_authenticator(settings, None, jwks_fetcher(settings))
    assert authenticator.enabled
    principal = authenticator.authenticate(f"Bearer {token(key_a, idp, scope='infer:iris')}", None)
    assert principal is not None
    assert (principal.subject, principal.scopes) == ("token:client-42", frozenset({"infer:iris"}))
    assert (idp.requests[DISCOVERY_PATH], idp.jwks_fetches) == (1, 1)
    authenticator.refresh()  # the server's poll: keys younger than MODELPORT_JWT_JWKS_MAX_AGE stay
    assert idp.jwks_fetches == 1
    stale = settings.with_(jwt_jwks_max_age=0.0, jwt_jwks_refetch_seconds=0.0)
    authenticator = build_authenticator(stale, None, jwks_fetcher(stale))
    fetched = idp.jwks_fetches
    authenticator.refresh()
    assert idp.jwks_fetches == fetched + 1  # keys past their maximum age are fetched again
    assert idp.requests[DISCOVERY_PATH] == 2  # the discovery document is read once per server


async def test_the_app_verifies_discovered_tokens_on_its_endpoints(
    idp: IdentityProvider, pki: Pki, key_a: Signer, tmp_path: Path
) -> None:
    settings = Settings(
        home=tmp_path / "home", jwt_discovery=True, jwt_issuer=idp.issuer, jwt_audience=AUDIENCE, jwt_ca_bundle=pki.ca
    )
    manager = ModelManager(DirectorySource([fake_version(tmp_path)]))
    await manager.load(["iris"])
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.9, 3.0, 5.1, 1.8]}]}
    try:
        async with client_for(build_app(settings, manager=manager)) as client:
            assert (await client.post("/v2/models/iris/infer", json=body)).status_code == 401
            headers = {"Authorization": f"Bearer {token(key_a, idp, scope='infer')}"}
            response = await client.post("/v2/models/iris/infer", json=body, headers=headers)
            assert response.status_code == 200, response.text
            assert {o["name"]: o["data"] for o in response.json()["outputs"]}["label"] == ["virginica"]
            foreign = {"Authorization": f"Bearer {Signer.rsa('key-a').token(issuer=idp.issuer)}"}
            refused = await client.post("/v2/models/iris/infer", json=body, headers=foreign)
            assert refused.status_code == 401
            assert "Signature verification failed" in refused.json()["error"]
    finally:
        manager.close()


def test_a_rotated_key_verifies_after_one_refetch(
    idp: IdentityProvider, pki: Pki, clock: Clock, key_a: Signer, key_b: Signer
) -> None:
    verifier = verifier_for(idp, pki, clock)
    signed_by_a = token(key_a, idp)
    assert verifier.verify(signed_by_a).subject == "token:client-42"
    assert verifier.verify(signed_by_a).subject == "token:client-42"  # from the cache
    idp.signers = [key_b]  # the issuer rotates: A is retired, B signs from now on
    clock.advance(REFETCH)
    assert verifier.verify(token(key_b, idp, subject="after-rotation")).subject == "token:after-rotation"
    assert idp.jwks_fetches == 2
    for retired in (signed_by_a, token(key_a, idp, subject="retired")):  # cached or not, A's tokens are done
        with pytest.raises(Unauthenticated, match=r"'key-a' is not among the keys of the JWKS of https://127\.0\.0\.1"):
            verifier.verify(retired)
    assert idp.jwks_fetches == 2, "the retired key's refetch waits for the rate limit"


def test_tokens_with_unknown_key_ids_refetch_at_most_once_per_interval(
    idp: IdentityProvider, pki: Pki, clock: Clock, key_a: Signer
) -> None:
    verifier = verifier_for(idp, pki, clock)
    assert idp.jwks_fetches == 1

    def burst() -> None:
        for _ in range(25):
            forged = Signer(key_a.private, "RS256", f"made-up-{uuid.uuid4().hex}")
            with pytest.raises(Unauthenticated, match="is not among the keys"):
                verifier.verify(token(forged, idp))

    burst()  # within the interval of the first fetch: none
    assert idp.jwks_fetches == 1
    clock.advance(REFETCH)
    burst()
    assert idp.jwks_fetches == 2
    clock.advance(REFETCH / 2)
    burst()
    assert idp.jwks_fetches == 2
    clock.advance(REFETCH / 2)
    burst()
    assert idp.jwks_fetches == 3
    assert verifier.verify(token(key_a, idp)).subject == "token:client-42"


def test_an_issuer_that_goes_down_or_breaks_leaves_the_last_good_keys(
    idp: IdentityProvider, pki: Pki, clock: Clock, key_a: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    verifier = verifier_for(idp, pki, clock)
    caplog.set_level(logging.WARNING, logger="modelport.auth.tokens")
    idp.broken = True  # answers a JWKS without a usable key
    clock.advance(MAX_AGE)
    verifier.refresh()
    assert idp.jwks_fetches == 2
    assert "keeping the 1 last good key(s)" in caplog.text
    assert "holds no RS256 or ES256 key" in caplog.text
    assert verifier.verify(token(key_a, idp, subject="while-broken")).subject == "token:while-broken"
    idp.stop()
    caplog.clear()
    clock.advance(REFETCH)
    verifier.refresh()  # the keys are still past their age: retried once per interval
    assert "cannot fetch the JWKS" in caplog.text
    assert verifier.verify(token(key_a, idp, subject="while-down")).subject == "token:while-down"
    with pytest.raises(Unauthenticated, match="is not among the keys"):
        verifier.verify(token(Signer.rsa("new-key"), idp))


def test_a_cached_token_is_not_verified_again_and_stops_at_its_exp(
    idp: IdentityProvider, pki: Pki, clock: Clock, key_a: Signer
) -> None:
    cache = TokenCache(size=100, max_age=MAX_AGE)
    verifier = verifier_for(idp, pki, clock, cache)
    short = token(key_a, idp, exp=int(clock.now) + 120)
    principal = verifier.verify(short)
    assert verifier.verify(short) == principal
    assert (cache.hits, len(cache)) == (1, 1)
    clock.advance(119)
    assert verifier.verify(short) == principal
    assert cache.hits == 2
    clock.advance(2)  # past exp, within the clock-skew leeway: verified again, not from the cache
    assert verifier.verify(short) == principal
    assert cache.hits == 2
    clock.advance(LEEWAY_SECONDS)
    with pytest.raises(Unauthenticated, match="has expired"):
        verifier.verify(short)
    with pytest.raises(Unauthenticated, match="has expired"):
        verifier.verify(token(key_a, idp, expires_in=-600))
    with pytest.raises(Unauthenticated, match="'exp' claim must be a number"):
        verifier.verify(token(key_a, idp, exp="tomorrow"))


def test_the_token_cache_is_bounded_and_short_lived(
    idp: IdentityProvider, pki: Pki, clock: Clock, key_a: Signer
) -> None:
    cache = TokenCache(size=3, max_age=60)
    verifier = verifier_for(idp, pki, clock, cache)
    tokens = [token(key_a, idp, subject=f"client-{i}", expires_in=3600) for i in range(5)]
    for text in tokens:
        verifier.verify(text)
    assert len(cache) == 3
    verifier.verify(tokens[-1])
    assert cache.hits == 1
    verifier.verify(tokens[0])  # dropped as the oldest: verified again
    assert cache.hits == 1
    clock.advance(60)
    verifier.verify(tokens[-1])  # older than the cache's maximum age, though far from its exp
    assert cache.hits == 1


def test_discovery_refuses_untrusted_certificates_foreign_issuers_and_plain_http(
    idp: IdentityProvider, pki: Pki, tmp_path: Path
) -> None:
    with pytest.raises(ModelportError, match=r"CERTIFICATE_VERIFY_FAILED.*MODELPORT_JWT_CA_BUNDLE"):
        Discovery(idp.issuer)()  # the system's CAs do not know the test CA
    other = make_pki(tmp_path / "other", "other")
    with pytest.raises(ModelportError, match="CERTIFICATE_VERIFY_FAILED"):
        Discovery(idp.issuer, ca_bundle=other.ca)()
    with pytest.raises(ModelportError, match="set --jwt-issuer to exactly the issuer"):
        Discovery(idp.base, ca_bundle=pki.ca)()  # no trailing slash: not the issuer the provider names
    with pytest.raises(InvalidSetting, match="needs an https issuer URL"):
        Discovery(idp.issuer.replace("https:", "http:"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(InvalidSetting, match="is not a PEM CA bundle"):
        Discovery(idp.issuer, ca_bundle=garbage)
    assert idp.jwks_fetches == 0


def test_discovery_settings_are_checked_at_start(idp: IdentityProvider, pki: Pki, settings: Settings) -> None:
    discovery = settings.with_(jwt_discovery=True, jwt_ca_bundle=pki.ca)
    with pytest.raises(ModelportError, match="give it with --jwt-issuer"):
        build_authenticator(discovery, None, jwks_fetcher(discovery))
    both = discovery.with_(jwt_issuer=idp.issuer, jwt_jwks=Path("jwks.json"))
    with pytest.raises(ModelportError, match="one source of JWT keys, not several"):
        build_authenticator(both, None, jwks_fetcher(both))
    idp.stop()
    down = discovery.with_(jwt_issuer=idp.issuer)
    with pytest.raises(ModelportError, match="cannot fetch the OpenID Connect discovery document"):
        build_authenticator(down, None, jwks_fetcher(down))
