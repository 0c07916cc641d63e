"""Dynamic batching, as Triton does it: concurrent requests for a model share one session run.

Each model has a queue and a worker. The worker takes the first waiting request, then everything else
already queued (up to max_batch_size), optionally waiting max_batch_wait_ms for more, groups the items
by shape (a batch must be one tensor) and runs each group. While one batch runs, the next one forms:
under load, batches grow by themselves without any added delay.

Where a batch runs: a run expected to be short (the model's measured cost per pixel times the batch's
pixels, under `inline_s`) runs on the event loop itself, because handing it to a thread and back costs
more than the run (measured: 32x32 reconstructions were several times slower through a thread on 2
cores). Longer runs (large images, big batches, slow models) go to the model's own thread, so the event
loop keeps answering probes and accepting requests meanwhile.

Which requests are batched: batching saves at most a session run's fixed cost per image, and passing
through the queue costs a few event-loop hops. A request whose run is expected to take less than
`min_run_s` (the study's first model at 32x32: 0.06 ms) skips the queue and runs at once; measured on
that model, queuing it cost throughput and doubled the c16 p99. Heavier runs (the shipped model at
32x32: 0.4 ms, or any model on a large image) are queued and grouped.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.errors import ServiceError
from service.metrics import Metrics
from service.models import Model


class Batcher:
    def __init__(self, model: Model, metrics: Metrics, max_batch_size: int, max_wait_s: float, enabled: bool = True,
                 inline_s: float = 0.002, min_run_s: float = 0.0):
        self.model, self.metrics, self.inline_s, self.min_run_s = model, metrics, inline_s, min_run_s
        self.max_batch_size, self.max_wait_s, self.enabled = max_batch_size, max_wait_s, enabled
        self.queue: asyncio.Queue = asyncio.Queue()
        # One thread per model: its session runs one batch at a time, the next batch forming meanwhile.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"cae-{model.role}")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        if self.enabled:
            self.task = asyncio.get_running_loop().create_task(self._work(), name=f"batcher-{self.model.role}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def infer(self, items: list[np.ndarray], timeout_s: float) -> list[np.ndarray]:
        """Run the model on each (C, H, W) array; results in the same order."""
        loop = asyncio.get_running_loop()
        expected_s = self._expected_s(sum(_pixels(i) for i in items))
        cheap = 0 < expected_s < self.min_run_s  # too cheap for the queue to pay (module docstring)
        if cheap and self.enabled:
            for _ in items:
                self.metrics.queue_wait.labels(self.model.role).observe(0.0)
        if cheap or not self.enabled:
            if 0 < expected_s < self.inline_s:
                return self._run_direct(items)
            return await self._with_timeout(loop.run_in_executor(self.executor, self._run_direct, items), timeout_s)
        futures = []
        now = time.perf_counter()
        for item in items:
            future = loop.create_future()
            self.queue.put_nowait((item, future, now))
            futures.append(future)
        return await self._with_timeout(asyncio.gather(*futures), timeout_s)

    @staticmethod
    async def _with_timeout(awaitable, timeout_s: float):
        try:
            return await asyncio.wait_for(awaitable, timeout_s)
        except asyncio.TimeoutError:
            raise ServiceError(504, "inference_timeout", f"inference took longer than {timeout_s:g} s (CAE_INFERENCE_TIMEOUT_S)") from None

    def _run_direct(self, items: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for shape_items in _group_by_shape(list(range(len(items))), items):
            out.append((shape_items, self._run(np.stack([items[i] for i in shape_items]))))
        results: list = [None] * len(items)
        for indices, batch_out in out:
            for i, r in zip(indices, batch_out):
                results[i] = r
        return results

    def _run(self, batch: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        out = self.model.run(batch)
        self.metrics.inference.labels(self.model.role).observe(time.perf_counter() - started)
        self.metrics.batch_size.labels(self.model.role).observe(len(batch))
        return out

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            self._drain(batch)
            if self.max_wait_s > 0 and len(batch) < self.max_batch_size:
                await asyncio.sleep(self.max_wait_s)
                self._drain(batch)
            live = [entry for entry in batch if not entry[1].done()]  # timed-out requests are skipped
            if not live:
                continue
            started = time.perf_counter()
            for _, _, queued in live:
                self.metrics.queue_wait.labels(self.model.role).observe(started - queued)
            arrays = [entry[0] for entry in live]
            for indices in _group_by_shape(list(range(len(live))), arrays):
                try:
                    batch = np.stack([arrays[i] for i in indices])
                    if 0 < self._expected_s(len(indices) * _pixels(arrays[indices[0]])) < self.inline_s:
                        out = self._run(batch)
                    else:
                        out = await loop.run_in_executor(self.executor, self._run, batch)
                except Exception as e:  # a failing run fails its requests, never the worker
                    for i in indices:
                        if not live[i][1].done():
                            live[i][1].set_exception(ServiceError(500, "inference_failed", f"inference failed: {e}"))
                    continue
                for i, result in zip(indices, out):
                    if not live[i][1].done():
                        live[i][1].set_result(result)

    def _expected_s(self, pixels: int) -> float:
        """A run's expected seconds for this many input pixels (0 before warm-up: cost unknown)."""
        return self.model.seconds_per_pixel * pixels * (self.model.stride**2 if self.model.role == "decoder" else 1)

    def _drain(self, batch: list) -> None:
        while len(batch) < self.max_batch_size:
            try:
                batch.append(self.queue.get_nowait())
            except asyncio.QueueEmpty:
                return


def _pixels(item: np.ndarray) -> int:
    return int(item.shape[-1] * item.shape[-2])


def _group_by_shape(indices: list[int], arrays: list[np.ndarray]) -> list[list[int]]:
    groups: dict[tuple, list[int]] = {}
    for i in indices:
        groups.setdefault(arrays[i].shape, []).append(i)
    return list(groups.values())
