"""Pin tokens as the README documents them, written independently of the Rust code with Python's
hmac and hashlib, so the tests can mint tokens for Envoy and check the filter's golden vectors."""

import base64
import hashlib
import hmac

VERSION = "v1"


def new_key(seed: bytes) -> bytes:
    """A 32-byte key derived from a seed, so tests can name their keys."""
    return hashlib.sha256(b"canary-split test key " + seed).digest()


def encode_keys(*keys: bytes) -> str:
    """The value of the keys' environment variable: standard base64, comma-separated."""
    return ",".join(base64.b64encode(key).decode() for key in keys)


def mint(key: bytes, host: str, release: str, expiry: int) -> str:
    """`v1.<release>.<expiry>.<mac>`, the MAC over `v1.<host>.<release>.<expiry>`."""
    message = f"{VERSION}.{host}.{release}.{expiry}".encode()
    mac = hmac.new(key, message, hashlib.sha256).digest()
    return f"{VERSION}.{release}.{expiry}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"

