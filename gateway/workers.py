"""Worker processes: ``node.workers`` gateways on one machine sharing the SIP listeners.

One CPython process uses one core. ``gateway run`` with ``node.workers: N`` (or ``--workers N``)
becomes a supervisor that starts N worker processes (``gateway run --worker i``) and does nothing
else. Each worker binds the configured SIP listeners with SO_REUSEPORT.

UDP has one address to the world: every worker sends requests and responses from its socket on
the shared port and names that port in its Via and Contact, so a peer behind a port-restricted
NAT sees one source. The kernel hands each datagram to a random worker, which passes it to the
worker that owns it (the one that sent the request a response answers, the one holding the
dialog, else the one the Call-ID hashes to): the calls of ONE peer, a carrier SBC or a PBX
trunk, spread over every worker, and a CANCEL or an ACK reaches the INVITE's worker. How, and
why so: :mod:`gateway.transport.handoff` and :mod:`gateway.sip.ownership`. The supervisor
makes the hand-off channels and passes them down (they outlive a worker's restart).

TCP and TLS: a connection stays with the worker that accepted it; each worker also listens on
a port of its own (``node.worker_port_base + i``) named in its TCP/TLS Via and Contact, so a
new connection for a request in one of its dialogs reaches it (:mod:`gateway.transport.manager`).
Registrations and call-limit slots live in Redis, so a REGISTER taken by one worker serves
calls placed by another (``check_workers`` in :mod:`gateway.config` refuses anything else).

What the supervisor does:

* SIGTERM / SIGINT: passed to every worker; each drains its calls (``call.drain_grace``) and
  stops; the supervisor waits for them, then kills what is still running after that grace plus
  a margin.
* SIGHUP: passed to every worker, each of which reloads trunks, dialplans and tariffs on its
  own (:mod:`gateway.node`); the files are shared, so they all validate the same data.
* A worker that dies is started again after a second. One that cannot start (exit 1: a port in
  use, exit 2: a bad data file) stops the whole gateway with its exit code: restarting would
  fail the same way.
* Workers get SIGTERM from the kernel if the supervisor itself dies (``PR_SET_PDEATHSIG``), so
  no orphan keeps the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass

from gateway.transport.handoff import ENVIRONMENT, channels_for, make_channels

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0
STARTUP_WINDOW = 5.0
"""A worker that exits with 1 or 2 within this many seconds of starting could not start."""
STOP_MARGIN = 10.0
CANNOT_START = (1, 2)
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the supervisor goes away (Linux prctl(2)); SIGHUP
    ignored (the disposition survives exec) until the worker's node handles it, so a reload
    asked while a worker starts does not end it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


@dataclass(slots=True)
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    started: float


class Supervisor:
    """Starts, restarts and stops the worker processes of one gateway."""

    def __init__(self, config_path: str, workers: int, *, stop_grace: float) -> None:
        self.config_path = config_path
        self.count = workers
        self.stop_grace = stop_grace
        self._stopping = False
        self._exit_code = 0
        self._workers: dict[int, _Worker] = {}
        # The hand-off channels (gateway.transport.handoff), kept open across worker restarts.
        self._channels = make_channels(workers)

    def command(self, index: int) -> list[str]:
        return [sys.executable, "-m", "gateway", "run", "--config", self.config_path,
                "--workers", str(self.count), "--worker", str(index)]

    async def _start(self, index: int) -> _Worker:
        channels, fds = channels_for(index, self._channels)
        process = await asyncio.create_subprocess_exec(
            *self.command(index), preexec_fn=_die_with_parent, pass_fds=fds,
            env={**os.environ, ENVIRONMENT: channels},
        )
        log.info("worker %d started (pid %d)", index, process.pid)
        return _Worker(index, process, time.monotonic())

    async def run(self) -> int:
        """Run the workers until a signal (or a worker that cannot start); the exit code."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._forward_hangup)
        workers = self._workers
        for i in range(self.count):
            workers[i] = await self._start(i)
        waits = {i: loop.create_task(w.process.wait()) for i, w in workers.items()}
        stopping = loop.create_task(stop.wait())
        try:
            while not stop.is_set():
                done, _ = await asyncio.wait([stopping, *waits.values()], return_when=asyncio.FIRST_COMPLETED)
                for index, task in list(waits.items()):
                    if task not in done:
                        continue
                    worker, code = workers[index], task.result()
                    if code in CANNOT_START and time.monotonic() - worker.started < STARTUP_WINDOW:
                        log.error("worker %d could not start (exit %d): stopping the gateway", index, code)
                        self._exit_code = code
                        stop.set()
                        del waits[index]
                        continue
                    pid = worker.process.pid
                    log.error("worker %d (pid %d) exited with %s: restarting it", index, pid, code)
                    await asyncio.sleep(RESTART_DELAY)
                    if stop.is_set():
                        del waits[index]
                        continue
                    workers[index] = await self._start(index)
                    waits[index] = loop.create_task(workers[index].process.wait())
        finally:
            stopping.cancel()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            await self._stop([workers[i] for i in waits], list(waits.values()))
            for pair in self._channels:
                for sock in pair:
                    sock.close()
        return self._exit_code

    def _forward_hangup(self) -> None:
        """SIGHUP: every running worker reloads (a worker still starting ignores it)."""
        for worker in self._workers.values():
            if worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGHUP)

    async def _stop(self, workers: list[_Worker], waits: list[asyncio.Task[int]]) -> None:
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        if not waits:
            return
        done, pending = await asyncio.wait(waits, timeout=self.stop_grace + STOP_MARGIN)
        for worker in workers:
            if worker.process.returncode is None:
                log.error("worker %d (pid %d) did not stop: killing it", worker.index, worker.process.pid)
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
        if pending:
            await asyncio.wait(pending)
        for task in done:
            if task.result() not in (0, -signal.SIGTERM) and self._exit_code == 0:
                self._exit_code = 1
