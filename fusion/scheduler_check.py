"""Whether a dask scheduler answers at the address ``--scheduler`` names, said before any work."""
from __future__ import annotations

import asyncio
import socket

import dask
from dask.utils import parse_timedelta
from distributed.comm import connect
from distributed.comm.addressing import parse_address, parse_host_port

DASK_SCHEDULER_PORT = 8786  # where `dask scheduler` listens unless told otherwise (and an address without a port)


def check_scheduler(address: str) -> None:
    """An OSError that names ``address`` and what to check where no dask scheduler answers there, before any work.
    For tcp:// (and a bare host:port): a refused connection or an unknown host is said at once (dask retried a
    refused one for 30 s, then said only "Timed out trying to connect"); a silent host, or something else listening
    (the dashboard's port, 8787), after dask's connect timeout (``distributed.comm.timeouts.connect``): dask itself
    waited for ever on the latter's handshake. tls:// is checked as far as the TCP connection; other schemes are
    left to dask."""
    try:
        scheme, location = parse_address(address)
        if scheme not in ("tcp", "tls"):
            return
        host, port = parse_host_port(location, default_port=DASK_SCHEDULER_PORT)
    except ValueError as error:
        raise ValueError(f"--scheduler {address}: not a scheduler address ({error}); give tcp://HOST:PORT") from None
    timeout_s = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), default="seconds")
    check = (f"check that the scheduler is running (`dask scheduler` listens on port {DASK_SCHEDULER_PORT}) and that "
             "this is the address it printed, with no firewall in between; or leave --scheduler out to fuse on a "
             "local cluster")
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as error:
        if isinstance(error, ConnectionRefusedError):
            why = f"the connection was refused: nothing listens on port {port} of {host}"
        elif isinstance(error, socket.gaierror):
            why = f"the host {host!r} is not known here"
        elif isinstance(error, TimeoutError):
            why = f"no answer within {timeout_s:g} s (dask's distributed.comm.timeouts.connect)"
        else:
            why = error.strerror or str(error)
        raise OSError(f"--scheduler {address}: cannot reach a dask scheduler there: {why}; {check}") from None
    if scheme == "tcp" and not _answers_as_dask(address, timeout_s):
        raise OSError(f"--scheduler {address}: something listens on port {port} of {host}, but it did not answer as a "
                      f"dask scheduler within {timeout_s:g} s (dask's distributed.comm.timeouts.connect): is it the "
                      f"dashboard's port (8787)? {check}")


def _answers_as_dask(address: str, timeout_s: float) -> bool:
    """Whether a dask comm (a scheduler's, or a worker's) answers the handshake at ``address`` within ``timeout_s``."""
    async def handshake() -> None:
        comm = await connect(address, timeout=timeout_s)
        await comm.close()

    try:
        asyncio.run(asyncio.wait_for(handshake(), timeout_s))
    except (asyncio.TimeoutError, OSError):
        return False
    return True
