"""Secrets at rest (the team's MultiTEL password): Fernet, keyed by ENCRYPTION_KEY or derived from SECRET_KEY.

Deriving from SECRET_KEY keeps a fresh install working with one secret; set ENCRYPTION_KEY in production
so SECRET_KEY can be rotated without losing the stored passwords.
"""

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from flask import current_app


class DecryptionError(RuntimeError):
    """A stored secret can't be read with the current key (the key changed)."""


def _fernet() -> Fernet:
    key = current_app.config.get("ENCRYPTION_KEY")
    if key:
        return Fernet(key.encode())
    digest = hashlib.sha256(b"campaigns-encryption-v1:" + current_app.config["SECRET_KEY"].encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as error:
        raise DecryptionError("the stored password can't be decrypted; enter it again in Settings") from error
