"""Secrets at rest: AES-GCM for personal data, keyed hashes for looking it up, HMAC signatures.

Two keys: `secret_key` signs (tokens, verification codes, check-in scenes); `data_key` encrypts.
When a deployment sets neither, they are created once under the data directory so a development
install keeps its data readable across restarts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE_BYTES = 12


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Crypto:
    def __init__(self, secret_key: bytes, data_key: bytes) -> None:
        if len(data_key) != 32:
            raise ValueError("data_key must be 32 bytes (base64url of 32 random bytes)")
        self.secret_key = secret_key
        self._aead = AESGCM(data_key)
        self._lookup_key = hmac.new(secret_key, b"ikepu-lookup", hashlib.sha256).digest()

    def encrypt(self, plaintext: str, context: str = "") -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return _b64e(nonce + sealed)

    def decrypt(self, token: str, context: str = "") -> str:
        raw = _b64d(token)
        return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode()).decode()

    def lookup_hash(self, value: str) -> str:
        """Deterministic keyed hash: equal values match, but the value cannot be read back."""
        return hmac.new(self._lookup_key, value.encode(), hashlib.sha256).hexdigest()

    def sign(self, message: bytes, purpose: str, length: int = 32) -> bytes:
        key = hmac.new(self.secret_key, purpose.encode(), hashlib.sha256).digest()
        return hmac.new(key, message, hashlib.sha256).digest()[:length]

    def verify(self, message: bytes, signature: bytes, purpose: str) -> bool:
        return hmac.compare_digest(self.sign(message, purpose, len(signature)), signature)


def mask_phone(phone: str) -> str:
    """138****0000: the first three and the last four digits stay visible."""
    digits = phone.strip()
    if len(digits) < 7:
        return "*" * len(digits)
    return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]


def mask_id_number(number: str) -> str:
    """4101**********1234: the first four and the last four characters stay visible (one
    each of a short number)."""
    keep = 4 if len(number) > 8 else 1
    if len(number) <= 2 * keep:
        return "*" * len(number)
    return number[:keep] + "*" * (len(number) - 2 * keep) + number[-keep:]


def load_or_create_keys(
    secret_key: str | None, data_key: str | None, data_dir: str
) -> tuple[bytes, bytes]:
    keys = Path(data_dir) / "keys"
    return (
        _key(secret_key, keys / "secret_key"),
        _key(data_key, keys / "data_key"),
    )


def _key(configured: str | None, path: Path) -> bytes:
    if configured:
        return _b64d(configured)
    if path.exists():
        return _b64d(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(_b64e(fresh))
    return fresh
