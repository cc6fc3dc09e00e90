"""The worker processes of a batch's own local dask cluster, as their nannies start them.

dask's nanny starts its worker again each time it dies. One that dies as it starts (killed for lack of memory, a
module it preloads that no longer imports, an environment it cannot start in) is started again at once, for ever, or
its nanny closes without a word: the batch waited for a worker until Ctrl-C. Here a nanny gives up after
``FAILED_STARTS_TO_GIVE_UP`` starts in a row that died, and what dask logs of each death is kept, for the batch to say
why its workers could not start.
"""
from __future__ import annotations

import contextlib
import logging
import re
import signal
from collections.abc import Iterator

from distributed import Nanny
from distributed.core import Status

# Starts in a row that died before the worker joined the scheduler: a worker killed once as it started may have met a
# passing shortage; three in a row meet one that stays.
FAILED_STARTS_TO_GIVE_UP = 3
_CLOSED = (Status.closing, Status.closed, Status.failed)


class GivingUpNanny(Nanny):
    """dask's nanny, which gives up starting its worker after ``FAILED_STARTS_TO_GIVE_UP`` starts in a row that
    died (dask's starts it again at once, for as long as the cluster lives)."""

    failed_starts = 0   # in a row; a start whose worker joins the scheduler sets it back to 0

    async def instantiate(self) -> Status:
        if self.failed_starts >= FAILED_STARTS_TO_GIVE_UP:
            return Status.failed   # (called again on each death: no more tries; the cluster's close closes it)
        try:
            started = await super().instantiate()
        except Exception:  # (dask's nanny has closed itself: no worker comes from it any more)
            self.failed_starts += 1
            raise
        self.failed_starts = 0 if started == Status.running else self.failed_starts + 1
        return started

    @property
    def gave_up(self) -> bool:
        return self.status in _CLOSED or self.failed_starts >= FAILED_STARTS_TO_GIVE_UP


def workers_gave_up(cluster) -> bool:
    """Whether every nanny of ``cluster`` (a LocalCluster of ``GivingUpNanny``) has given up starting its worker."""
    nannies = list(getattr(cluster, "workers", {}).values())
    return bool(nannies) and all(getattr(nanny, "gave_up", nanny.status in _CLOSED) for nanny in nannies)


class WorkerDeaths(logging.Handler):
    """What the nannies in this process log of their workers' deaths and failed starts: the last one, in a person's
    words, with what to do where it is known (``said``)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.last: str | None = None   # "was killed by SIGKILL, signal 9", "failed to start: ModuleNotFoundError: ..."
        self.advice = ""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        error = record.exc_info[1] if record.exc_info else None
        death = _DEATH.match(message)
        if error is not None and message.startswith(("Failed to start", "Failed to restart")):
            # (the worker's own error as it started: a preload that does not import, ...)
            self.last, self.advice = f"failed to start: {type(error).__name__}: {error}", ""
        elif death is not None and death["signal"] is not None:
            number = int(death["signal"])
            if number == signal.SIGTERM and (self.last or "").startswith(_OVER_BUDGET_SAID):
                return   # (the nanny's own stop of a worker over its memory budget, said already)
            name = signal.Signals(number).name if number in {int(known) for known in signal.Signals} else "a signal"
            self.last = f"was killed by {name}, signal {number}"
            self.advice = _OUT_OF_MEMORY if number == signal.SIGKILL else ""
        elif death is not None and not (self.last or "").startswith("failed to start"):
            # (a worker whose start failed with an error exits too, maybe once the error is logged: the error says more)
            self.last, self.advice = f"exited with status {death['status']}", ""
        elif _OVER_BUDGET in message:  # (its nanny's own stop, said before the death is logged)
            self.last = f"{_OVER_BUDGET_SAID} more memory than its limit lets it"
            self.advice = _OVER_ITS_LIMIT

    def said(self) -> str:
        """The last death or failed start and what to do: "the last was killed by SIGKILL, signal 9, most often out of
        memory ..."; "they died as they started" where dask logged nothing of it."""
        if self.last is None:
            return "they died as they started"
        return f"the last {self.last}" + (f", {self.advice}" if self.advice else "")


_DEATH = re.compile(r"Worker process \d+ (?:was killed by signal (?P<signal>\d+)|exited with status (?P<status>-?\d+))")
_OVER_BUDGET = "% memory budget. Restarting"
_OVER_BUDGET_SAID = "was stopped by its nanny: it took"
# (dask's memory limit of a local worker: the machine's memory shared among the workers; its
# distributed.worker.memory.terminate fraction of it, by default 95 %)
_OVER_ITS_LIMIT = "try fewer --workers (each has a share of the machine's memory), or check dask's " \
                  "distributed.worker.memory.terminate"
_OUT_OF_MEMORY = "most often out of memory (the kernel's out-of-memory killer): close other programs, or try fewer " \
                 "--workers, e.g. --workers 1"


# What this process's nannies log of a start that failed with an error, each with the worker's traceback: the worker
# logs it first, and the batch says it again in its own words.
_SAID_AGAIN = ("Failed to start process", "Failed to restart worker after its process exited",
               "Worker failed to connect")


def _not_said_again(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(_SAID_AGAIN)


@contextlib.contextmanager
def watched_worker_deaths() -> Iterator[WorkerDeaths]:
    """A ``WorkerDeaths`` listening to the nannies' log while the block runs (our cluster's nannies run in this
    process); their lines that repeat a failed start's error are not shown."""
    deaths = WorkerDeaths()
    nanny_log = logging.getLogger("distributed.nanny")   # (its .memory child's lines come through it too)
    nanny_log.addHandler(deaths)
    shown = [handler for handler in logging.getLogger("distributed").handlers if handler is not deaths]
    for handler in shown:
        handler.addFilter(_not_said_again)
    try:
        yield deaths
    finally:
        nanny_log.removeHandler(deaths)
        for handler in shown:
            handler.removeFilter(_not_said_again)
