"""Who is calling, and what they may do: JWT bearer tokens, tenants, roles and permissions.

A token is a JWT signed with HS256 (a shared secret) or RS256/ES256 (public keys given as PEM
or in a local JWKS file; vaultq never fetches keys over the network). Each configured key has
one algorithm, fixed by configuration: the token's ``alg`` header is only checked against it,
never trusted, so ``alg: none`` and HS256-with-the-public-key forgeries fail. A token that
names a ``kid`` must name a configured key; a token without one is checked against the HS256
secret, or against the only public key when there is no secret and exactly one key.

The verifier is framework-free (`TokenVerifier.verify`); the FastAPI part at the end of this
module is a thin adapter over it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from jwt.algorithms import HMACAlgorithm
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from vaultq.errors import Forbidden, InvalidParameterValue, InvalidSettings, Unauthenticated

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping

log = logging.getLogger(__name__)

ENV_PREFIX: Final = "VAULTQ_AUTH_"
DEFAULT_LEEWAY_SECONDS: Final = 30
MAX_LEEWAY_SECONDS: Final = 300
MIN_HS256_SECRET_BYTES: Final = 32
MIN_RSA_KEY_BITS: Final = 2048
#: Longer bearer values are refused before any parsing (a cheap guard against huge headers).
MAX_TOKEN_CHARS: Final = 8192
MAX_DEV_TOKEN_SECONDS: Final = 30 * 24 * 3600
DEFAULT_DEV_SUBJECT: Final = "vaultq-dev"

TENANT_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_SUBJECT_PATTERN: Final = re.compile(r"[^\x00-\x1f\x7f]{1,256}")

#: The one message for every refused token, whichever check failed.
REFUSED_MESSAGE: Final = "invalid or expired token"
MISSING_MESSAGE: Final = "bearer token required"


class Role(StrEnum):
    """What a caller is, as named in the token's roles claim."""

    PRODUCER = "producer"  #: sends messages, uploads, submits, reads and cancels its own jobs
    CONSUMER = "consumer"  #: receives and deletes messages, downloads, reads the tenant's jobs
    ADMIN = "admin"  #: everything, including purge, redrive and deleting queues


class Permission(StrEnum):
    """One thing an API route does; routes require exactly one."""

    SEND = "send"  #: send messages to a queue
    SUBMIT_JOB = "submit_job"  #: create a job
    READ_JOB = "read_job"  #: read the caller's own jobs (the router compares the owner)
    READ_ANY_JOB = "read_any_job"  #: read every job of the caller's tenant
    CANCEL_JOB = "cancel_job"  #: cancel a job
    RECEIVE = "receive"  #: receive messages (and change their visibility)
    DELETE_MESSAGE = "delete_message"  #: delete received messages
    PURGE = "purge"  #: purge a queue
    REDRIVE = "redrive"  #: move dead letters back to their source queue
    DELETE_QUEUE = "delete_queue"  #: delete a queue
    LIST_DLQ = "list_dlq"  #: read dead-letter queues and their failure records
    READ_ALARMS = "read_alarms"  #: read the deployment's alarms and their history
    UPLOAD = "upload"  #: put objects into a bucket
    DOWNLOAD = "download"  #: read objects from a bucket


_ROLE_NAMES: Final = frozenset(role.value for role in Role)

