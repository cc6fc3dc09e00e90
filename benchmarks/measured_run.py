"""Run a command as a child process and measure it: wall seconds, CPU seconds, peak resident memory.

Each tool runs as its own process, so its numbers are its own (Linux ``wait4``: CPU of the child
and of the children it waited for; peak: the largest resident set among them), start-up
included, as a user pays it.
"""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measured:
    wall_s: float
    cpu_s: float        # user + system
    peak_rss_mb: float


def run_measured(command: list[str], cwd: Path | None = None, env: dict | None = None,
                 timeout_s: float = 1800.0) -> Measured:
    """Run ``command`` to its end; RuntimeError with the end of its output if it fails or times out."""
    with tempfile.TemporaryFile() as output:
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT)
        deadline = started + timeout_s
        while True:  # wait4 for this child's own resource use; polled, to keep a deadline
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid == child.pid:
                break
            if time.perf_counter() > deadline:
                child.kill()
                os.wait4(child.pid, 0)
                raise RuntimeError(f"{Path(command[0]).name} took more than {timeout_s:.0f} s")
            time.sleep(0.01)
        wall_s = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            output.seek(0)
            text = output.read().decode(errors="replace").strip()[-800:]
            raise RuntimeError(f"{Path(command[0]).name} failed ({child.returncode}): {text}")
    return Measured(wall_s, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def machine_line() -> str:
    """Date, host, cores, CPU model and memory: the line a results file starts with."""
    model = platform.processor() or platform.machine()
    memory_gb = None
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
        with open("/proc/meminfo") as meminfo:
            memory_gb = int(meminfo.readline().split()[1]) / 2 ** 20
    except OSError:
        pass
    memory = f", {memory_gb:.0f} GiB" if memory_gb else ""
    return f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.node()} ({os.cpu_count()} cores, {model}{memory})"


def load_average() -> str:
    """The 1-minute load average, or '?' where the system has none."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"
