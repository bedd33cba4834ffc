"""A check run every few seconds in a tracked task: how a worker follows what another process
wrote (the active dialplan version, the operators' trunk changes) without a message bus."""

from __future__ import annotations

import abc
import asyncio
import contextlib


class Poller(abc.ABC):
    """Calls :meth:`check` every ``interval`` seconds from :meth:`start` until :meth:`close`."""

    def __init__(self, *, interval: float, name: str) -> None:
        self.interval = interval
        self._name = name
        self._task: asyncio.Task[None] | None = None

    @abc.abstractmethod
    def check(self) -> bool:
        """Look once and adopt what changed; whether anything did."""

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.check()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
