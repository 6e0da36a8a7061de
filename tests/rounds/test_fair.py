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


def test_weighted_draws_each_index_in_proportion_to_its_weight() -> None:
    weights = [1, 2, 3, 4]
    a, b = FairRng("33" * 32, "s", "slots"), FairRng("33" * 32, "s", "slots")
    assert [a.weighted(weights) for _ in range(50)] == [b.weighted(weights) for _ in range(50)]
    rng = FairRng("44" * 32, "s", "slots")
    counts = Counter(rng.weighted(weights) for _ in range(20_000))
    assert set(counts) == {0, 1, 2, 3}
    for index, weight in enumerate(weights):  # expected 2,000 per unit of weight; a sd is at most ~70
        assert abs(counts[index] - 2_000 * weight) < 300, counts
    assert FairRng("44" * 32, "s", "slots").weighted([7]) == 0


def test_weighted_is_below_over_the_total_and_the_running_sums() -> None:
    weights = [5, 1, 10]
    draws = FairRng("55" * 32, "s", "g")
    totals = FairRng("55" * 32, "s", "g")
    for _ in range(200):
        r = totals.below(16)
        assert draws.weighted(weights) == (0 if r < 5 else 1 if r < 6 else 2)


@pytest.mark.parametrize("weights", [[], [1, 0], [3, -1], [1.5, 2], [True, 1], [2**20, 1]])
def test_weighted_refuses_bad_weights(weights: list[int]) -> None:
    with pytest.raises(ValueError):
        FairRng("66" * 32, "s", "g").weighted(weights)


def test_shuffle_is_a_deterministic_permutation_and_leaves_its_input_alone() -> None:
    items = list(range(52))
    shuffled = FairRng("77" * 32, "s", "cards").shuffle(items)
    assert sorted(shuffled) == items and shuffled != items and items == list(range(52))
    assert FairRng("77" * 32, "s", "cards").shuffle(items) == shuffled
    assert FairRng("78" * 32, "s", "cards").shuffle(items) != shuffled
    # Fisher-Yates from the end with below(i + 1): recomputable by hand
    rng, expected = FairRng("77" * 32, "s", "cards"), list(items)
    for i in range(51, 0, -1):
        j = rng.below(i + 1)
        expected[i], expected[j] = expected[j], expected[i]
    assert expected == shuffled
    assert FairRng("77" * 32, "s", "cards").shuffle([]) == [] and FairRng("7" * 64, "s", "c").shuffle(["x"]) == ["x"]


def test_shuffle_is_uniform_over_the_orders_of_three() -> None:
    rng = FairRng("88" * 32, "s", "cards")
    counts = Counter(tuple(rng.shuffle("abc")) for _ in range(6_000))
    assert len(counts) == 6 and all(800 < n < 1_200 for n in counts.values()), counts


def test_draws_read_the_hmac_stream_as_documented() -> None:
    import hashlib
    import hmac

    seed, salt, game = "99" * 32, "salt", "g"
    stream = "".join(
        hmac.new(seed.encode(), f"{game}:{salt}:{counter}".encode(), hashlib.sha256).hexdigest() for counter in range(2)
    )
    rng = FairRng(seed, salt, game)
    assert rng.unit() == int(stream[:13], 16) / 2**52
    value = int(stream[13:18], 16)  # below(2**20) never rejects: the 5 digits themselves
    assert rng.below(2**20) == value
    assert rng.below(1) == 0 and rng.unit() == int(stream[23:36], 16) / 2**52  # below(1) took digits 18..22
