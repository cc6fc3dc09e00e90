"""Run one job at a time on a background thread, so that the caller prepares the next meanwhile.

The engine uses it to align slice k+1 while slice k is folded into the pyramid: registration
spends much of its time in single-threaded NumPy and FFT code, and the fold's kernels then
have the second core. At most one job is in flight, so memory grows by one slice at most.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from fusion.parallel_kernels import kernels_may_run_concurrently

A = TypeVar("A")
B = TypeVar("B")
T = TypeVar("T", bound=type)


def side_by_side(here: Callable[[], A], beside: Callable[[], B]) -> tuple[A, B]:
    """``here()`` on this thread while ``beside()`` runs on another, where numba's kernels may run on two threads
    at once; else one after the other. The pyramid folds a large level's strips so, half on each thread
    (``fusion.multiscale``). An error in either is raised, ``here``'s first."""
    if not kernels_may_run_concurrently():
        return here(), beside()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="beside") as executor:
        other = executor.submit(beside)
        try:
            mine = here()
        except BaseException:
            with contextlib.suppress(BaseException):  # (the caller hears this thread's error)
                other.result()
            raise
        return mine, other.result()


def made_now(job: Callable[[], A]) -> Future[A]:
    """``job()`` run here, as a Future holding its result or its error: what ``started_beside`` gives where kernels
    may not run on two threads, so that an error is raised where the result is read, as it is then."""
    future: Future[A] = Future()
    try:
        future.set_result(job())
    except Exception as error:  # (raised where the result is read)
        future.set_exception(error)
    return future


def started_beside(job: Callable[[], A]) -> Future[A]:
    """``job()`` started on a thread of its own, for a result the caller may not need at once; its Future."""
    future: Future[A] = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(job())
        except BaseException as error:  # (raised where the result is read)
            future.set_exception(error)

    # Not a daemon: the interpreter waits for it at exit rather than stop numba's threads mid-kernel.
    threading.Thread(target=run, name="made-beside").start()
    return future


class MadeBeside:
    """What a field named to ``made_beside`` reads through: the value, or the Future it was given as
    (``started_beside``), waited for once."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = "_" + name   # the instance's attribute that holds the value or its Future

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = getattr(instance, self.slot)
        if isinstance(value, Future):
            value = value.result()
            setattr(instance, self.slot, value)
        return value

    def __set__(self, instance: Any, value: Any) -> None:
        setattr(instance, self.slot, value)


def made_beside(*names: str) -> Callable[[T], T]:
    """A class decorator, above ``@dataclass``: each named field may be given as a Future (``started_beside``) as well
    as its value, and reads as the value (``MadeBeside``). Installed once the dataclass is made, so the fields keep
    the value's type and no default in their signature (a descriptor in the class body read as one). The class
    pickles with each such field's value, waited for (a Future cannot be pickled: a batch worker's result is)."""

    def install(cls: T) -> T:
        slots = {}
        for name in names:
            field = MadeBeside()
            field.__set_name__(cls, name)
            setattr(cls, name, field)
            slots[field.slot] = name

        def __getstate__(self) -> dict:
            state = dict(self.__dict__)
            state.update((slot, getattr(self, name)) for slot, name in slots.items())
            return state

        cls.__getstate__ = __getstate__  # type: ignore[attr-defined]  # (T: any class)
        return cls

    return install


class OneAhead:
    """``submit`` waits for the job before it (re-raising its error), then starts the new one;
    ``wait`` returns what the last job returned (None if there was none)."""

    def __init__(self, name: str):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._in_flight: Future | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[..., Any], *args: Any) -> Any:
        """Start ``job(*args)``; returns what the previous job returned."""
        with self._lock:
            previous = self._take()
            self._in_flight = self._executor.submit(job, *args)
            return previous

    def wait(self) -> Any:
        with self._lock:
            return self._take()

    def close(self) -> None:
        """Wait for the job in flight (its error is dropped: the caller is already ending) and stop."""
        try:
            with contextlib.suppress(Exception):  # the caller reports its own error
                self.wait()
        finally:
            self._executor.shutdown(wait=True)

    def _take(self) -> Any:
        future, self._in_flight = self._in_flight, None
        return None if future is None else future.result()
