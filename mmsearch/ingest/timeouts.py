"""Work on files in threads with a time limit per file, without letting a stuck file hang the run.

A read stuck on a hostile file (a network mount that stopped answering) cannot
be interrupted from Python. ``DaemonPool`` therefore gives up on it instead: the caller stops waiting
once the task has *run* for longer than the limit (time spent queued does not count), the stuck thread
is abandoned and replaced so the pool keeps its width, and because every worker is a daemon thread an
abandoned one never blocks the process from exiting (``concurrent.futures`` joins its workers at exit).
"""
from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from typing import Any, Callable, Iterator, Sequence

log = logging.getLogger(__name__)

DEFAULT_FILE_TIMEOUT = 60.0
"""Seconds one file may take to hash or decode before it is recorded as failed."""


class TaskTimeout(Exception):
    """Raised by ``Task.result`` when the task has run longer than its limit."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        super().__init__(f"timed out after {seconds:g} s")


class Task:
    """One call in a ``DaemonPool``: its result, its error, and when it started running."""

    def __init__(self, fn: Callable[[Any], Any], arg: Any):
        self.fn, self.arg = fn, arg
        self.started: float | None = None
        self.done = False
        self.abandoned = False
        self.cancelled = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._cond = threading.Condition()

    # -- worker side -----------------------------------------------------------------------------------
    def _start(self) -> bool:
        with self._cond:
            if self.cancelled:
                return False
            self.started = time.monotonic()
            self._cond.notify_all()
            return True

    def _finish(self, value: Any, error: BaseException | None) -> None:
        with self._cond:
            self._value, self._error, self.done = value, error, True
            self._cond.notify_all()

    # -- caller side -----------------------------------------------------------------------------------
    def result(self, limit: float | None) -> Any:
        """The task's value (or its exception, re-raised); ``TaskTimeout`` once it has run ``limit`` seconds."""
        with self._cond:
            while not self.done:
                if limit is None or self.started is None:
                    self._cond.wait()
                    continue
                remaining = self.started + limit - time.monotonic()
                if remaining <= 0:
                    self.abandoned = True
                    raise TaskTimeout(limit)
                self._cond.wait(remaining)
        if self._error is not None:
            raise self._error
        return self._value

    def cancel(self) -> None:
        with self._cond:
            if self.started is None:
                self.cancelled = True


class DaemonPool:
    """A fixed number of daemon worker threads fed from one queue; see the module docstring."""

    def __init__(self, workers: int, *, name: str = "mmsearch-worker"):
        self.workers = max(1, int(workers))
        self.name = name
        self._queue: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._count = itertools.count()
        self._tasks: list[Task] = []
        self.abandoned = 0
        for _ in range(self.workers):
            self._spawn()

    def _spawn(self) -> None:
        thread = threading.Thread(target=self._work, name=f"{self.name}-{next(self._count)}", daemon=True)
        thread.start()

    def _work(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            if not task._start():
                continue
            try:
                value, error = task.fn(task.arg), None
            except BaseException as exc:  # handed to the caller, who decides
                value, error = None, exc
            task._finish(value, error)
            if task.abandoned:
                return  # a replacement took this thread's place when the caller gave up on the task

    def submit(self, fn: Callable[[Any], Any], arg: Any) -> Task:
        task = Task(fn, arg)
        self._queue.put(task)
        return task

    def wait(self, task: Task, limit: float | None) -> Any:
        """``task.result(limit)``; on a timeout the stuck worker is replaced before ``TaskTimeout`` propagates.
        (A ``TaskTimeout`` the task's own function raised is its error: re-raised, nothing abandoned.)"""
        try:
            return task.result(limit)
        except TaskTimeout:
            if not task.abandoned:
                raise
            self.abandoned += 1
            log.warning("giving up on %r after %g s (its thread is left behind)", task.arg, limit)
            self._spawn()
            raise

    def shutdown(self, pending: Sequence[Task] = ()) -> None:
        """Cancel tasks not yet started and let idle workers exit; running ones are not waited for."""
        for task in pending:
            task.cancel()
        for _ in range(self.workers):
            self._queue.put(None)

    def __enter__(self) -> "DaemonPool":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


class TimedOut:
    """What ``ordered`` yields for an item whose task ran past the limit."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    @property
    def reason(self) -> str:
        return f"timed out after {self.seconds:g} s"


def ordered(pool: DaemonPool, fn: Callable[[Any], Any], items: Sequence[Any], ahead: int,
            limit: float | None) -> Iterator[Any]:
    """``map`` over the pool keeping at most ``ahead`` tasks in flight, yielding in order; an item whose
    task runs longer than ``limit`` seconds yields a ``TimedOut`` instead of its result."""
    pending: deque[Task] = deque()
    position = 0
    try:
        while position < len(items) or pending:
            while position < len(items) and len(pending) < max(1, ahead):
                pending.append(pool.submit(fn, items[position]))
                position += 1
            task = pending.popleft()
            try:
                result = pool.wait(task, limit)
            except TaskTimeout as exc:
                if not task.abandoned:  # the function's own error, like any other it raises
                    raise
                result = TimedOut(exc.seconds)
            yield result
    finally:
        for task in pending:  # the consumer stopped early (an error, a crash): drop what has not started
            task.cancel()
