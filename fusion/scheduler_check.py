"""Whether a dask scheduler answers at the address ``--scheduler`` names, said before any work."""
from __future__ import annotations

import asyncio
import socket

import dask
from dask.utils import parse_timedelta
from distributed.comm import connect
from distributed.comm.addressing import parse_address, parse_host_port
from distributed.comm.registry import get_backend

DASK_SCHEDULER_PORT = 8786  # where `dask scheduler` listens unless told otherwise (and an address without a port)
MAX_PORT = 65535


def check_scheduler(address: str) -> None:
    """An OSError that names ``address`` and what to check where no dask scheduler answers there, before any work.
    For tcp:// (and a bare host:port): a refused connection or an unknown host is said at once (dask retried a
    refused one for 30 s, then said only "Timed out trying to connect"); a silent host, or something else listening
    (the dashboard's port, 8787), after dask's connect timeout (``distributed.comm.timeouts.connect``): dask itself
    waited for ever on the latter's handshake. tls:// is checked as far as the TCP connection; other schemes are
    left to dask."""
    scheme, host, port = _where(address)
    if host is None or port is None:  # (a scheme dask knows that is not a TCP one: left to dask)
        return
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
    if scheme != "tcp":
        return
    kind = _dask_identity(address, timeout_s)
    if kind == "Worker":
        raise OSError(f"--scheduler {address}: that is a dask worker's address, not its scheduler's; give the address "
                      f"`dask scheduler` printed (port {DASK_SCHEDULER_PORT} unless told otherwise)")
    if kind != "Scheduler":
        raise OSError(f"--scheduler {address}: something listens on port {port} of {host}, but it did not answer as a "
                      f"dask scheduler within {timeout_s:g} s (dask's distributed.comm.timeouts.connect): is it the "
                      f"dashboard's port (8787), or another server? {check}")


GIVE = "give the address `dask scheduler` printed, tcp://HOST:PORT, or leave --scheduler out to fuse on a local cluster"


def _where(address: str) -> tuple[str, str | None, int | None]:
    """The scheme, host and port that ``address`` names (host and port None for a scheme dask knows that is not
    tcp:// or tls://); a ValueError that says what is wrong with it in a person's words where it names none:
    empty, a scheme dask does not speak (the dashboard's http://), no host, a port that is no port."""
    if not address.strip():
        raise ValueError(f"--scheduler is empty; {GIVE}")
    try:
        scheme, location = parse_address(address)
        get_backend(scheme)
    except ValueError:  # (dask's own words list its schemes as a Python list)
        scheme = address.split("://", 1)[0]
        dashboard = " (the dashboard's page is not the scheduler)" if scheme.lower() in ("http", "https") else ""
        raise ValueError(f"--scheduler {address}: not a scheduler address: dask does not speak {scheme}://"
                         f"{dashboard}; {GIVE}") from None
    if scheme not in ("tcp", "tls"):
        return scheme, None, None
    try:
        host, port = parse_host_port(location, default_port=DASK_SCHEDULER_PORT)
    except ValueError:  # (int() of what follows the last colon)
        raise ValueError(f"--scheduler {address}: {location.rpartition(':')[2]!r} is not a port (1 to {MAX_PORT}); "
                         f"{GIVE}") from None
    if not host:
        raise ValueError(f"--scheduler {address}: names no host; {GIVE}")
    if not 0 < port <= MAX_PORT:
        raise ValueError(f"--scheduler {address}: {port} is not a port (1 to {MAX_PORT}); {GIVE}")
    return scheme, host, port


def _dask_identity(address: str, timeout_s: float) -> str | None:
    """What answers dask's handshake and its "identity" request at ``address`` within ``timeout_s``: "Scheduler",
    "Worker" (or another dask server's type); None where nothing answers as dask does."""
    async def identity():
        comm = await connect(address, timeout=timeout_s)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            await comm.close()

    try:
        answer = asyncio.run(asyncio.wait_for(identity(), timeout_s))
    except Exception:  # noqa: BLE001 -- a timeout, a closed connection, or bytes that are no dask message at all
        #                 (an HTTP server's answer read as a frame length: numpy asked for 3 EiB)
        return None
    return answer.get("type") if isinstance(answer, dict) else None
