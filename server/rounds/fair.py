"""Provably fair randomness: seed hash chains and outcome draws that anyone can recompute.

A chain is generated from a secret random seed by hashing it again and again; it is used
backwards, so each round's ``seed_hash`` (sent when betting opens) is the previous round's
seed, and revealing a seed at settlement proves it was fixed before anyone bet. Every draw is
a pure function of (seed, salt, game): ``HMAC-SHA256(key=seed, msg="<game>:<salt>:<counter>")``.
The salt is the chain's, fixed only after the chain was committed to (:func:`chain_salt`), so the
operator cannot pick a chain for the salt it will meet.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


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


def chain_salt(terminating_hash: str, client_seeds: Sequence[str]) -> str:
    """The salt of every round of a chain: ``sha256_hex("<terminating_hash>:" + ":".join(client_seeds))``.

    ``client_seeds`` are the ``client_seed`` of each bet accepted in the chain's first round, in bet id
    order (none: ``sha256_hex("<terminating_hash>:")``). Players choose them after the chain's terminating
    hash was published (it is that round's ``seed_hash``), so the salt was unknown when the operator
    committed to the chain. A client seed is printable ASCII without ``:``, so the joined text reads back
    as one list only.
    """
    return sha256_hex(f"{terminating_hash}:" + ":".join(client_seeds))


class FairRng:
    """Deterministic random numbers from one round's seed and public salt.

    The draws read one stream of hex digits: the lowercase hex digests of
    ``HMAC-SHA256(key=seed, msg="<game>:<salt>:<counter>")`` (seed, game and salt as ASCII bytes,
    ``counter`` in decimal from 0) concatenated in counter order, 64 digits per block. A bet's own
    stream (``bet_id`` given) hashes ``msg="<game>:<salt>:bet:<bet_id>:<counter>"`` instead. Each draw
    takes the next digits it needs from the front of the stream, as a big-endian hex integer;
    digits a draw leaves over stay for the next one (a new block is hashed only when the stream
    runs short). So the same (seed, salt, game) and the same calls always give the same values,
    and a handler may draw as many as it needs.
    """

    def __init__(self, seed: str, salt: str, game: str, bet_id: int | None = None) -> None:
        self._seed, self._salt, self._game = seed, salt, game
        self._key = seed.encode("ascii")
        stream = "" if bet_id is None else f"bet:{bet_id}:"
        self._prefix = f"{game}:{salt}:{stream}".encode("ascii")
        self._counter = 0
        self._buffer = ""

    def for_bet(self, bet_id: int) -> FairRng:
        """The stream of one bet of this round: the same seed, salt and game, ``bet:<bet_id>:`` before
        the counter. Independent of the round's stream and of every other bet's."""
        return FairRng(self._seed, self._salt, self._game, bet_id)

    def _hex(self, count: int) -> str:
        while len(self._buffer) < count:
            message = self._prefix + str(self._counter).encode()
            self._buffer += hmac.new(self._key, message, hashlib.sha256).hexdigest()
            self._counter += 1
        out, self._buffer = self._buffer[:count], self._buffer[count:]
        return out

    def unit(self) -> float:
        """A float in [0, 1) with 52 random bits (bustabit's crash draw).

        Takes the next 13 hex digits as an integer ``v`` (0 <= v < 2**52) and returns ``v / 2**52``.
        """
        return int(self._hex(13), 16) / 2**52

    def below(self, n: int) -> int:
        """An unbiased integer in [0, n), for 1 <= n <= 2**20, by rejection sampling.

        Takes the next 5 hex digits as an integer ``v`` (0 <= v < 2**20); with
        ``limit = (2**20 // n) * n``, returns ``v % n`` if ``v < limit``, else discards ``v`` and
        takes the next 5 digits, until one is below ``limit``.
        """
        if not 0 < n <= 2**20:
            raise ValueError("n must be in 1..2**20")
        limit = (2**20 // n) * n
        while True:
            value = int(self._hex(5), 16)
            if value < limit:
                return value % n

    def weighted(self, weights: Sequence[int]) -> int:
        """An index ``i`` of ``weights``, drawn with probability ``weights[i] / sum(weights)``.

        The weights are integers > 0 summing to at most 2**20. Draws ``r = below(sum(weights))``
        (exactly as :meth:`below`, so unbiased) and returns the first ``i`` whose running total
        ``weights[0] + ... + weights[i]`` exceeds ``r``.
        """
        if not weights:
            raise ValueError("weights must not be empty")
        for weight in weights:
            if not isinstance(weight, int) or isinstance(weight, bool) or weight <= 0:
                raise ValueError(f"weights must be integers > 0, got {weight!r}")
        total = sum(weights)
        if total > 2**20:
            raise ValueError(f"weights must sum to at most 2**20, got {total}")
        r = self.below(total)
        running = 0
        for index, weight in enumerate(weights):
            running += weight
            if r < running:
                return index
        raise AssertionError("unreachable: r < total")  # pragma: no cover

    def shuffle(self, items: Sequence[T]) -> list[T]:
        """A new list with ``items`` in a uniformly random order (``items`` is left as it was).

        Fisher-Yates from the end: copy ``items`` to ``out``; for ``i`` from ``len(out) - 1`` down to
        1, draw ``j = below(i + 1)`` and swap ``out[i]`` and ``out[j]``. At most 2**20 items.
        """
        out = list(items)
        for i in range(len(out) - 1, 0, -1):
            j = self.below(i + 1)
            out[i], out[j] = out[j], out[i]
        return out
