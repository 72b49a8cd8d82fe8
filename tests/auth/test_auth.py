"""Auth core: scopes, API keys stored hashed and checked from a snapshot, JWT verification, startup rules."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from sqlalchemy import create_engine, text

from modelport.auth.authenticator import Authenticator, build_authenticator, check_exposure
from modelport.auth.keys import KeyStore
from modelport.auth.principal import Principal, parse_scopes
from modelport.auth.tokens import TokenVerifier
from modelport.errors import InvalidScope, InvalidSetting, ModelportError, NotFound, Unauthenticated
from modelport.registry.registry import Registry
from modelport.settings import Settings
from tests.support.tokens import AUDIENCE, ISSUER, Signer, write_jwks


@pytest.fixture
def registry(settings: Settings) -> Iterator[Registry]:
    with Registry.open(settings) as registry:
        yield registry


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.rsa()


def jwt_settings(settings: Settings, signer: Signer, tmp_path: Path, **changes: object) -> Settings:
    pem = signer.write_pem(tmp_path / "issuer.pem")
    return settings.with_(jwt_public_key=pem, jwt_issuer=ISSUER, jwt_audience=AUDIENCE, **changes)


def test_scopes_are_validated_deduplicated_and_sorted() -> None:
    assert parse_scopes(["manage", "infer:iris", " infer:iris ", "infer"]) == ("infer", "infer:iris", "manage")
    for bad in ["admin", "infer:", "infer:bad name", "manage:iris", ""]:
        with pytest.raises(InvalidScope, match="a scope is 'infer'"):
            parse_scopes([bad])
    with pytest.raises(InvalidScope, match="at least one"):
        parse_scopes([])


def test_principal_scopes_grant_inference_per_model_and_manage_includes_inference() -> None:
    one = Principal("key:a", frozenset({"infer:iris"}))
    assert one.may_infer("iris")
    assert not one.may_infer("churn")
    assert not one.may_infer_any()
    assert not one.may_manage()
    every = Principal("key:b", frozenset({"infer"}))
    assert every.may_infer("churn")
    assert every.may_infer_any()
    assert not every.may_manage()
    admin = Principal("key:c", frozenset({"manage"}))
    assert admin.may_manage()
    assert admin.may_infer("iris")


def test_key_is_stored_as_a_hash_and_never_in_the_database(registry: Registry, settings: Settings) -> None:
    record, key = KeyStore(registry.engine).create(["infer:iris"], "ci pipeline")
    prefix, key_id, secret = key.split("_", 2)
    assert (prefix, key_id) == ("mp", record.id)
    assert len(secret) >= 43  # 32 random bytes, base64url
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT * FROM modelport_api_keys")).mappings().one()
            dump = conn.execute(text("SELECT quote(id) || quote(secret_hash) || scopes FROM modelport_api_keys"))
            stored = " ".join(str(v) for v in row.values()) + str(dump.scalar_one())
    finally:
        engine.dispose()
    assert secret not in stored
    assert key not in stored
    assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert row["last4"] == secret[-4:]
    assert json.loads(row["scopes"]) == ["infer:iris"]


def test_keys_authenticate_by_bearer_or_header_and_stop_after_revoke_and_refresh(registry: Registry) -> None:
    store = KeyStore(registry.engine)
    authenticator = build_authenticator(Settings(home=Path("unused")), registry)
    assert not authenticator.enabled
    record, key = store.create(["infer"])
    with pytest.raises(Unauthenticated, match="invalid API key"):
        authenticator.authenticate(None, key)  # the snapshot is older than the key
    authenticator.refresh()
    assert authenticator.enabled
    principal = authenticator.authenticate(f"Bearer {key}", None)
    assert principal == Principal(f"key:{record.id}", frozenset({"infer"}))
    assert authenticator.authenticate("bearer  " + key + " ", None) == principal
    assert authenticator.authenticate(None, key) == principal
    assert authenticator.authenticate(None, None) is None
    store.revoke(record.id)
    assert authenticator.authenticate(None, key) == principal  # until the next refresh
    authenticator.refresh()
    with pytest.raises(Unauthenticated, match=f"API key {record.id} was revoked"):
        authenticator.authenticate(None, key)
    assert authenticator.enabled, "revoking the last key must not open the server"


def test_wrong_secret_malformed_key_and_other_schemes_are_refused(registry: Registry) -> None:
    _, key = KeyStore(registry.engine).create(["infer"])
    authenticator = build_authenticator(Settings(home=Path("unused")), registry)
    flipped = key[:-1] + ("A" if key[-1] != "A" else "B")
    with pytest.raises(Unauthenticated, match="invalid API key"):
        authenticator.authenticate(f"Bearer {flipped}", None)
    with pytest.raises(Unauthenticated, match="invalid API key"):
        authenticator.authenticate(None, f"mp_{'0' * 12}_{key.split('_', 2)[2]}")
    with pytest.raises(Unauthenticated, match="malformed API key"):
        authenticator.authenticate(None, "not-a-key")
    basic = base64.b64encode(b"user:pass").decode()
    with pytest.raises(Unauthenticated, match="unsupported Authorization header"):
        authenticator.authenticate(f"Basic {basic}", None)
    with pytest.raises(Unauthenticated, match="verifies no OAuth2 tokens"):
        authenticator.authenticate("Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig", None)


def test_revoke_accepts_the_id_or_the_key_and_names_unknown_ids(registry: Registry) -> None:
    store = KeyStore(registry.engine)
    record, key = store.create(["manage"], "ops")
    assert store.revoke(key).revoked
    assert store.revoke(f"mp_{record.id}").revoked  # twice is harmless
    with pytest.raises(NotFound, match="keys list"):
        store.revoke("ffffffffffff")
    (listed,) = store.all()
    assert (listed.id, listed.scopes, listed.description, listed.revoked) == (record.id, ("manage",), "ops", True)


def test_valid_jwt_gives_its_subject_and_scopes(settings: Settings, signer: Signer, tmp_path: Path) -> None:
    authenticator = build_authenticator(jwt_settings(settings, signer, tmp_path), None)
    assert authenticator.enabled
    principal = authenticator.authenticate(f"Bearer {signer.token(scope='infer:iris manage')}", None)
    assert principal == Principal("token:client-42", frozenset({"infer:iris", "manage"}))
    as_list = authenticator.authenticate(f"Bearer {signer.token(scope=['infer'])}", None)
    assert as_list is not None
    assert as_list.scopes == frozenset({"infer"})


@pytest.mark.parametrize(
    ("token_args", "message"),
    [
        ({"expires_in": -600}, "has expired"),
        ({"issuer": "https://evil.test/"}, "not issued by"),
        ({"issuer": None}, "no 'iss' claim"),
        ({"audience": "someone-else"}, "not meant for audience"),
    ],
    ids=["expired", "wrong-issuer", "no-issuer", "wrong-audience"],
)
def test_jwt_with_bad_claims_is_unauthenticated(
    settings: Settings, signer: Signer, tmp_path: Path, token_args: dict[str, object], message: str
) -> None:
    authenticator = build_authenticator(jwt_settings(settings, signer, tmp_path), None)
    with pytest.raises(Unauthenticated, match=message):
        authenticator.authenticate(f"Bearer {signer.token(**token_args)}", None)  # type: ignore[arg-type]


def test_jwt_without_exp_or_signed_by_another_key_is_refused(
    settings: Settings, signer: Signer, tmp_path: Path
) -> None:
    verifier = TokenVerifier.from_settings(jwt_settings(settings, signer, tmp_path))
    claims = {"sub": "x", "iss": ISSUER, "aud": AUDIENCE, "scope": "infer"}
    with pytest.raises(Unauthenticated, match="no 'exp' claim"):
        verifier.verify(jwt.encode(claims, signer.private, algorithm="RS256"))
    with pytest.raises(Unauthenticated, match="Signature verification failed"):
        verifier.verify(Signer.rsa().token())


def test_jwt_alg_none_and_hmac_with_the_public_key_are_refused(
    settings: Settings, signer: Signer, tmp_path: Path
) -> None:
    verifier = TokenVerifier.from_settings(jwt_settings(settings, signer, tmp_path))
    claims = {"sub": "x", "iss": ISSUER, "aud": AUDIENCE, "scope": "manage", "exp": 2_000_000_000}
    unsigned = jwt.encode(claims, "", algorithm="none")
    with pytest.raises(Unauthenticated, match="must be signed with RS256"):
        verifier.verify(unsigned)
    # The classic confusion attack: HS256 keyed with the server's public PEM. Build it by hand
    # (PyJWT itself refuses to use a PEM as an HMAC secret).

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    mac = hmac.new(signer.public_pem(), head.encode(), hashlib.sha256).digest()
    with pytest.raises(Unauthenticated, match="must be signed with RS256"):
        verifier.verify(f"{head}.{b64(mac)}")


def test_jwks_picks_the_key_by_kid_and_accepts_es256(settings: Settings, tmp_path: Path) -> None:
    first, second = Signer.rsa("k1"), Signer.ec("k2")
    jwks = write_jwks(tmp_path / "jwks.json", first, second)
    authenticator = build_authenticator(settings.with_(jwt_jwks=jwks), None)
    for s in (first, second):
        principal = authenticator.authenticate(f"Bearer {s.token(scope='infer')}", None)
        assert principal is not None
        assert principal.may_infer("iris")
    with pytest.raises(Unauthenticated, match="'kid' header"):
        authenticator.authenticate(f"Bearer {first.token(kid=False)}", None)
    with pytest.raises(Unauthenticated, match="not in the configured JWKS"):
        authenticator.authenticate(f"Bearer {Signer.rsa('k3').token()}", None)


def test_unusable_jwt_configuration_is_refused_at_start(settings: Settings, signer: Signer, tmp_path: Path) -> None:
    with pytest.raises(ModelportError, match="cannot read the JWT public key"):
        build_authenticator(settings.with_(jwt_public_key=tmp_path / "missing.pem"), None)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    with pytest.raises(ModelportError, match="is not a PEM public key"):
        build_authenticator(settings.with_(jwt_public_key=garbage), None)
    symmetric = tmp_path / "oct.json"
    symmetric.write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}))
    with pytest.raises(ModelportError, match="symmetric"):
        build_authenticator(settings.with_(jwt_jwks=symmetric), None)
    pem = signer.write_pem(tmp_path / "k.pem")
    with pytest.raises(ModelportError, match="one source of JWT keys, not several"):
        build_authenticator(settings.with_(jwt_public_key=pem, jwt_jwks=write_jwks(tmp_path / "j.json", signer)), None)


def test_startup_rules_need_auth_for_public_binds_and_management(settings: Settings) -> None:
    open_auth = Authenticator()
    check_exposure(settings, open_auth)  # loopback without auth: fine
    with pytest.raises(InvalidSetting, match=r"refusing to serve on 0\.0\.0\.0 without authentication"):
        check_exposure(settings.with_(host="0.0.0.0"), open_auth)
    check_exposure(settings.with_(host="0.0.0.0", insecure_open=True), open_auth)
    with pytest.raises(InvalidSetting, match="management endpoints need authentication"):
        check_exposure(settings.with_(enable_management=True, insecure_open=True), open_auth)
