"""A serial port with deadlines: every read has one, and port trouble becomes a typed error."""
from __future__ import annotations

import time

import serial

from devices.errors import DeviceDisconnectedError, DeviceNotFoundError, DeviceTimeoutError

try:
    from termios import error as _termios_error  # pyserial's flush on a vanished pty raises this

    _PLATFORM_PORT_FAILURES: tuple[type[Exception], ...] = (_termios_error,)
except ImportError:  # Windows
    _PLATFORM_PORT_FAILURES = ()

# What a port throws when the device behind it is gone.
PORT_FAILURES = (serial.SerialException, OSError, *_PLATFORM_PORT_FAILURES)


class SerialLink:
    """Wraps a pyserial port opened by name (``/dev/ttyUSB0``, ``COM3``) or URL (``serial.serial_for_url``)."""

    def __init__(self, device: str, port: str, baudrate: int = 9600, timeout_s: float = 1.0):
        self.device = device
        self.port_name = port
        self.timeout_s = timeout_s
        # Whether the device has given a valid answer on this port (the driver says so): garbage before
        # that suggests a port at another baud rate; after it, noise on a line that works.
        self.understood = False
        try:
            # Exclusive: a second session on the same port would interleave its moves with the first's.
            self._port = serial.serial_for_url(port, baudrate=baudrate, timeout=min(timeout_s, 0.05),
                                               write_timeout=timeout_s, exclusive=True)
        except (serial.SerialException, ValueError, OSError) as error:
            if "exclusively lock" in str(error):
                raise DeviceNotFoundError(device, f"serial port {port} is in use by another program that locks it "
                                                  "(another session?): close that first") from error
            raise DeviceNotFoundError(device, f"cannot open serial port {port}: {error}") from error

    def write(self, data: bytes) -> None:
        try:
            self._port.reset_input_buffer()  # a late answer to an earlier command must not pass for this one
            self._port.write(data)
            self._port.flush()
        except serial.SerialTimeoutException as error:
            raise DeviceTimeoutError(self.device,
                                     f"could not send within {self.timeout_s:g} s on {self.port_name}") from error
        except PORT_FAILURES as error:
            raise DeviceDisconnectedError(self.device,
                                          f"port {self.port_name} failed while sending: {error}") from error

    def read_until(self, terminator: bytes, max_bytes: int = 4096, what: str = "an answer") -> bytes:
        """Read up to and including ``terminator``; raise DeviceTimeoutError past the deadline."""
        return self._read(lambda buffer: buffer.endswith(terminator) or len(buffer) >= max_bytes, what)

    def read_exactly(self, n_bytes: int, what: str = "an answer") -> bytes:
        return self._read(lambda buffer: len(buffer) >= n_bytes, what, n_bytes)

    def _read(self, done, what: str, limit: int | None = None) -> bytes:
        deadline = time.monotonic() + self.timeout_s
        buffer = bytearray()
        while not done(buffer):
            if time.monotonic() > deadline:
                raise DeviceTimeoutError(
                    self.device, f"no complete answer within {self.timeout_s:g} s on {self.port_name} "
                                 f"(waiting for {what})", bytes(buffer) or None)
            try:
                chunk = self._port.read(1 if limit is None else max(1, limit - len(buffer)))
            except PORT_FAILURES as error:
                raise DeviceDisconnectedError(
                    self.device, f"port {self.port_name} failed while reading: {error}") from error
            buffer += chunk
        return bytes(buffer)

    def close(self) -> None:
        if self._port.is_open:
            self._port.close()
