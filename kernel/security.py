"""Password hashing (argon2id) and access/refresh tokens (JWT HS256).

Token lifetimes follow the seed (section 2): access 15 minutes, refresh 7 days.
Customer tokens carry ``type: "customer"``, ``login`` (primary account), ``logins``,
``compliance_status`` and ``force_password_change``; staff tokens ``type: "user"``
and ``role``/``permissions``. Token times are wall-clock UTC: they protect real
sessions, whatever market time a replay is at.
"""

from __future__ import annotations

import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ACCESS_TTL_S = 15 * 60
REFRESH_TTL_S = 7 * 24 * 3600
ALGORITHM = "HS256"

_hasher = PasswordHasher()
# A real hash to verify against when the user does not exist (equal-time answers).
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class TokenError(Exception):
    """``detail`` is the exact seed body text: "Token expired" or "Invalid token"."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Constant-time check; also spends the time when there is no hash to check."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


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


class TokenIssuer:
    """Issues and verifies HS256 tokens with one signing key."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def issue(self, subject: str, claims: dict[str, Any], purpose: str = "access") -> str:
        now = int(time.time())
        ttl = ACCESS_TTL_S if purpose == "access" else REFRESH_TTL_S
        payload = {
            **claims,
            "sub": subject,
            "iat": now,
            "exp": now + ttl,
            "jti": str(uuid.uuid4()),
            "token_use": purpose,
        }
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str, purpose: str = "access") -> dict[str, Any]:
        """The token's claims; raises TokenError("Token expired" | "Invalid token")."""
        try:
            claims: dict[str, Any] = jwt.decode(token, self._secret, algorithms=[ALGORITHM])
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("Token expired") from exc
        except jwt.PyJWTError as exc:
            raise TokenError("Invalid token") from exc
        if claims.get("token_use") != purpose:
            raise TokenError("Invalid token")
        return claims
