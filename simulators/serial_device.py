"""A serial device simulated byte for byte on a pseudo-terminal.

The driver opens ``port`` (``/dev/pts/N``) exactly as it would open ``/dev/ttyUSB0``; a
thread here reads its bytes, hands them to the protocol, and writes the answers back,
committing whatever ``faults`` asks for. ``disconnect()`` closes the port under the
driver, as when a USB cable is pulled. The device runs at ``baudrate``: a driver that sets the
port to another rate is neither understood nor understands the answers, as on a real line.
"""
from __future__ import annotations

import array
import contextlib
import os
import pty
import select
import sys
import termios
import threading
import time
import tty
from abc import ABC, abstractmethod

from simulators.faults import Faults

TCGETS2 = 0x802C542A  # Linux: read struct termios2, whose speeds are plain numbers (any rate, not only B*)


def line_speed_baud(fd: int) -> int:
    """The baud rate the terminal ``fd`` is set to (on a pseudo-terminal: what the driver asked for)."""
    if sys.platform.startswith("linux"):
        import fcntl

        settings = array.array("I", [0] * 11)  # c_iflag..c_lflag, c_line and c_cc[19], c_ispeed, c_ospeed
        fcntl.ioctl(fd, TCGETS2, settings)
        return settings[10]
    return termios.tcgetattr(fd)[5]  # the BSDs and macOS keep the rate itself


def garbled(n_bytes: int) -> bytes:
    """Noise ending as a line does, so that a driver reads it at once instead of waiting out its timeout.
    Its bytes lie outside ASCII: random ones could hold a line end, or pass for text, by chance (a flaky test)."""
    return bytes(0x80 | byte for byte in os.urandom(n_bytes)) + b"\r\n"


class PtySerialDevice(ABC):
    """Base of the serial simulators: subclasses turn received bytes into answers."""

    def __init__(self, baudrate: int):
        self.baudrate = baudrate
        self.faults = Faults()
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._running = True
        self._lock = threading.RLock()
        self.received: list[bytes] = []  # every command, for tests to inspect
        self._thread = threading.Thread(target=self._serve, name=f"{type(self).__name__} on {self.port}",
                                        daemon=True)
        self._thread.start()

    @abstractmethod
    def handle(self, data: bytes) -> list[bytes]:
        """Take newly received bytes; return the answers to send (possibly none)."""

    def error_answer(self, code: int) -> bytes:
        """The protocol's answer for device error ``code`` (used by ``faults.error_reply``)."""
        raise NotImplementedError

    def _serve(self) -> None:
        while self._running:
            try:
                ready, _, _ = select.select([self._master], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(self._master, 4096)
                line_baud = line_speed_baud(self._slave)  # as the driver set the port, now
            except OSError:  # closed by disconnect() or close()
                return
            if not data:
                continue
            with self._lock:  # at another rate than the device's, each side hears the other's bytes as noise
                answers = self.handle(data) if line_baud == self.baudrate else [garbled(len(data))]
            for answer in answers:
                self._answer(answer)

    def _answer(self, answer: bytes) -> None:
        faults = self.faults
        spoiled = faults.active
        silent, delay_s = faults.silent, faults.delay_s
        if faults.error_reply is not None:
            answer = self.error_answer(faults.error_reply)
        if faults.garbage:
            answer = garbled(len(answer) + 3)
        if spoiled:
            faults.spend_one()
        if silent:
            return
        if delay_s:
            time.sleep(delay_s)
        with contextlib.suppress(OSError):  # the driver went away; nothing to answer
            os.write(self._master, answer)

    def disconnect(self) -> None:
        """Vanish: close the port under the driver (its next read or write fails)."""
        with self._lock:
            if not self._running:
                return  # closing twice would close whatever file has reused these descriptors
            self._running = False
        # Let the serving thread leave select() before its descriptor can be closed and reused.
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2)
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    close = disconnect

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def serve_forever(device: PtySerialDevice, description: str) -> None:
    """For ``python -m simulators.X``: print the port as the last word of the first line, then wait."""
    print(f"{description} on {device.port}", flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        device.close()
