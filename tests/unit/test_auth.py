"""Bearer tokens: who may call, as whom, and what each role may do.

Keys are generated here with cryptography; attack tokens (alg none, algorithm confusion,
tampering) are built by hand so that PyJWT's own refusal to make them cannot hide a bug.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from typing import TYPE_CHECKING, Annotated, Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from vaultq import errors
from vaultq.api.auth import (
    AuthSettings,
    Permission,
    Principal,
    Role,
    TokenVerifier,
    authorize,
    current_principal,
    install_auth,
    mint_token,
    principal_dependency,
    require,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

SECRET = b"a-test-secret-of-more-than-32-bytes!!"
OTHER_SECRET = b"another-secret-of-more-than-32-bytes!"
ISSUER = "https://idp.example"
AUDIENCE = "vaultq"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def private_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def public_jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid}


def write_jwks(path: Path, keys: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"keys": keys}), encoding="utf-8")
    return path


def claims(**changes: Any) -> dict[str, Any]:
    """A valid claim set; a change to None removes that claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "user-1",
        "tenant": "acme",
        "roles": ["producer"],
        "iat": now,
        "exp": now + 300,
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def hand_signed_hs256(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    signing_input = f"{segment(header)}.{segment(payload)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def hs256_verifier(**settings: Any) -> TokenVerifier:
    return TokenVerifier(AuthSettings(hs256_secret=SECRET, **settings))


def hs256_token(payload: dict[str, Any], secret: bytes = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def assert_refused(verifier: TokenVerifier, token: str) -> errors.Unauthenticated:
    with pytest.raises(errors.Unauthenticated) as refused:
        verifier.verify(token)
    return refused.value


# --- accepted tokens ------------------------------------------------------------------------


def test_hs256_token_gives_its_tenant_subject_and_roles() -> None:
    token = hs256_token(claims(tenant="acme", sub="svc-ingest", roles=["producer", "consumer"]))

    principal = hs256_verifier().verify(token)

    assert principal == Principal(
        tenant="acme", subject="svc-ingest", roles=frozenset({Role.PRODUCER, Role.CONSUMER})
    )


def test_rs256_token_is_checked_with_the_public_key_its_kid_names(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    verifier = TokenVerifier(AuthSettings(public_keys={"rsa-1": public_pem(rsa_key)}))
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})

    assert verifier.verify(token).tenant == "acme"


def test_es256_token_is_checked_with_the_public_key_its_kid_names(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    verifier = TokenVerifier(AuthSettings(public_keys={"ec-1": public_pem(ec_key)}))
    token = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "ec-1"})

    assert verifier.verify(token).tenant == "acme"


