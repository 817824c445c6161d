"""Worker threads under a time limit (``mmsearch.ingest.timeouts``): ``ordered`` keeps input order and a
bounded number of tasks in flight, turns a task that runs past its limit into ``TimedOut`` and carries on,
and re-raises a task's own error; the limit counts from when a task starts running, not while it is
queued; a stuck worker is abandoned and replaced so the pool keeps its width; ``shutdown`` cancels
tasks not yet started; workers are daemon threads. (The index run hashes files in these threads; it
decodes them in worker processes, tested in ``test_decode_workers``.)

Everything is synchronised with events, barriers and counters; the few small limits (a fraction of a
second) only ever run out while a task waits on an event that the test itself sets at the end.
"""
from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from mmsearch.ingest.timeouts import DaemonPool, TaskTimeout, TimedOut, ordered

WAIT = 10.0
"""Upper bound for waiting on an event that must come: reached only when the code under test is broken."""
LIMIT = 0.3
"""A task's time limit where a task is meant to run past it (it waits on an event the test sets last)."""
_names = itertools.count()


def _unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


def _threads_named(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def _pool_threads(pool: DaemonPool) -> list[threading.Thread]:
    return _threads_named(f"{pool.name}-")


def _join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(WAIT)
    assert not [t.name for t in threads if t.is_alive()]


@pytest.fixture
def gate():
    """Events that stuck tasks wait on; all are set when the test ends, so no thread stays blocked."""
    made: list[threading.Event] = []

    def make() -> threading.Event:
        event = threading.Event()
        made.append(event)
        return event

    yield make
    for event in made:
        event.set()


@pytest.fixture
def make_pool():
    """DaemonPool factory with a name unique to the test; every pool is shut down at the end."""
    pools: list[DaemonPool] = []

    def make(workers: int) -> DaemonPool:
        pool = DaemonPool(workers, name=_unique("test-timeouts-pool"))
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.shutdown()


# -- ordered ---------------------------------------------------------------------------------------------
def test_ordered_yields_results_in_input_order_when_later_items_finish_first(make_pool):
    count = 5
    finished = [threading.Event() for _ in range(count)]
    finish_order: list[int] = []

    def work(i: int) -> int:
        if i + 1 < count:  # each item waits for the next one to finish: they finish last to first
            assert finished[i + 1].wait(WAIT), f"item {i + 1} never finished"
        finish_order.append(i)
        finished[i].set()
        return i * 10

    pool = make_pool(count)
    assert list(ordered(pool, work, list(range(count)), ahead=count, limit=None)) == [0, 10, 20, 30, 40]
    assert finish_order == [4, 3, 2, 1, 0]


def test_ordered_keeps_at_most_ahead_tasks_started_beyond_the_results_consumed(make_pool):
    count, ahead = 8, 3
    started_events = [threading.Event() for _ in range(count)]
    started: set[int] = set()
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.add(i)
        started_events[i].set()
        return i

    pool = make_pool(4)  # more workers than ``ahead``: only ``ordered`` holds the tasks back
    for consumed, value in enumerate(ordered(pool, work, list(range(count)), ahead=ahead, limit=None), 1):
        assert value == consumed - 1
        in_reach = min(count, consumed - 1 + ahead)  # the result in hand plus ahead - 1 still pending
        for i in range(in_reach):
            assert started_events[i].wait(WAIT), f"item {i} was submitted but never started"
        with lock:
            assert started == set(range(in_reach))
    assert started == set(range(count))


def test_ordered_yields_timed_out_for_a_task_past_its_limit_and_carries_on(make_pool, gate):
    stuck = gate()

    def work(i: int) -> int:
        if i == 1:
            stuck.wait(WAIT)
        return i

    pool = make_pool(2)
    results = list(ordered(pool, work, [0, 1, 2, 3], ahead=4, limit=LIMIT))
    assert results[0] == 0 and results[2:] == [2, 3]
    assert isinstance(results[1], TimedOut)
    assert results[1].seconds == LIMIT
    assert results[1].reason == "timed out after 0.3 s"
    assert pool.abandoned == 1


def test_ordered_reraises_the_functions_exception_to_the_consumer(make_pool):
    boom = ValueError("cannot decode item 1")

    def work(i: int) -> int:
        if i == 1:
            raise boom
        return i

    pool = make_pool(2)
    results = ordered(pool, work, [0, 1, 2], ahead=3, limit=WAIT)
    assert next(results) == 0
    with pytest.raises(ValueError) as raised:
        next(results)
    assert raised.value is boom
    assert pool.abandoned == 0
    with pytest.raises(StopIteration):
        next(results)


def test_ordered_cancels_tasks_not_started_when_the_consumer_stops_early(make_pool, gate):
    hold = gate()
    started = [threading.Event() for _ in range(4)]
    ran: list[int] = []

    def work(i: int) -> int:
        ran.append(i)
        started[i].set()
        if i == 1:
            hold.wait(WAIT)
        return i

    pool = make_pool(1)
    results = ordered(pool, work, [0, 1, 2, 3], ahead=3, limit=None)
    assert next(results) == 0
    assert started[1].wait(WAIT)  # the only worker is busy with item 1; item 2 waits in the queue
    results.close()
    hold.set()
    threads = _pool_threads(pool)
    pool.shutdown()
    _join_all(threads)
    assert ran == [0, 1]


# -- DaemonPool ------------------------------------------------------------------------------------------
def test_time_limit_counts_from_when_a_task_starts_not_while_it_is_queued(make_pool, gate):
    release_first = gate()
    first_started = threading.Event()

    def first(_):
        first_started.set()
        assert release_first.wait(WAIT)
        return "first"

    pool = make_pool(1)
    busy = pool.submit(first, None)
    queued = pool.submit(lambda _: "second", None)
    assert first_started.wait(WAIT)
    # The second task stays queued for 3 limits; the caller waits on it under the limit all that time.
    timer = threading.Timer(3 * LIMIT, release_first.set)
    timer.start()
    try:
        assert queued.started is None
        assert pool.wait(queued, LIMIT) == "second"
    finally:
        timer.cancel()
    assert pool.wait(busy, None) == "first"
    assert pool.abandoned == 0


def test_a_stuck_worker_is_abandoned_and_replaced_so_the_pool_keeps_its_width(make_pool, gate):
    stuck = gate()
    stuck_thread: list[threading.Thread] = []

    def hang(_):
        stuck_thread.append(threading.current_thread())
        stuck.wait(WAIT)
        return "late"

    pool = make_pool(2)
    hung = pool.submit(hang, None)
    with pytest.raises(TaskTimeout) as raised:
        pool.wait(hung, LIMIT)
    assert raised.value.seconds == LIMIT
    assert str(raised.value) == "timed out after 0.3 s"
    assert pool.abandoned == 1
    assert hung.abandoned

    both_running = threading.Barrier(2, timeout=WAIT)  # broken unless two workers are free at once

    def meet(name: str) -> str:
        both_running.wait()
        return name

    tasks = [pool.submit(meet, "a"), pool.submit(meet, "b")]
    assert [pool.wait(task, WAIT) for task in tasks] == ["a", "b"]
    assert len(_pool_threads(pool)) == 3  # the two working and the one left behind
    assert all(t.daemon for t in _pool_threads(pool))

    stuck.set()  # once unstuck, the abandoned thread leaves: its place was already taken
    stuck_thread[0].join(WAIT)
    assert not stuck_thread[0].is_alive()
    assert len(_pool_threads(pool)) == 2


def test_shutdown_cancels_tasks_that_have_not_started(make_pool, gate):
    hold = gate()
    running_started = threading.Event()
    ran: list[str] = []

    def record(name: str) -> str:
        ran.append(name)
        if name == "running":
            running_started.set()
            hold.wait(WAIT)
        return name

    pool = make_pool(1)
    running = pool.submit(record, "running")
    waiting = [pool.submit(record, "queued-1"), pool.submit(record, "queued-2")]
    assert running_started.wait(WAIT)
    threads = _pool_threads(pool)
    pool.shutdown([running, *waiting])
    hold.set()
    assert pool.wait(running, WAIT) == "running"
    _join_all(threads)
    assert ran == ["running"]
    assert not running.cancelled
    assert all(task.cancelled and task.started is None for task in waiting)


def test_worker_threads_are_daemon_threads(make_pool):
    pool = make_pool(3)
    threads = _pool_threads(pool)
    assert len(threads) == 3
    assert all(t.daemon for t in threads)


def test_a_stuck_worker_does_not_keep_the_interpreter_from_exiting():
    script = textwrap.dedent("""
        import threading
        from mmsearch.ingest.timeouts import DaemonPool, TaskTimeout

        pool = DaemonPool(1, name="exit-check")
        never = threading.Event()
        task = pool.submit(lambda _: never.wait(), None)
        try:
            pool.wait(task, 0.1)
        except TaskTimeout:
            print("gave up")
        pool.shutdown()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2], check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "gave up"


def test_a_task_timeout_raised_by_the_function_is_its_error_not_an_abandoned_worker(make_pool):
    own = TaskTimeout(7.0)

    def work(_):
        raise own  # e.g. a task that reads a ``streamed`` producer which stalled

    pool = make_pool(1)
    task = pool.submit(work, None)
    with pytest.raises(TaskTimeout) as raised:
        pool.wait(task, WAIT)
    assert raised.value is own
    assert pool.abandoned == 0
    assert len(_pool_threads(pool)) == 1
