"""The local gateway child process of a survivable site (see :mod:`edge_agent.survivable`):
``python -m gateway run --config <site config>``, inside the managed namespace when the agent
manages a named one (``ip netns exec`` execs the gateway, so the PID we hold is the gateway's).
Its output goes to ``<state_dir>/local-gateway.log``. Stopped by its PID only."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


class LocalGateway:
    def __init__(self, config_file: Path, log_file: Path, netns: str | None) -> None:
        self.config_file = config_file
        self.log_file = log_file
        self.netns = netns
        self.proc: asyncio.subprocess.Process | None = None
        self.drained_at: float | None = None  # when the last SIGTERM was sent (wall clock)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "gateway", "run", "--config", str(self.config_file)]
        return ["ip", "netns", "exec", self.netns, *cmd] if self.netns else cmd

    async def start(self) -> asyncio.subprocess.Process:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,  # a terminal's Ctrl-C reaches the agent only, which stops it in order
            )
        self.drained_at = None
        log.info("local gateway started (pid %d): %s", self.proc.pid, self.config_file)
        return self.proc

    def drain(self) -> None:
        """SIGTERM: the gateway stops taking new calls, lets calls up finish, flushes charging."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            self.drained_at = time.time()

    async def stop(self, grace_s: float) -> int | None:
        """Drain, wait up to ``grace_s``, then SIGKILL; the exit status."""
        proc = self.proc
        if proc is None:
            return None
        self.drain()
        try:
            return await asyncio.wait_for(proc.wait(), grace_s)
        except TimeoutError:
            log.error("local gateway (pid %d) still running after %.0fs: killed", proc.pid, grace_s)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            return await proc.wait()
