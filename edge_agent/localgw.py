"""The local gateway child process of a survivable site (see :mod:`edge_agent.survivable`):
``python -m gateway run --config <site config>``, inside the managed namespace when the agent
manages a named one (``ip netns exec`` execs the gateway, so the PID we hold is the gateway's).
Its output goes to ``<state_dir>/local-gateway.log``. Stopped by its PID only.

Its PID is also written to ``<state_dir>/local-gateway.pid``: an agent killed without a chance
to stop it (SIGKILL, OOM) leaves it running and holding the site's SIP port; the next agent
start stops that one (only if its command line is this gateway with this config) before the
core check decides afresh whether the site needs a local gateway."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path

from edge_agent.store import atomic_write

log = logging.getLogger(__name__)


class LocalGateway:
    def __init__(self, config_file: Path, state_dir: Path, netns: str | None) -> None:
        self.config_file = config_file
        self.log_file = state_dir / "local-gateway.log"
        self.pid_file = state_dir / "local-gateway.pid"
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
        atomic_write(self.pid_file, f"{self.proc.pid}\n".encode())
        log.info("local gateway started (pid %d): %s", self.proc.pid, self.config_file)
        return self.proc

    def exited(self) -> None:
        """Its exit was seen: forget the PID file."""
        self.pid_file.unlink(missing_ok=True)

    def _is_ours(self, pid: int) -> bool:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"gateway" in argv and str(self.config_file).encode() in argv

    async def reap_stale(self, grace_s: float) -> int | None:
        """Stop a local gateway left by a previous agent run; its PID, or None if there was none."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if not self._is_ours(pid):  # gone, or the PID now belongs to something else
            self.exited()
            return None
        log.warning("a local gateway (pid %d) outlived the previous agent: stopping it", pid)
        os.kill(pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        # Not our child: nothing to wait on but its /proc entry.
        while self._is_ours(pid) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        if self._is_ours(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.exited()
        return pid

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
        finally:
            if proc.returncode is not None:
                self.exited()
