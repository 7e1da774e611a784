"""Dynamic batching: requests that arrive within a few milliseconds of each other share one engine
call.

Handlers submit a job (a key saying which calls may share a batch, and its inputs) and await its
answer. One worker takes the first job waiting, keeps collecting for ``wait_s`` (or until
``max_jobs``), and runs each group of jobs with equal keys as one call, on one thread: the engine is
not thread-safe, and while it runs the next requests queue up, so under load batches fill by
themselves. A call that fails is retried job by job, so one bad request fails alone.

A job whose client has gone (``submit``'s ``gone``) is dropped before its batch runs. Without that, a
client that times out and retries while the server is slow adds its retry to the work it abandoned,
and a server that once fell behind never catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

# run(key, inputs of every job in the group, concatenated) -> one output per input
RunGroup = Callable[[Hashable, list[Any]], list[Any]]


class ClientGone(Exception):
    """The client of a job disconnected before its answer was ready."""


@dataclass
class _Job:
    key: Hashable
    inputs: list[Any]
    future: asyncio.Future = field(repr=False)


class Batcher:
    def __init__(self, run: RunGroup, *, wait_s: float = 0.005, max_jobs: int = 64):
        self.run = run
        self.wait_s = wait_s
        self.max_jobs = max_jobs
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tether-engine")
        self.batches: list[int] = []  # jobs per engine call, for tests and logs
        self.dropped = 0  # jobs cancelled because their client went away

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._thread.shutdown(wait=False, cancel_futures=True)

    async def submit(
        self,
        key: Hashable,
        inputs: Sequence[Any],
        *,
        gone: Callable[[], Awaitable[bool]] | None = None,
        poll_s: float = 0.25,
    ) -> list[Any]:
        """The outputs for ``inputs`` (one each), computed in a batch with whatever else is waiting.

        ``gone`` (e.g. Starlette's ``request.is_disconnected``) is asked every ``poll_s`` while the
        job waits; once it says yes the job is cancelled, so no batch spends time on it, and
        ``ClientGone`` is raised."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(key, list(inputs), future))
        if gone is None:
            return await future
        while True:
            done, _ = await asyncio.wait({future}, timeout=poll_s)
            if done:
                return future.result()
            if await gone():
                future.cancel()
                self.dropped += 1
                raise ClientGone

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            deadline = loop.time() + self.wait_s
            while len(jobs) < self.max_jobs:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self._queue.get(), left))
                except TimeoutError:
                    break
            groups: dict[Hashable, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.key, []).append(job)
            for key, group in groups.items():
                try:
                    await self._run_group(loop, key, group)
                except (
                    Exception
                ) as exc:  # the worker must outlive any one batch, or every later request hangs
                    for job in group:
                        _settle(job, exc=exc)

    async def _run_group(self, loop, key: Hashable, group: list[_Job]) -> None:
        live = [job for job in group if not job.future.done()]  # a client that went away
        if not live:
            return
        flat = [x for job in live for x in job.inputs]
        self.batches.append(len(live))
        try:
            outputs = await loop.run_in_executor(self._thread, self.run, key, flat)
        except Exception as exc:
            if len(live) == 1:
                _settle(live[0], exc=exc)
                return
            for job in live:  # one bad request must not fail the others
                await self._run_group(loop, key, [job])
            return
        at = 0
        for job in live:
            _settle(job, result=outputs[at : at + len(job.inputs)])
            at += len(job.inputs)


def _settle(job: _Job, *, result: Any = None, exc: BaseException | None = None) -> None:
    if job.future.done():
        return
    if exc is not None:
        job.future.set_exception(exc)
    else:
        job.future.set_result(result)