def test_jwks_file_picks_the_key_by_kid(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    jwks = write_jwks(
        tmp_path / "jwks.json", [public_jwk(rsa_key, "rsa-1"), public_jwk(ec_key, "ec-1")]
    )
    verifier = TokenVerifier(AuthSettings(jwks_path=jwks))
    by_rsa = jwt.encode(claims(sub="a"), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    by_ec = jwt.encode(claims(sub="b"), ec_key, algorithm="ES256", headers={"kid": "ec-1"})
    ec_signed_claiming_rsa_kid = jwt.encode(
        claims(), ec_key, algorithm="ES256", headers={"kid": "rsa-1"}
    )

    assert verifier.verify(by_rsa).subject == "a"
    assert verifier.verify(by_ec).subject == "b"
    assert_refused(verifier, ec_signed_claiming_rsa_kid)


def test_minted_dev_token_is_accepted_by_a_verifier_with_the_same_settings() -> None:
    token = mint_token(
        secret=SECRET,
        tenant="acme",
        roles=[Role.ADMIN, "producer"],
        subject="alice",
        issuer=ISSUER,
        audience=AUDIENCE,
    )

    principal = hs256_verifier(issuer=ISSUER, audience=AUDIENCE).verify(token)

    assert principal == Principal(
        tenant="acme", subject="alice", roles=frozenset({Role.ADMIN, Role.PRODUCER})
    )


def test_hand_signed_hs256_token_is_accepted_with_the_configured_secret() -> None:
    """Guards the attack tests below: the hand-built tokens fail for their attack alone."""
    token = hand_signed_hs256({"alg": "HS256", "typ": "JWT"}, claims(), SECRET)

    assert hs256_verifier().verify(token).tenant == "acme"


# --- time claims ----------------------------------------------------------------------------


def test_expired_token_is_refused() -> None:
    assert_refused(hs256_verifier(), hs256_token(claims(exp=int(time.time()) - 60)))


@pytest.mark.parametrize(("leeway_seconds", "accepted"), [(30, True), (0, False)])
def test_leeway_absorbs_a_few_seconds_of_clock_skew(leeway_seconds: int, accepted: bool) -> None:
    verifier = hs256_verifier(leeway_seconds=leeway_seconds)
    token = hs256_token(claims(exp=int(time.time()) - 10))

    if accepted:
        assert verifier.verify(token).tenant == "acme"
    else:
        assert_refused(verifier, token)


def test_default_leeway_is_30_seconds() -> None:
    assert AuthSettings(hs256_secret=SECRET).leeway_seconds == 30


def test_token_not_yet_valid_is_refused() -> None:
    assert_refused(hs256_verifier(), hs256_token(claims(nbf=int(time.time()) + 120)))


def test_token_without_exp_is_refused() -> None:
    assert_refused(hs256_verifier(), hs256_token(claims(exp=None)))


def test_token_without_sub_is_refused() -> None:
    assert_refused(hs256_verifier(), hs256_token(claims(sub=None)))


# --- issuer and audience --------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"iss": "https://evil.example", "aud": AUDIENCE},
        {"iss": None, "aud": AUDIENCE},
        {"iss": ISSUER, "aud": "another-service"},
        {"iss": ISSUER, "aud": None},
    ],
    ids=["wrong-iss", "missing-iss", "wrong-aud", "missing-aud"],
)
def test_token_for_another_issuer_or_audience_is_refused(changes: dict[str, Any]) -> None:
    verifier = hs256_verifier(issuer=ISSUER, audience=AUDIENCE)

    assert_refused(verifier, hs256_token(claims(**changes)))


def test_audience_list_that_includes_ours_is_accepted() -> None:
    verifier = hs256_verifier(issuer=ISSUER, audience=AUDIENCE)
    token = hs256_token(claims(iss=ISSUER, aud=["billing", AUDIENCE]))

    assert verifier.verify(token).tenant == "acme"


def test_token_with_an_audience_is_refused_when_none_is_configured() -> None:
    assert_refused(hs256_verifier(), hs256_token(claims(aud="some-other-service")))


# --- forged tokens --------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
@pytest.mark.parametrize("configured", ["hs256", "rs256"])
def test_unsigned_alg_none_token_is_refused(
    alg: str, configured: str, rsa_key: rsa.RSAPrivateKey
) -> None:
    settings = (
        AuthSettings(hs256_secret=SECRET)
        if configured == "hs256"
        else AuthSettings(public_keys={"rsa-1": public_pem(rsa_key)})
    )
    unsigned = f"{segment({'alg': alg, 'typ': 'JWT'})}.{segment(claims(roles=['admin']))}."

    assert_refused(TokenVerifier(settings), unsigned)


@pytest.mark.parametrize("header", [{"alg": "HS256", "kid": "rsa-1"}, {"alg": "HS256"}])
def test_hs256_token_signed_with_the_rsa_public_key_is_refused(
    header: dict[str, Any], rsa_key: rsa.RSAPrivateKey
) -> None:
    pem = public_pem(rsa_key)
    verifier = TokenVerifier(AuthSettings(public_keys={"rsa-1": pem}))
    forged = hand_signed_hs256(header, claims(roles=["admin"]), pem.encode())

    assert_refused(verifier, forged)


