"""Endpoint secrets and Standard Webhooks signatures.

Secrets are ``whsec_`` + base64 of 32 random bytes (Standard Webhooks, "Signature
scheme"), sealed at rest with the kernel's AES-GCM box. A message's signature is that
scheme's ``v1``: base64 of HMAC-SHA256, keyed with the secret's bytes, over
``{webhook-id}.{webhook-timestamp}.{body}`` (what the ``standardwebhooks`` library's
``Webhook.sign`` computes; the tests verify every message with that library). Each
secret is opened and keyed once: a message copies the keyed HMAC (about 2 us a
signature, against 3.6 us for ``Webhook.sign``, which re-keys and re-encodes). During
a rotation's grace period the previous secret signs too and both signatures go,
space-separated, into ``webhook-signature``, so a receiver holding either secret
verifies the message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

from brokerkernel.kernel.security import SecretBox

SECRET_BYTES = 32
SECRET_PREFIX = "whsec_"  # noqa: S105 (the scheme's prefix, not a secret)
BOX_PURPOSE = "webhook-secrets"


def new_secret() -> str:
    """A fresh ``whsec_`` secret (32 random bytes, standard base64)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


class Signer:
    """Signs messages with sealed secrets; each is opened and keyed once."""

    def __init__(self, box: SecretBox) -> None:
        self._box = box
        self._keyed: dict[str, hmac.HMAC] = {}

    def seal(self, secret: str) -> str:
        return self._box.seal(secret)

    def _key(self, sealed: str) -> hmac.HMAC:
        found = self._keyed.get(sealed)
        if found is None:
            secret = self._box.open(sealed).removeprefix(SECRET_PREFIX)
            found = self._keyed[sealed] = hmac.new(
                base64.b64decode(secret), digestmod=hashlib.sha256
            )
        return found

    def headers(
        self, message_id: str, timestamp: int, body: bytes, sealed: Sequence[str]
    ) -> dict[str, str]:
        """``webhook-id``, ``webhook-timestamp`` (``timestamp``: Unix seconds) and
        ``webhook-signature`` (one ``v1,<base64>`` per secret, space-separated) of
        ``body`` (the exact bytes sent), and ``content-type``."""
        signed = f"{message_id}.{timestamp}.".encode()
        signatures = []
        for secret in sealed:
            mac = self._key(secret).copy()
            mac.update(signed)
            mac.update(body)
            signatures.append("v1," + base64.b64encode(mac.digest()).decode())
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(signatures),
            "content-type": "application/json",
        }
