"""The ``synthetic_hotkey`` of a prop account: a stable SS58 address derived from the
account id.

The seed's prop accounts carry a ``synthetic_hotkey`` (``"5F..."``), the SS58 form of
a Substrate (Bittensor) sr25519 public key that networks key sub-accounts by. The
kernel holds no such key, so it derives a synthetic one: the 32-byte BLAKE2b digest of
``"brokerkernel:prop:<account id>"`` encoded as an SS58 address with the generic
Substrate prefix 42 (which is why it starts with ``5``). Nobody holds a secret key
for it: it identifies the account and can sign nothing.

SS58 (Substrate docs, "SS58 address format"): base58 of ``prefix || public key ||
checksum``, the checksum being the first two bytes of
``BLAKE2b-512("SS58PRE" || prefix || public key)``.
"""

from __future__ import annotations

import hashlib
from typing import Final

BASE58_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
GENERIC_SUBSTRATE_PREFIX: Final = 42


def ss58_encode(public_key: bytes, prefix: int = GENERIC_SUBSTRATE_PREFIX) -> str:
    """The SS58 address of a 32-byte ``public_key`` under a simple (< 64) ``prefix``;
    ValueError for another key length or prefix."""
    if len(public_key) != 32 or not 0 <= prefix < 64:
        raise ValueError("SS58 needs a 32-byte public key and a prefix below 64")
    payload = bytes([prefix]) + public_key
    checksum = hashlib.blake2b(b"SS58PRE" + payload, digest_size=64).digest()[:2]
    data = payload + checksum
    number = int.from_bytes(data, "big")
    digits = ""
    while number:
        number, remainder = divmod(number, 58)
        digits = BASE58_ALPHABET[remainder] + digits
    zeros = len(data) - len(data.lstrip(b"\0"))
    return BASE58_ALPHABET[0] * zeros + digits


def synthetic_hotkey(account_id: str) -> str:
    """The synthetic SS58 hotkey of prop account ``account_id`` (see the module doc)."""
    digest = hashlib.blake2b(f"brokerkernel:prop:{account_id}".encode(), digest_size=32).digest()
    return ss58_encode(digest)