def test_token_naming_an_unknown_kid_is_refused_even_if_a_configured_key_signed_it(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    verifier = TokenVerifier(AuthSettings(public_keys={"rsa-1": public_pem(rsa_key)}))
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-2"})

    assert_refused(verifier, token)


def test_token_without_kid_is_checked_with_the_only_public_key(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    verifier = TokenVerifier(AuthSettings(public_keys={"rsa-1": public_pem(rsa_key)}))

    assert verifier.verify(jwt.encode(claims(), rsa_key, algorithm="RS256")).tenant == "acme"


def test_token_without_kid_is_checked_with_the_secret_when_keys_are_also_configured(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    verifier = TokenVerifier(
        AuthSettings(hs256_secret=SECRET, public_keys={"rsa-1": public_pem(rsa_key)})
    )

    assert verifier.verify(hs256_token(claims())).tenant == "acme"
    assert_refused(verifier, jwt.encode(claims(), rsa_key, algorithm="RS256"))


def test_token_without_kid_is_refused_when_several_public_keys_could_apply(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    verifier = TokenVerifier(
        AuthSettings(public_keys={"rsa-1": public_pem(rsa_key), "ec-1": public_pem(ec_key)})
    )

    assert_refused(verifier, jwt.encode(claims(), rsa_key, algorithm="RS256"))


def test_hs256_token_with_a_kid_is_refused_when_only_a_secret_is_configured() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "dev"})

    assert_refused(hs256_verifier(), token)


def test_token_with_a_tampered_payload_is_refused() -> None:
    header, _, signature = hs256_token(claims(roles=["producer"])).split(".")
    tampered = f"{header}.{segment(claims(roles=['admin']))}.{signature}"

    assert_refused(hs256_verifier(), tampered)


def test_token_signed_with_another_secret_is_refused() -> None:
    assert_refused(hs256_verifier(), hs256_token(claims(), secret=OTHER_SECRET))


def test_token_signed_by_another_rsa_key_under_a_known_kid_is_refused(
    rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    verifier = TokenVerifier(AuthSettings(public_keys={"rsa-1": public_pem(rsa_key)}))
    token = jwt.encode(claims(), other_rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})

    assert_refused(verifier, token)


@pytest.mark.parametrize(
    "token", ["", "not-a-jwt", "a.b.c", "e30.e30.", "x" * 10_000], ids=lambda t: t[:12]
)
def test_malformed_token_is_refused(token: str) -> None:
    assert_refused(hs256_verifier(), token)


def test_refusal_never_says_which_check_failed_nor_holds_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = int(time.time())
    refused_tokens = [
        hs256_token(claims(exp=now - 600)),
        hs256_token(claims(aud="other")),
        hs256_token(claims(), secret=OTHER_SECRET),
        jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "nope"}),
        hs256_token(claims(tenant="bad tenant")),
    ]
    caplog.set_level(logging.DEBUG, logger="vaultq.api.auth")

    refusals = [assert_refused(hs256_verifier(), token) for token in refused_tokens]

    assert {(r.code, r.message) for r in refusals} == {
        ("UNAUTHENTICATED", "invalid or expired token")
    }
    for token, refusal in zip(refused_tokens, refusals, strict=True):
        payload = token.split(".")[1]
        shown = f"{refusal} {refusal.__cause__} {refusal.__context__}"
        assert payload not in shown
        assert payload not in caplog.text


# --- tenant and roles -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "tenant",
    [None, "", "a" * 129, "acme corp", "acme\n", "ac/me", "ténant", 42, ["acme"]],
    ids=repr,
)
def test_token_with_a_bad_tenant_claim_is_refused(tenant: object) -> None:
    assert_refused(hs256_verifier(), hs256_token(claims(tenant=tenant)))


@pytest.mark.parametrize("tenant", ["a", "a" * 128, "Acme_1.eu:prod-2"])
def test_tenant_claim_accepts_1_to_128_of_letters_digits_and_underscore_dot_colon_dash(
    tenant: str,
) -> None:
    assert hs256_verifier().verify(hs256_token(claims(tenant=tenant))).tenant == tenant


def test_tenant_is_read_from_the_configured_claim() -> None:
    verifier = hs256_verifier(tenant_claim="org")

    assert verifier.verify(hs256_token(claims(tenant=None, org="acme"))).tenant == "acme"
    assert_refused(verifier, hs256_token(claims(tenant="acme")))


def test_token_without_roles_authenticates_but_grants_nothing() -> None:
    principal = hs256_verifier().verify(hs256_token(claims(roles=None)))

    assert principal.roles == frozenset()
    for permission in Permission:
        with pytest.raises(errors.Forbidden):
            authorize(principal, permission)


def test_roles_can_come_from_a_space_separated_scope_and_unknown_scopes_grant_nothing() -> None:
    verifier = hs256_verifier(roles_claim="scope")
    token = hs256_token(claims(roles=None, scope="openid producer billing:write"))

    assert verifier.verify(token).roles == frozenset({Role.PRODUCER})


