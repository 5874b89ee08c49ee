"""The sticky hash as the README documents it, written independently of the Rust code, so the
end-to-end tests can predict which variant Envoy must pick for a given key."""

FNV_OFFSET_BASIS = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK64 = (1 << 64) - 1
BUCKETS = 10_000


def _fmix64(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & MASK64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & MASK64
    return h ^ (h >> 33)


def bucket(salt: bytes, key: bytes) -> int:
    h = FNV_OFFSET_BASIS
    for byte in salt + b"\xff" + key:
        h = ((h ^ byte) * FNV_PRIME) & MASK64
    return (_fmix64(h) * BUCKETS) >> 64


def is_canary(salt: bytes, key: bytes, canary_weight_percent: float) -> bool:
    return bucket(salt, key) < round(canary_weight_percent * 100)


if __name__ == "__main__":
    for salt, key in [
        (b"sklearn-predictor.example.com", b"user-1"),
        (b"sklearn-predictor.example.com", b"user-2"),
        (b"sklearn-predictor.example.com", b"alice"),
        (b"sklearn-predictor.example.com", b""),
        (b"shop.example.com", b"user-1"),
        (b"", b"user-1"),
        (b"shop.example.com", b"10.1.2.3"),
        (b"shop.example.com", b"\xff\xfe\x00binary"),
    ]:
        print(salt, key, bucket(salt, key))
