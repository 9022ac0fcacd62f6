"""SipHash as lib/siphash.c computes it.  The mh scheduler hashes with hsiphash(), which on
64-bit kernels is SipHash-1-3 over a 128-bit key made of two unsigned longs."""

from __future__ import annotations

M64 = (1 << 64) - 1
_CONSTS = (0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573)


def _rol(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & M64


def siphash(data: bytes, k0: int, k1: int, c_rounds: int = 2, d_rounds: int = 4) -> int:
    """SipHash-c-d of `data` with key (k0, k1), the words read little-endian."""
    v0, v1, v2, v3 = (_CONSTS[0] ^ k0, _CONSTS[1] ^ k1, _CONSTS[2] ^ k0, _CONSTS[3] ^ k1)

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & M64
            v1 = _rol(v1, 13) ^ v0
            v0 = _rol(v0, 32)
            v2 = (v2 + v3) & M64
            v3 = _rol(v3, 16) ^ v2
            v0 = (v0 + v3) & M64
            v3 = _rol(v3, 21) ^ v0
            v2 = (v2 + v1) & M64
            v1 = _rol(v1, 17) ^ v2
            v2 = _rol(v2, 32)

    n = len(data)
    end = n - n % 8
    for i in range(0, end, 8):
        m = int.from_bytes(data[i:i + 8], "little")
        v3 ^= m
        rounds(c_rounds)
        v0 ^= m
    b = ((n & 0xFF) << 56) | int.from_bytes(data[end:], "little")
    v3 ^= b
    rounds(c_rounds)
    v0 ^= b
    v2 ^= 0xFF
    rounds(d_rounds)
    return v0 ^ v1 ^ v2 ^ v3


def hsiphash_u32(value: int, k0: int, k1: int) -> int:
    """hsiphash(&v, sizeof(u32), key) on a 64-bit little-endian kernel (a u32 result)."""
    return siphash((value & 0xFFFFFFFF).to_bytes(4, "little"), k0, k1, 1, 3) & 0xFFFFFFFF