@pytest.mark.parametrize("roles", [42, [1, "admin"], {"admin": True}], ids=repr)
def test_malformed_roles_claim_is_refused(roles: object) -> None:
    assert_refused(hs256_verifier(), hs256_token(claims(roles=roles)))


# --- the role table -------------------------------------------------------------------------


def principal_with(*roles: Role) -> Principal:
    return Principal(tenant="acme", subject="u", roles=frozenset(roles))


@pytest.mark.parametrize(
    ("role", "permission"),
    [
        (Role.PRODUCER, Permission.RECEIVE),
        (Role.PRODUCER, Permission.DELETE_MESSAGE),
        (Role.PRODUCER, Permission.PURGE),
        (Role.PRODUCER, Permission.READ_ANY_JOB),
        (Role.CONSUMER, Permission.PURGE),
        (Role.CONSUMER, Permission.REDRIVE),
        (Role.CONSUMER, Permission.DELETE_QUEUE),
        (Role.CONSUMER, Permission.SEND),
    ],
)
def test_role_is_forbidden_what_its_table_does_not_grant(
    role: Role, permission: Permission
) -> None:
    with pytest.raises(errors.Forbidden) as forbidden:
        authorize(principal_with(role), permission)

    assert forbidden.value.code == "FORBIDDEN"


@pytest.mark.parametrize(
    ("role", "permission"),
    [
        (Role.PRODUCER, Permission.SEND),
        (Role.PRODUCER, Permission.SUBMIT_JOB),
        (Role.PRODUCER, Permission.READ_JOB),
        (Role.CONSUMER, Permission.RECEIVE),
        (Role.CONSUMER, Permission.DELETE_MESSAGE),
        (Role.CONSUMER, Permission.READ_JOB),
        (Role.CONSUMER, Permission.READ_ANY_JOB),
    ],
)
def test_role_is_allowed_what_its_table_grants(role: Role, permission: Permission) -> None:
    authorize(principal_with(role), permission)


def test_admin_may_do_everything() -> None:
    assert principal_with(Role.ADMIN).permissions == frozenset(Permission)


def test_permissions_of_several_roles_add_up() -> None:
    both = principal_with(Role.PRODUCER, Role.CONSUMER)

    assert both.can(Permission.SEND)
    assert both.can(Permission.RECEIVE)
    assert not both.can(Permission.PURGE)


# --- settings -------------------------------------------------------------------------------


def _settings_cases() -> list[Any]:
    def jwks(path: Path, keys: list[dict[str, Any]]) -> Path:
        return write_jwks(path / "jwks.json", keys)

    def text_file(path: Path, text: str) -> Path:
        path.write_text(text, encoding="utf-8")
        return path

    def small_rsa_pem() -> str:
        # Deliberately weak: the point is that vaultq refuses it.
        weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
        return public_pem(weak)

    cases: list[tuple[str, Callable[[Path, rsa.RSAPrivateKey], dict[str, Any]], str]] = [
        ("no-key", lambda p, k: {}, "no key to check tokens with"),
        ("short-secret", lambda p, k: {"hs256_secret": b"x" * 31}, "at least 32"),
        (
            "pem-as-secret",
            lambda p, k: {"hs256_secret": public_pem(k).encode()},
            "looks like a public or private key",
        ),
        ("missing-jwks", lambda p, k: {"jwks_path": p / "absent.json"}, "cannot read"),
        (
            "jwks-not-json",
            lambda p, k: {"jwks_path": text_file(p / "jwks.json", "{")},
            "not a JSON document",
        ),
        (
            "jwks-without-keys",
            lambda p, k: {"jwks_path": text_file(p / "jwks.json", "{}")},
            '"keys" list',
        ),
        (
            "jwks-private-key",
            lambda p, k: {
                "jwks_path": jwks(
                    p, [{**jwt.algorithms.RSAAlgorithm.to_jwk(k, as_dict=True), "kid": "x"}]
                )
            },
            "private key",
        ),
        (
            "jwks-key-without-kid",
            lambda p, k: {"jwks_path": jwks(p, [{**public_jwk(k, "x"), "kid": None}])},
            "non-empty string kid",
        ),
        (
            "jwks-other-alg",
            lambda p, k: {"jwks_path": jwks(p, [{**public_jwk(k, "x"), "alg": "PS256"}])},
            "RS256 and ES256",
        ),
        (
            "jwks-only-encryption-keys",
            lambda p, k: {"jwks_path": jwks(p, [{**public_jwk(k, "x"), "use": "enc"}])},
            "no signing key",
        ),
        (
            "private-pem",
            lambda p, k: {"public_keys": {"k": private_pem(k)}},
            "private key",
        ),
        ("garbage-pem", lambda p, k: {"public_keys": {"k": "hello"}}, "not a PEM public key"),
        ("small-rsa", lambda p, k: {"public_keys": {"k": small_rsa_pem()}}, "2048"),
        (
            "p384",
            lambda p, k: {
                "public_keys": {"k": public_pem(ec.generate_private_key(ec.SECP384R1()))}
            },
            "P-256",
        ),
        (
            "kid-twice",
            lambda p, k: {
                "public_keys": {"x": public_pem(k)},
                "jwks_path": jwks(p, [public_jwk(k, "x")]),
            },
            "configured twice",
        ),
        ("negative-leeway", lambda p, k: {"hs256_secret": SECRET, "leeway_seconds": -1}, "leeway"),
        ("huge-leeway", lambda p, k: {"hs256_secret": SECRET, "leeway_seconds": 301}, "leeway"),
        ("empty-issuer", lambda p, k: {"hs256_secret": SECRET, "issuer": ""}, "issuer"),
        ("empty-tenant-claim", lambda p, k: {"hs256_secret": SECRET, "tenant_claim": ""}, "claim"),
    ]
    return [pytest.param(build, fragment, id=name) for name, build, fragment in cases]


