"""Group commit's rules without a database: batching, and one bad request failing only itself."""

from __future__ import annotations

import asyncio

import pytest

from server.db.groupcommit import GroupCommit


class Poisoned(Exception):
    """The batch held a request the store cannot take."""


class Unavailable(Exception):
    """The store is down: every request of a batch fails alike."""


class Store:
    """Commits a batch unless it holds a negative request (the whole batch then fails, as a
    PostgreSQL transaction does); records every batch it was handed."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.down = False

    async def commit(self, batch: list[int]) -> list[int | Exception]:
        self.batches.append(list(batch))
        if self.down:
            raise Unavailable("store down")
        if any(n < 0 for n in batch):
            raise Poisoned(f"cannot store {min(batch)}")
        return [n * 10 for n in batch]


def group(store: Store) -> GroupCommit[int, int]:
    return GroupCommit(store.commit, name="test", max_batch=100, max_wait=0.001, concurrency=1,
                       shutdown_error=lambda: RuntimeError("closed"), expected=(Unavailable,))  # fmt: skip


async def test_one_poisoned_request_fails_alone_and_its_neighbours_commit() -> None:
    store = Store()
    commits = group(store)
    commits.start()
    try:
        requests = [1, 2, 3, -4, 5, 6, 7, 8]
        results = await asyncio.gather(*(commits.submit(n) for n in requests), return_exceptions=True)
    finally:
        await commits.close()
    assert [r if not isinstance(r, Exception) else type(r).__name__ for r in results] == [
        10, 20, 30, "Poisoned", 50, 60, 70, 80
    ]  # fmt: skip
    assert store.batches[0] == requests  # one shared batch first, then halves down to the culprit
    assert [-4] in store.batches
    assert len(store.batches) <= 1 + 2 * 3  # log2(8) levels of halves


async def test_two_poisoned_requests_each_get_their_error() -> None:
    store = Store()
    commits = group(store)
    commits.start()
    try:
        results = await asyncio.gather(*(commits.submit(n) for n in [-1, 2, 3, 4, 5, -6]), return_exceptions=True)
    finally:
        await commits.close()
    assert [type(r).__name__ if isinstance(r, Exception) else r for r in results] == [
        "Poisoned", 20, 30, 40, 50, "Poisoned"
    ]  # fmt: skip


async def test_a_failure_of_the_whole_store_is_not_bisected() -> None:
    store = Store()
    store.down = True
    commits = group(store)
    commits.start()
    try:
        results = await asyncio.gather(*(commits.submit(n) for n in range(6)), return_exceptions=True)
    finally:
        await commits.close()
    assert all(isinstance(r, Unavailable) for r in results)
    assert len(store.batches) == 1


@pytest.mark.parametrize("size", [1, 2, 3, 17])
async def test_every_batch_size_isolates_the_culprit(size: int) -> None:
    store = Store()
    commits = group(store)
    commits.start()
    requests = list(range(1, size + 1))
    requests[size // 2] = -1
    try:
        results = await asyncio.gather(*(commits.submit(n) for n in requests), return_exceptions=True)
    finally:
        await commits.close()
    failed = [i for i, r in enumerate(results) if isinstance(r, Exception)]
    assert failed == [size // 2]
