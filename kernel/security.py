"""Password hashing (argon2id), access tokens (JWT HS256) and secret handling.

Token lifetimes follow the seed (section 2): access 15 minutes; refresh tokens are
opaque, rotated on use and last 7 days (:mod:`brokerkernel.kernel.identity.sessions`).
Customer tokens carry ``type: "customer"``, ``login`` (primary account), ``logins``,
``compliance_status`` and ``force_password_change``; staff tokens ``type: "user"``,
``role`` and the role's ``permissions``; partner tokens ``type: "partner"`` and
``scope``. Every token carries ``sid``, its session, so it can be revoked at once.

Token and session times are wall-clock UTC (:class:`WallClock`): they protect real
sessions, whatever market time a replay is at.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ACCESS_TTL_S = 15 * 60
REFRESH_TTL_S = 7 * 24 * 3600
ALGORITHM = "HS256"
#: Password length rule of the seed (section 2, "Password must be 8-72 characters").
PASSWORD_MIN, PASSWORD_MAX = 8, 72

_hasher = PasswordHasher()
# A real hash to verify against when the user does not exist (equal-time answers).
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class TokenError(Exception):
    """``detail`` is the exact seed body text: "Token expired" or "Invalid token"."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class WallClock:
    """Wall time for security decisions (token expiry, sessions, one-time tokens).

    ``offset_s`` is added to the system clock; drills and tests move time with it.
    """

    def __init__(self) -> None:
        self.offset_s = 0.0

    def time(self) -> float:
        """Seconds since the Unix epoch (UTC)."""
        return time.time() + self.offset_s

    def now(self) -> datetime:
        """The current wall time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.time(), tz=UTC)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Constant-time check; also spends the time when there is no hash to check."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


async def hash_password_async(password: str) -> str:
    """:func:`hash_password` in a worker thread: argon2 costs tens of milliseconds by
    design and releases the GIL, so the event loop keeps serving other requests."""
    return await asyncio.to_thread(hash_password, password)


async def verify_password_async(password_hash: str | None, password: str) -> bool:
    """:func:`verify_password` in a worker thread (see :func:`hash_password_async`)."""
    return await asyncio.to_thread(verify_password, password_hash, password)


def password_needs_rehash(password_hash: str) -> bool:
    """Whether a stored hash uses weaker argon2 parameters than the current ones."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


def digest(secret: str) -> str:
    """SHA-256 hex of a high-entropy secret (refresh tokens, reset tokens, client
    secrets): what is stored instead of the secret and looked up by."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same_digest(secret: str, expected_hex: str) -> bool:
    """Timing-safe comparison of ``digest(secret)`` with a stored digest."""
    return hmac.compare_digest(digest(secret), expected_hex)


def load_or_create_secret(configured: str, var_dir: Path) -> str:
    """The configured signing key, or a random one persisted under ``var_dir``."""
    if configured:
        return configured
    path = var_dir / "jwt_secret"
    if path.exists():
        return path.read_text().strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.write_text(secret)
    path.chmod(0o600)
    return secret


def derive_key(secret: str, purpose: str) -> bytes:
    """A 32-byte key for ``purpose`` derived from the kernel secret (HKDF-SHA256)."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=f"brokerkernel:{purpose}".encode()
    ).derive(secret.encode())


class SecretBox:
    """AES-256-GCM encryption of small secrets at rest (e.g. TOTP seeds).

    The key is derived from the kernel secret for one ``purpose``; sealed values are
    ``base64url(nonce || ciphertext)``. Raises ``cryptography.exceptions.InvalidTag``
    when a value was tampered with or sealed under another key.
    """

    def __init__(self, secret: str, purpose: str) -> None:
        self._aead = AESGCM(derive_key(secret, purpose))
        self._aad = purpose.encode()

    def seal(self, plaintext: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), self._aad)
        return base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, sealed: str) -> str:
        raw = base64.urlsafe_b64decode(sealed.encode())
        return self._aead.decrypt(raw[:12], raw[12:], self._aad).decode()


class TokenIssuer:
    """Issues and verifies HS256 access tokens with one signing key.

    ``wall`` is the clock of ``iat``/``exp``; ``keyed_digest`` hashes low-entropy
    one-time secrets (2FA backup codes) with a key derived from the same secret, so a
    leaked table cannot be brute-forced offline. The claims of the last
    ``memo_size`` tokens whose signature verified are remembered (a client sends the
    same token for up to 15 minutes); expiry is still checked on every call.
    """

    def __init__(self, secret: str, wall: WallClock | None = None, memo_size: int = 4096) -> None:
        self._secret = secret
        self._pepper = derive_key(secret, "keyed-digest")
        self.wall = wall or WallClock()
        self._memo: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._memo_size = memo_size

    def box(self, purpose: str) -> SecretBox:
        """An AES-GCM box keyed for ``purpose`` (see :class:`SecretBox`)."""
        return SecretBox(self._secret, purpose)

    def keyed_digest(self, value: str) -> str:
        """HMAC-SHA256 hex of ``value`` under the kernel's digest key."""
        return hmac.new(self._pepper, value.encode(), hashlib.sha256).hexdigest()

    def issue(self, subject: str, claims: dict[str, Any], ttl_s: int = ACCESS_TTL_S) -> str:
        """A signed token for ``subject`` with ``claims``, valid ``ttl_s`` seconds."""
        now = int(self.wall.time())
        payload = {**claims, "sub": subject, "iat": now, "exp": now + ttl_s}
        payload["jti"] = str(uuid.uuid4())
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims (a copy); raises TokenError("Token expired" | "Invalid token")."""
        claims = self._memo.get(token)
        if claims is None:
            claims = self._decode(token)
            self._memo[token] = claims
            if len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)
        if claims["exp"] <= self.wall.time():
            raise TokenError("Token expired")
        return dict(claims)

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "require": ["exp", "iat", "sub"],
                },
            )
        except jwt.PyJWTError as exc:
            raise TokenError("Invalid token") from exc
        if not isinstance(claims.get("exp"), int):
            raise TokenError("Invalid token")
        return claims