@pytest.mark.parametrize(("build", "fragment"), _settings_cases())
def test_bad_settings_are_refused_with_a_clear_error(
    build: Callable[[Path, rsa.RSAPrivateKey], dict[str, Any]],
    fragment: str,
    tmp_path: Path,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    with pytest.raises(errors.InvalidSettings) as refused:
        AuthSettings(**build(tmp_path, rsa_key))

    assert fragment in refused.value.message


def test_settings_repr_does_not_show_the_secret() -> None:
    assert SECRET.decode() not in repr(AuthSettings(hs256_secret=SECRET))


def test_settings_are_read_from_vaultq_auth_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rsa_key: rsa.RSAPrivateKey
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAULTQ_AUTH_HS256_SECRET", SECRET.decode())
    monkeypatch.setenv("VAULTQ_AUTH_PUBLIC_KEYS", json.dumps({"rsa-1": public_pem(rsa_key)}))
    monkeypatch.setenv("VAULTQ_AUTH_ISSUER", ISSUER)
    monkeypatch.setenv("VAULTQ_AUTH_AUDIENCE", AUDIENCE)
    monkeypatch.setenv("VAULTQ_AUTH_LEEWAY_SECONDS", "5")
    monkeypatch.setenv("VAULTQ_AUTH_ROLES_CLAIM", "scope")

    settings = AuthSettings.from_env()

    assert settings.hs256_secret == SECRET
    assert set(settings.public_keys) == {"rsa-1"}
    assert (settings.issuer, settings.audience) == (ISSUER, AUDIENCE)
    assert (settings.leeway_seconds, settings.tenant_claim, settings.roles_claim) == (
        5,
        "tenant",
        "scope",
    )


def test_settings_read_the_dot_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        f"VAULTQ_URL=sqlite:///x.db\nVAULTQ_AUTH_HS256_SECRET={SECRET.decode()}\n"
    )

    assert AuthSettings.from_env().hs256_secret == SECRET


def test_misspelt_auth_variable_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAULTQ_AUTH_HS256_SECRET", SECRET.decode())
    monkeypatch.setenv("VAULTQ_AUTH_AUDEINCE", AUDIENCE)

    with pytest.raises(errors.InvalidSettings, match="VAULTQ_AUTH_AUDEINCE"):
        AuthSettings.from_env()


def test_bad_variable_is_named_without_echoing_its_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAULTQ_AUTH_HS256_SECRET", SECRET.decode())
    monkeypatch.setenv("VAULTQ_AUTH_LEEWAY_SECONDS", "soon-ish")

    with pytest.raises(errors.InvalidSettings) as refused:
        AuthSettings.from_env()

    assert "VAULTQ_AUTH_LEEWAY_SECONDS" in refused.value.message
    assert "soon-ish" not in refused.value.message


