"""Signing keys sealed at rest: only the same secret and the same kid open them."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from common.tokens import key_id, new_key
from user_svc.key_encryption import KeyEncryption, UndecryptableKey

SECRET = "a-secret-from-a-kubernetes-secret-0123456789"


def test_a_sealed_key_opens_to_the_same_key() -> None:
    private_key = new_key()
    kid = key_id(private_key.public_key())

    opened = KeyEncryption(SECRET).open(KeyEncryption(SECRET).seal(private_key, kid), kid)

    assert key_id(opened.public_key()) == kid


def test_sealed_bytes_hold_neither_the_pem_nor_the_der_key() -> None:
    private_key = new_key()
    der = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )

    sealed = KeyEncryption(SECRET).seal(private_key, "kid-1")

    assert b"PRIVATE KEY" not in sealed
    assert der not in sealed
    assert der[:16] not in sealed


def test_another_secret_cannot_open_a_key_and_says_which_setting() -> None:
    sealed = KeyEncryption(SECRET).seal(new_key(), "kid-1")

    with pytest.raises(UndecryptableKey, match="MC_JWT_KEY_ENCRYPTION_KEY"):
        KeyEncryption(SECRET + "x").open(sealed, "kid-1")


def test_a_sealed_key_moved_to_another_kid_does_not_open() -> None:
    sealed = KeyEncryption(SECRET).seal(new_key(), "kid-1")

    with pytest.raises(UndecryptableKey):
        KeyEncryption(SECRET).open(sealed, "kid-2")


def test_every_seal_uses_a_fresh_nonce() -> None:
    private_key = new_key()
    encryption = KeyEncryption(SECRET)

    assert encryption.seal(private_key, "kid-1") != encryption.seal(private_key, "kid-1")
