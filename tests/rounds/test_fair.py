"""Seed chains and the fair RNG: verifiable, deterministic, unbiased in range."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from server.rounds.fair import FairRng, generate_chain, sha256_hex


def test_chain_runs_backwards_through_sha256() -> None:
    chain = generate_chain(50, secret="ab" * 32)
    assert chain[-1] == "ab" * 32
    for earlier, later in itertools.pairwise(chain):
        assert sha256_hex(later) == earlier  # revealing a seed proves every earlier seed_hash
    assert all(len(seed) == 64 and seed == seed.lower() for seed in chain)


def test_rng_is_a_pure_function_of_seed_salt_and_game() -> None:
    a = FairRng("11" * 32, "salt", "dice")
    b = FairRng("11" * 32, "salt", "dice")
    assert [a.below(10_000) for _ in range(20)] == [b.below(10_000) for _ in range(20)]
    other_game = FairRng("11" * 32, "salt", "crash")
    assert [FairRng("11" * 32, "salt", "dice").unit() for _ in range(1)] != [other_game.unit()]


def test_below_stays_in_range_and_covers_it() -> None:
    rng = FairRng("22" * 32, "s", "roulette")
    counts = Counter(rng.below(37) for _ in range(37_000))
    assert set(counts) == set(range(37))
    assert max(counts.values()) < 1_300 and min(counts.values()) > 700
    with pytest.raises(ValueError):
        rng.below(0)
    units = [rng.unit() for _ in range(1000)]
    assert all(0 <= u < 1 for u in units)