def test_environment_without_any_key_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("HS256_SECRET", "PUBLIC_KEYS", "JWKS_PATH"):
        monkeypatch.delenv(f"VAULTQ_AUTH_{name}", raising=False)

    with pytest.raises(errors.InvalidSettings, match="VAULTQ_AUTH_HS256_SECRET"):
        AuthSettings.from_env()


# --- development tokens ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"secret": b"short"}, errors.InvalidSettings),
        ({"tenant": "acme corp"}, errors.InvalidParameterValue),
        ({"roles": ["superuser"]}, errors.InvalidParameterValue),
        ({"expires_in_seconds": 0}, errors.InvalidParameterValue),
    ],
    ids=["short-secret", "bad-tenant", "unknown-role", "no-lifetime"],
)
def test_mint_token_refuses_what_no_verifier_would_accept(
    changes: dict[str, Any], error: type[errors.VaultqError]
) -> None:
    arguments: dict[str, Any] = {"secret": SECRET, "tenant": "acme", "roles": ["producer"]}

    with pytest.raises(error):
        mint_token(**{**arguments, **changes})


def test_minted_token_expires_after_its_lifetime() -> None:
    an_hour_ago = time.time() - 3600
    token = mint_token(
        secret=SECRET,
        tenant="acme",
        roles=["producer"],
        expires_in_seconds=60,
        clock=lambda: an_hour_ago,
    )

    assert_refused(hs256_verifier(), token)


# --- FastAPI --------------------------------------------------------------------------------


VERIFIER = TokenVerifier(AuthSettings(hs256_secret=SECRET))
# FastAPI resolves route annotations from module globals, so the dependencies live up here.
Caller = Annotated[Principal, Depends(current_principal)]
Purger = Annotated[Principal, Depends(require(Permission.PURGE))]
BoundCaller = Annotated[Principal, Depends(principal_dependency(VERIFIER))]


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    install_auth(app, VERIFIER)

    @app.get("/whoami")
    def whoami(principal: Caller) -> dict[str, str]:
        return {"tenant": principal.tenant, "subject": principal.subject}

    @app.post("/queues/{name}/purge")
    def purge(name: str, principal: Purger) -> dict[str, str]:
        return {"purged": name, "tenant": principal.tenant}

    @app.get("/bound")
    def bound(principal: BoundCaller) -> dict[str, str]:
        return {"tenant": principal.tenant}

    return TestClient(app)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}],
    ids=["none", "basic", "empty-bearer"],
)
def test_request_without_a_bearer_token_gets_401_with_a_bearer_challenge(
    client: TestClient, headers: dict[str, str]
) -> None:
    response = client.get("/whoami", headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["code"] == "UNAUTHENTICATED"


def test_request_with_a_bad_token_gets_401_that_does_not_echo_it(client: TestClient) -> None:
    token = hs256_token(claims(), secret=OTHER_SECRET)

    response = client.get("/whoami", headers=bearer(token))

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["detail"] == "invalid or expired token"
    assert token.split(".")[1] not in response.text


def test_valid_token_reaches_the_route_as_its_principal(client: TestClient) -> None:
    response = client.get("/whoami", headers=bearer(hs256_token(claims(sub="alice"))))

    assert response.status_code == 200
    assert response.json() == {"tenant": "acme", "subject": "alice"}


def test_route_needing_a_permission_the_role_lacks_gets_403(client: TestClient) -> None:
    producer = hs256_token(claims(roles=["producer"]))

    response = client.post("/queues/orders/purge", headers=bearer(producer))

    assert response.status_code == 403
    assert response.json()["code"] == "FORBIDDEN"


def test_route_needing_a_permission_the_role_has_runs(client: TestClient) -> None:
    admin = hs256_token(claims(roles=["admin"]))

    response = client.post("/queues/orders/purge", headers=bearer(admin))

    assert response.status_code == 200
    assert response.json() == {"purged": "orders", "tenant": "acme"}


def test_permission_check_comes_after_authentication(client: TestClient) -> None:
    response = client.post("/queues/orders/purge")

    assert response.status_code == 401


def test_dependency_bound_to_a_verifier_authenticates_with_it(client: TestClient) -> None:
    assert client.get("/bound", headers=bearer(hs256_token(claims()))).status_code == 200
    assert client.get("/bound").status_code == 401