#: The whole authorisation policy. A permission absent here is granted to nobody but admin.
ROLE_PERMISSIONS: Final[Mapping[Role, frozenset[Permission]]] = MappingProxyType(
    {
        Role.PRODUCER: frozenset(
            {
                Permission.SEND,
                Permission.UPLOAD,
                Permission.SUBMIT_JOB,
                Permission.READ_JOB,
                Permission.CANCEL_JOB,
            }
        ),
        Role.CONSUMER: frozenset(
            {
                Permission.RECEIVE,
                Permission.DELETE_MESSAGE,
                Permission.DOWNLOAD,
                Permission.READ_JOB,
                Permission.READ_ANY_JOB,
            }
        ),
        Role.ADMIN: frozenset(Permission),
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """An authenticated caller. Every route scopes its data to ``tenant``."""

    tenant: str
    #: The token's ``sub``: who, within the tenant, is calling.
    subject: str
    #: Roles vaultq knows; unknown role names in the token are dropped.
    roles: frozenset[Role]

    @property
    def permissions(self) -> frozenset[Permission]:
        return frozenset().union(*(ROLE_PERMISSIONS[role] for role in self.roles))

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions


def authorize(principal: Principal, permission: Permission) -> None:
    """Raise `Forbidden` unless one of the principal's roles grants ``permission``."""
    if not principal.can(permission):
        raise Forbidden(f"this operation needs the {permission.value!r} permission")


# --- settings -------------------------------------------------------------------------------

_VerificationKeyObject = bytes | rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True, slots=True)
class _VerificationKey:
    algorithm: str
    key: _VerificationKeyObject = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthSettings:
    """How tokens are checked. Building it loads and checks every key, so a bad key or an
    unreadable JWKS file fails at start-up (`InvalidSettings`), not at the first request."""

    #: Shared secret for HS256 tokens, at least 32 bytes.
    hs256_secret: bytes | None = field(default=None, repr=False)
    #: ``kid -> PEM public key`` (RSA of 2048 bits or more for RS256, P-256 for ES256).
    public_keys: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)
    #: A local JWKS file with the public keys of an identity provider.
    jwks_path: Path | None = None
    #: When set, tokens must carry exactly this ``iss``.
    issuer: str | None = None
    #: When set, tokens must list this ``aud``; when unset, tokens with an ``aud`` fail.
    audience: str | None = None
    #: Clock skew allowed on ``exp``, ``nbf`` and ``iat``.
    leeway_seconds: int = DEFAULT_LEEWAY_SECONDS
    tenant_claim: str = "tenant"
    #: A list of role names, or one space-separated string (so ``"scope"`` works too).
    roles_claim: str = "roles"
    _keys: Mapping[str | None, _VerificationKey] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "public_keys", MappingProxyType(dict(self.public_keys)))
        _check_claim_settings(self)
        object.__setattr__(self, "_keys", MappingProxyType(_load_keys(self)))

    @classmethod
    def from_env(cls) -> AuthSettings:
        """Read ``VAULTQ_AUTH_*`` from the environment and ``.env``. ``VAULTQ_AUTH_PUBLIC_KEYS`` is
        a JSON object ``{"kid": "-----BEGIN PUBLIC KEY-----..."}``. Unknown ``VAULTQ_AUTH_*``
        variables are refused, so a misspelt ``AUDIENCE`` cannot silently turn a check off."""
        _refuse_unknown_variables(os.environ)
        try:
            env = _AuthEnvironment()
        except ValidationError as exc:
            problems = "; ".join(
                f"{ENV_PREFIX}{'.'.join(map(str, error['loc'])).upper()}: {error['msg']}"
                for error in exc.errors()
            )
            raise InvalidSettings(problems) from None
        except SettingsError as exc:
            raise InvalidSettings(str(exc)) from None
        secret = env.hs256_secret.get_secret_value().encode() if env.hs256_secret else None
        return cls(
            hs256_secret=secret,
            public_keys=env.public_keys,
            jwks_path=Path(env.jwks_path) if env.jwks_path else None,
            issuer=env.issuer,
            audience=env.audience,
            leeway_seconds=env.leeway_seconds,
            tenant_claim=env.tenant_claim,
            roles_claim=env.roles_claim,
        )


class _AuthEnvironment(BaseSettings):
    # .env also holds other settings, so extras are ignored here; `from_env` checks names.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", env_ignore_empty=True, frozen=True
    )

    hs256_secret: SecretStr | None = None
    public_keys: dict[str, str] = Field(default_factory=dict)
    jwks_path: str | None = None
    issuer: str | None = None
    audience: str | None = None
    leeway_seconds: int = DEFAULT_LEEWAY_SECONDS
    tenant_claim: str = "tenant"
    roles_claim: str = "roles"


