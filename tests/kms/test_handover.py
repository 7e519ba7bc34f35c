"""HandOverEraser: every submitted key ID erased exactly once, in shared transactions."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence

import anyio.to_thread

from qkdtwin.kms.handover import HandOverEraser


async def _to_thread(fn: Callable[[], None]) -> None:
    await anyio.to_thread.run_sync(fn)


class _Recorder:
    """An eraser that records its calls and takes ``delay_s`` per call (a slow transaction)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()

    def __call__(self, key_ids: Sequence[str]) -> int:
        time.sleep(self.delay_s)
        with self.lock:
            self.calls.append(list(key_ids))
        return len(key_ids)


def test_idle_submit_erases_at_once() -> None:
    eraser = HandOverEraser(_to_thread)
    rec = _Recorder()

    async def main() -> None:
        await eraser.submit(rec, ["k1", "k2"])

    asyncio.run(main())
    assert rec.calls == [["k1", "k2"]]  # returned only once erased
    assert eraser.idle
    assert eraser.transactions == 1


def test_concurrent_submits_share_transactions_and_lose_nothing() -> None:
    eraser = HandOverEraser(_to_thread)
    rec = _Recorder(delay_s=0.02)
    ids = [[f"k{i}-{j}" for j in range(3)] for i in range(50)]

    async def main() -> None:
        await asyncio.gather(*(eraser.submit(rec, chunk) for chunk in ids))
        while not eraser.idle:  # callers that joined a running flush return early
            await asyncio.sleep(0.005)

    asyncio.run(main())
    erased = [k for call in rec.calls for k in call]
    assert sorted(erased) == sorted(k for chunk in ids for k in chunk)  # each once, none lost
    assert eraser.handed_over == 150
    # 50 responses, one 20 ms transaction at a time: the first flush takes one, the next
    # the 49 that queued behind it
    assert len(rec.calls) <= 3 < 50


def test_ids_added_during_a_flush_are_taken_by_that_flush() -> None:
    eraser = HandOverEraser(_to_thread)
    started = threading.Event()
    release = threading.Event()
    calls: list[list[str]] = []

    def slow(key_ids: Sequence[str]) -> int:
        calls.append(list(key_ids))
        started.set()
        release.wait(5)
        return len(key_ids)

    async def main() -> None:
        first = asyncio.create_task(eraser.submit(slow, ["a"]))
        await asyncio.to_thread(started.wait, 5)
        await eraser.submit(slow, ["b"])  # a flush runs: queued, returns at once
        assert calls == [["a"]]
        assert not eraser.idle
        release.set()
        await first  # the running flush erases "b" before it stops

    asyncio.run(main())
    assert calls == [["a"], ["b"]]
    assert eraser.idle


def test_a_failing_eraser_does_not_stop_the_others() -> None:
    eraser = HandOverEraser(_to_thread)
    rec = _Recorder()

    def broken(key_ids: Sequence[str]) -> int:
        raise OSError("disk full")

    async def main() -> None:
        await eraser.submit(broken, ["x"])
        await eraser.submit(rec, ["y"])

    asyncio.run(main())
    assert rec.calls == [["y"]]
    assert eraser.idle
