"""Provably fair randomness: seed hash chains and outcome draws that anyone can recompute.

A chain is generated from a secret random seed by hashing it again and again; it is used
backwards, so each round's ``seed_hash`` (sent when betting opens) is the previous round's
seed, and revealing a seed at settlement proves it was fixed before anyone bet. Every draw is
a pure function of (seed, salt, game): ``HMAC-SHA256(key=seed, msg="<game>:<salt>:<counter>")``,
where the salt is the chain's published terminating hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def sha256_hex(text: str) -> str:
    """The lowercase hex SHA-256 of ``text``'s ASCII bytes (a seed's ``seed_hash``)."""
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def generate_chain(length: int, secret: str | None = None) -> list[str]:
    """Seeds for ``length`` rounds, in the order they are used: ``chain[0]`` is the first round's.

    ``sha256_hex(chain[i]) == chain[i - 1]``; the terminating hash is ``sha256_hex(chain[0])``.
    """
    seed = secret or secrets.token_hex(32)
    backwards = [seed]
    for _ in range(length - 1):
        seed = sha256_hex(seed)
        backwards.append(seed)
    backwards.reverse()
    return backwards


class FairRng:
    """Deterministic random numbers from one round's seed and public salt.

    Each call consumes fresh HMAC output, so a handler may draw several values; the same
    (seed, salt, game) always yields the same sequence.
    """

    def __init__(self, seed: str, salt: str, game: str) -> None:
        self._key = seed.encode("ascii")
        self._prefix = f"{game}:{salt}:".encode("ascii")
        self._counter = 0
        self._buffer = ""

    def _hex(self, count: int) -> str:
        while len(self._buffer) < count:
            message = self._prefix + str(self._counter).encode()
            self._buffer += hmac.new(self._key, message, hashlib.sha256).hexdigest()
            self._counter += 1
        out, self._buffer = self._buffer[:count], self._buffer[count:]
        return out

    def unit(self) -> float:
        """A float in [0, 1) with 52 random bits (bustabit's crash draw)."""
        return int(self._hex(13), 16) / 2**52

    def below(self, n: int) -> int:
        """An unbiased integer in [0, n), by rejection sampling on 5-hex-digit draws (n <= 2**20)."""
        if not 0 < n <= 2**20:
            raise ValueError("n must be in 1..2**20")
        limit = (2**20 // n) * n
        while True:
            value = int(self._hex(5), 16)
            if value < limit:
                return value % n