def _refuse_unknown_variables(environ: Mapping[str, str]) -> None:
    known = {f"{ENV_PREFIX}{name}".upper() for name in _AuthEnvironment.model_fields}
    unknown = sorted(
        name
        for name in environ
        if name.upper().startswith(ENV_PREFIX) and name.upper() not in known
    )
    if unknown:
        raise InvalidSettings(
            f"unknown variable(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )


def _check_claim_settings(settings: AuthSettings) -> None:
    if isinstance(settings.leeway_seconds, bool) or not (
        0 <= settings.leeway_seconds <= MAX_LEEWAY_SECONDS
    ):
        raise InvalidSettings(
            f"leeway_seconds must be between 0 and {MAX_LEEWAY_SECONDS}, "
            f"not {settings.leeway_seconds}"
        )
    for name in ("issuer", "audience"):
        if getattr(settings, name) == "":
            raise InvalidSettings(f"{name} must not be empty (leave it unset to not check it)")
    for name in ("tenant_claim", "roles_claim"):
        if not getattr(settings, name):
            raise InvalidSettings(f"{name} must name a claim")


def _load_keys(settings: AuthSettings) -> dict[str | None, _VerificationKey]:
    """Every key by ``kid``; the HS256 secret, which has no ``kid``, under None."""
    keys: dict[str | None, _VerificationKey] = {}
    if settings.hs256_secret is not None:
        keys[None] = _hs256_key(settings.hs256_secret)
    for kid, pem in settings.public_keys.items():
        _add_key(keys, kid, _pem_key(kid, pem), source="public_keys")
    if settings.jwks_path is not None:
        _add_jwks_keys(keys, settings.jwks_path)
    if not keys:
        raise InvalidSettings(
            "no key to check tokens with: set hs256_secret, public_keys or jwks_path "
            f"({ENV_PREFIX}HS256_SECRET, {ENV_PREFIX}PUBLIC_KEYS or {ENV_PREFIX}JWKS_PATH)"
        )
    return keys


def _add_key(
    keys: dict[str | None, _VerificationKey], kid: object, key: _VerificationKey, *, source: str
) -> None:
    if not isinstance(kid, str) or not kid:
        raise InvalidSettings(f"{source}: every key needs a non-empty string kid")
    if kid in keys:
        raise InvalidSettings(f"{source}: kid {kid!r} is configured twice")
    keys[kid] = key


def _hs256_key(secret: bytes) -> _VerificationKey:
    if not isinstance(secret, bytes):
        raise InvalidSettings("hs256_secret must be bytes")
    if len(secret) < MIN_HS256_SECRET_BYTES:
        raise InvalidSettings(
            f"hs256_secret is {len(secret)} bytes; HS256 needs at least "
            f"{MIN_HS256_SECRET_BYTES} (e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(48))'`)"
        )
    try:
        HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
    except jwt.InvalidKeyError:
        # PyJWT refuses PEM and SSH keys as HMAC secrets: that is the algorithm-confusion trap.
        raise InvalidSettings(
            "hs256_secret looks like a public or private key; HS256 needs a random secret"
        ) from None
    return _VerificationKey("HS256", secret)


def _pem_key(kid: str, pem: str) -> _VerificationKey:
    where = f"public_keys[{kid!r}]"
    if "PRIVATE KEY" in pem:
        raise InvalidSettings(f"{where} is a private key; configure its public key only")
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise InvalidSettings(
            f"{where} is not a PEM public key ('-----BEGIN PUBLIC KEY-----')"
        ) from exc
    return _public_key(key, where=where)


def _public_key(key: object, *, where: str) -> _VerificationKey:
    """The one place that maps a key to its algorithm: RSA -> RS256, P-256 -> ES256."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_KEY_BITS:
            raise InvalidSettings(
                f"{where} is a {key.key_size}-bit RSA key; at least {MIN_RSA_KEY_BITS} bits"
            )
        return _VerificationKey("RS256", key)
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise InvalidSettings(f"{where} is on curve {key.curve.name}; ES256 needs P-256")
        return _VerificationKey("ES256", key)
    raise InvalidSettings(f"{where} is neither an RSA nor an EC public key")


def _add_jwks_keys(keys: dict[str | None, _VerificationKey], path: Path) -> None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidSettings(f"jwks_path: cannot read {path} ({exc.strerror})") from exc
    except ValueError as exc:
        raise InvalidSettings(f"jwks_path: {path} is not a JSON document") from exc
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise InvalidSettings(f'jwks_path: {path} has no "keys" list')
    signing_keys = 0
    for entry in entries:
        if not isinstance(entry, dict):
            raise InvalidSettings(f'jwks_path: every entry of "keys" in {path} must be an object')
        if entry.get("use") == "enc":
            continue  # encryption keys sit in many IdP key sets; they never sign tokens
        kid = entry.get("kid")
        _add_key(keys, kid, _jwk_key(entry, where=f"{path} kid {kid!r}"), source=str(path))
        signing_keys += 1
    if not signing_keys:
        raise InvalidSettings(f"jwks_path: {path} holds no signing key")


def _jwk_key(entry: dict[str, Any], *, where: str) -> _VerificationKey:
    if entry.get("kty") == "oct":
        raise InvalidSettings(f"{where} is a symmetric key; use hs256_secret for HS256")
    if "d" in entry:
        raise InvalidSettings(f"{where} is a private key; a JWKS file holds public keys only")
    try:
        jwk = jwt.PyJWK(entry)
    except jwt.PyJWTError as exc:
        raise InvalidSettings(f"{where} is not a usable JWK ({exc})") from exc
    key = _public_key(jwk.key, where=where)
    if jwk.algorithm_name != key.algorithm:
        raise InvalidSettings(
            f"{where} declares alg {jwk.algorithm_name}; vaultq accepts RS256 and ES256 keys"
        )
    return key


# --- verification ---------------------------------------------------------------------------


class _Refused(Exception):
    """Why a token was refused, for the debug log only; never shown to the caller."""


class TokenVerifier:
    """Checks bearer tokens against `AuthSettings` and returns who is calling."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        keys = settings._keys
        public = [key for kid, key in keys.items() if kid is not None]
        self._keyless: _VerificationKey | None = keys.get(None) or (
            public[0] if len(public) == 1 else None
        )

    def verify(self, token: str) -> Principal:
        """The principal of a valid token. Any failure raises `Unauthenticated` with the same
        message, whichever check failed."""
        try:
            return self._principal(self._claims(token))
        except (_Refused, jwt.PyJWTError) as exc:
            # The reason is for operators; the caller learns nothing about which check failed.
            reason = str(exc) if isinstance(exc, _Refused) else type(exc).__name__
            log.debug("bearer token refused: %s", reason)
            raise Unauthenticated(REFUSED_MESSAGE) from None

    def _claims(self, token: str) -> dict[str, Any]:
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise _Refused("not a token of acceptable size")
        key = self._key_for(jwt.get_unverified_header(token))
        settings = self.settings
        return jwt.decode(
            token,
            key.key,
            algorithms=[key.algorithm],
            audience=settings.audience,
            issuer=settings.issuer,
            leeway=settings.leeway_seconds,
            options={"require": ["exp", "sub"], "enforce_minimum_key_length": True},
        )

    def _key_for(self, header: dict[str, Any]) -> _VerificationKey:
        if "kid" not in header:
            if self._keyless is None:
                raise _Refused("no kid, and no single key to default to")
            return self._keyless
        kid = header["kid"]
        key = self.settings._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise _Refused("unknown kid")
        return key

    def _principal(self, claims: dict[str, Any]) -> Principal:
        tenant = claims.get(self.settings.tenant_claim)
        if not isinstance(tenant, str) or not TENANT_PATTERN.fullmatch(tenant):
            raise _Refused("bad tenant claim")
        subject = claims["sub"]
        if not _SUBJECT_PATTERN.fullmatch(subject):
            raise _Refused("bad sub claim")
        return Principal(
            tenant=tenant, subject=subject, roles=_roles(claims.get(self.settings.roles_claim))
        )


def _roles(value: object) -> frozenset[Role]:
    if value is None:
        return frozenset()
    names = value.split() if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise _Refused("bad roles claim")
    # Other scopes ("openid", another service's roles) share the claim; they grant nothing here.
    return frozenset(Role(name) for name in names if name in _ROLE_NAMES)


def mint_token(
    *,
    secret: bytes,
    tenant: str,
    roles: Iterable[Role | str],
    subject: str = DEFAULT_DEV_SUBJECT,
    expires_in_seconds: int = 3600,
    issuer: str | None = None,
    audience: str | None = None,
    tenant_claim: str = "tenant",
    roles_claim: str = "roles",
    clock: Callable[[], float] = time.time,
) -> str:
    """An HS256 development token that `TokenVerifier` accepts when configured with the same
    ``secret`` (and ``issuer``, ``audience`` and claim names). Not for production identities."""
    _hs256_key(secret)
    if not TENANT_PATTERN.fullmatch(tenant):
        raise InvalidParameterValue("tenant must be 1-128 characters of A-Z a-z 0-9 _ . : -")
    if not _SUBJECT_PATTERN.fullmatch(subject):
        raise InvalidParameterValue("subject must be 1-256 printable characters")
    try:
        role_names = sorted({Role(role).value for role in roles})
    except ValueError:
        raise InvalidParameterValue(
            f"roles must be among {', '.join(role.value for role in Role)}"
        ) from None
    if not 0 < expires_in_seconds <= MAX_DEV_TOKEN_SECONDS:
        raise InvalidParameterValue(
            f"expires_in_seconds must be between 1 and {MAX_DEV_TOKEN_SECONDS}"
        )
    now = int(clock())
    claims: dict[str, Any] = {
        "sub": subject,
        tenant_claim: tenant,
        roles_claim: role_names,
        "iat": now,
        "exp": now + expires_in_seconds,
    }
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")


# --- FastAPI --------------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, bearerFormat="JWT")
_VERIFIER_STATE = "vaultq_token_verifier"

# FastAPI reads these annotations at runtime, so their names must be importable here.
_Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def principal_dependency(verifier: TokenVerifier) -> Callable[..., Awaitable[Principal]]:
    """A dependency giving the caller verified by ``verifier``; raises `Unauthenticated`."""

    async def authenticated_principal(credentials: _Credentials) -> Principal:
        return _authenticate(verifier, credentials)

    return authenticated_principal


async def current_principal(request: Request, credentials: _Credentials) -> Principal:
    """A dependency giving the caller, verified by the verifier `install_auth` bound to the
    app. Routers can use it (and `require`) at import time, before any settings are read.

    Verifying a token is CPU work with no I/O (keys are loaded at start-up), so it runs on
    the event loop: a worker thread would cost more than the check itself."""
    verifier = getattr(request.app.state, _VERIFIER_STATE, None)
    if not isinstance(verifier, TokenVerifier):
        raise RuntimeError("no TokenVerifier on this app: call install_auth(app, verifier)")
    return _authenticate(verifier, credentials)


def require(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    """A dependency giving the caller if it holds ``permission``; raises `Forbidden`."""

    async def authorized_principal(
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> Principal:
        authorize(principal, permission)
        return principal

    return authorized_principal


def install_auth(app: FastAPI, verifier: TokenVerifier) -> None:
    """Bind ``verifier`` for `current_principal` and `require`, and answer `Unauthenticated`
    with 401 and ``WWW-Authenticate: Bearer``, `Forbidden` with 403 (problem details)."""
    setattr(app.state, _VERIFIER_STATE, verifier)
    app.add_exception_handler(Unauthenticated, _problem_response)
    app.add_exception_handler(Forbidden, _problem_response)


def _authenticate(
    verifier: TokenVerifier, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    if credentials is None:
        raise Unauthenticated(MISSING_MESSAGE)
    return verifier.verify(credentials.credentials)


async def _problem_response(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Unauthenticated | Forbidden)  # noqa: S101 - registered for these only
    unauthenticated = isinstance(exc, Unauthenticated)
    status, title = (401, "Unauthorized") if unauthenticated else (403, "Forbidden")
    return JSONResponse(
        {
            "type": "about:blank",
            "title": title,
            "status": status,
            "detail": exc.message,
            "code": exc.code,
        },
        status_code=status,
        media_type="application/problem+json",
        headers={"WWW-Authenticate": "Bearer"} if unauthenticated else None,
    )
