"""Signing keys encrypted at rest: AES-256-GCM under a key derived from a Secret's value.

The database holds only sealed private keys, so a database dump or a backup does not hand
out the power to mint tokens; the encryption secret (``MC_JWT_KEY_ENCRYPTION_KEY``) lives in a
Kubernetes Secret instead. Each sealed key is bound to its ``kid`` (associated data), so rows
cannot be swapped.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from common.tokens import PrivateKey

# Versioned: a new derivation would get a new label, never reinterpret old rows.
_DERIVATION_LABEL = b"microcommerce user_svc signing keys v1"
_NONCE_BYTES = 12  # GCM's standard nonce; random per seal, 2^-32 collision odds after 2^32 keys


class UndecryptableKey(RuntimeError):
    """A stored key that the configured secret cannot open (wrong secret, or tampered row)."""


class KeyEncryption:
    """Seals and opens private signing keys with one secret."""

    def __init__(self, secret: str) -> None:
        # HKDF turns any long random string (a Secret's value) into exactly 256 key bits.
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_DERIVATION_LABEL).derive(
            secret.encode()
        )
        self._aead = AESGCM(key)

    def seal(self, private_key: PrivateKey, kid: str) -> bytes:
        """The key as nonce + ciphertext of its PKCS#8 DER form."""
        der = private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, der, kid.encode())

    def open(self, sealed: bytes, kid: str) -> PrivateKey:
        """The private key ``seal`` sealed for ``kid``."""
        nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        try:
            der = self._aead.decrypt(nonce, ciphertext, kid.encode())
        except InvalidTag:
            raise UndecryptableKey(
                f"signing key {kid} does not open with MC_JWT_KEY_ENCRYPTION_KEY: the secret "
                "differs from the one that sealed it, or the row was altered"
            ) from None
        loaded = serialization.load_der_private_key(der, password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey) or not isinstance(
            loaded.curve, ec.SECP256R1
        ):
            raise UndecryptableKey(f"signing key {kid} is not a P-256 key")
        return loaded
