"""Endpoint secrets and Standard Webhooks signatures.

Secrets are ``whsec_`` + base64 of 32 random bytes (Standard Webhooks, "Signature
scheme"), sealed at rest with the kernel's AES-GCM box. A message is signed with the
``standardwebhooks`` library; during a rotation's grace period the previous secret
signs too and both signatures go, space-separated, into ``webhook-signature``, so a
receiver holding either secret verifies the message.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import datetime

from standardwebhooks import Webhook

from brokerkernel.kernel.security import SecretBox

SECRET_BYTES = 32
BOX_PURPOSE = "webhook-secrets"


def new_secret() -> str:
    """A fresh ``whsec_`` secret (32 random bytes, standard base64)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


class Signer:
    """Signs messages with sealed secrets; opened secrets are kept per sealed value."""

    def __init__(self, box: SecretBox) -> None:
        self._box = box
        self._opened: dict[str, Webhook] = {}

    def seal(self, secret: str) -> str:
        return self._box.seal(secret)

    def _webhook(self, sealed: str) -> Webhook:
        found = self._opened.get(sealed)
        if found is None:
            found = self._opened[sealed] = Webhook(self._box.open(sealed))
        return found

    def headers(
        self, message_id: str, sent_at: datetime, body: str, sealed: Sequence[str]
    ) -> dict[str, str]:
        """``webhook-id``, ``webhook-timestamp`` (Unix seconds of ``sent_at``) and
        ``webhook-signature`` (one ``v1,<base64>`` per secret, space-separated)."""
        signatures = " ".join(self._webhook(s).sign(message_id, sent_at, body) for s in sealed)
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signatures,
            "content-type": "application/json",
        }
