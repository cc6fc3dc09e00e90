"""A batch's progress as plain lines, where stderr is a file or a pipe (nohup, cron, ``| tee``): a progress bar
shows nothing there until the end."""
from __future__ import annotations

import os
import sys
import time

from fusion.durations import duration_words


def is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # (no such method, or closed)
        return False


# Where stderr is not a terminal: a progress line at most every PROGRESS_LINE_S seconds and every
# PROGRESS_LINE_FRACTION of the stacks, whichever is rarer, and at the end. PROGRESS_LINE_S_VARIABLE, where set,
# overrides the seconds (the tests' few stacks take less than 30 s).
PROGRESS_LINE_S = 30.0
PROGRESS_LINE_FRACTION = 0.1
PROGRESS_LINE_S_VARIABLE = "UMS_FUSION_PROGRESS_LINE_S"


class ProgressLines:
    """The batch's progress as plain lines on stderr, with no carriage returns: "refuse: 120 of 300 stacks, 2 failed,
    ~40 s left". Counts the rows of ``outcomes`` (stacks skipped by --resume among them) at each ``update``."""

    def __init__(self, total: int, outcomes: dict):
        self.total = total
        self.outcomes = outcomes
        self.every_s = float(os.environ.get(PROGRESS_LINE_S_VARIABLE, PROGRESS_LINE_S))
        self.every_stacks = max(1.0, PROGRESS_LINE_FRACTION * total)
        self.started = self.said_at = time.monotonic()
        self.before = self.said_count = len(outcomes)  # (skipped by --resume: not in the time per stack)

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None and self.said_count != len(self.outcomes):  # (the end said where it was not yet)
            self._say()

    def update(self, n: int = 1) -> None:
        now, count = time.monotonic(), len(self.outcomes)
        if count >= self.total or (now - self.said_at >= self.every_s and
                                   count - self.said_count >= self.every_stacks):
            self._say()

    def _say(self) -> None:
        now, count = time.monotonic(), len(self.outcomes)
        failed = sum(outcome.status == "failed" for outcome in self.outcomes.values())
        came = count - self.before
        left = ""
        if came and count < self.total:
            left = f", ~{duration_words((now - self.started) / came * (self.total - count), rough=True)} left"
        print(f"refuse: {count} of {self.total} stacks, {failed} failed{left}", file=sys.stderr, flush=True)
        self.said_at, self.said_count = now, count
