"""Each model's scheduler: dynamic batching as Triton does it, tiles of large images, and deadlines.

Each model has a queue of jobs and one worker thread. A job is either one image (batchable: the worker
takes the first waiting image, then every other queued image of the same shape up to max_batch_size,
optionally waiting max_batch_wait_ms for more, and runs them as one tensor) or one tile of a large image
(run alone). Jobs run in arrival order, so a photo's tiles take turns with small requests instead of
holding the model for seconds: a 32x32 request arriving during a 12-megapixel reconstruction waits for
one tile, not for the whole image.

Deadlines: every job carries its request's deadline. A job whose deadline has passed is never started; a
request whose deadline passes while its run is going stops that run (onnxruntime's RunOptions.terminate,
checked between operators) unless other live requests share it, and is answered 504. (Admission, in
service.deps, answers 503 at once when a request could not finish in time anyway.)

Where a run happens: a run expected to be short (under `inline_s`) runs on the event loop itself, because
handing it to a thread and back costs more than the run (measured: 32x32 reconstructions were several
times slower through a thread on 2 cores). Longer runs go to the model's own thread, so the event loop
keeps answering probes meanwhile. A request whose run is expected under `min_run_s` (the study's first
model at 32x32: 0.06 ms) skips the queue altogether; measured on that model, queueing it cost throughput
and doubled the c16 p99.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnxruntime as ort

from service.errors import ServiceError
from service.metrics import Metrics
from service.models import Model


# Runs on the event loop (no deadline can stop them) are also limited in size, whatever their estimate says:
# an estimate that is wrong must not freeze the loop. 32 thumbnails of 32x32.
INLINE_MAX_PIXELS = 32 * 32 * 32


def timeout_error(timeout_s: float) -> ServiceError:
    return ServiceError(504, "inference_timeout", f"inference did not finish within {timeout_s:g} s "
                        "(CAE_INFERENCE_TIMEOUT_S); the work was stopped")


@dataclass(eq=False)
class Job:
    future: asyncio.Future
    deadline: float  # loop.time()
    expected_s: float
    expected_bytes: int = 0
    item: np.ndarray | None = None  # a batchable image (C, H, W) ...
    fn: Callable[[ort.RunOptions], Any] | None = None  # ... or a unit run alone in the model's thread
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def live(self) -> bool:
        return not self.future.done()


class Batcher:
    def __init__(self, model: Model, metrics: Metrics, max_batch_size: int, max_wait_s: float, enabled: bool = True,
                 inline_s: float = 0.002, min_run_s: float = 0.0, timeout_s: float = 30.0):
        self.model, self.metrics, self.inline_s, self.min_run_s = model, metrics, inline_s, min_run_s
        self.max_batch_size, self.max_wait_s, self.enabled, self.timeout_s = max_batch_size, max_wait_s, enabled, timeout_s
        self.queue: deque[Job] = deque()
        self._wakeup = asyncio.Event()
        self._running: tuple[ort.RunOptions, list[Job]] | None = None  # the run going on: options, jobs
        # One thread per model: its session runs one job at a time, the next batch forming meanwhile.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"cae-{model.key}")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._work(), name=f"batcher-{self.model.key}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.abort(ServiceError(503, "shutting_down", "the service is shutting down; retry on another instance",
                                {"Retry-After": "1"}))
        self.executor.shutdown(wait=False, cancel_futures=True)

    def abort(self, error: ServiceError) -> None:
        """Fail every queued and running job with `error` (shutdown)."""
        for job in self.queue:
            if job.live:
                job.future.set_exception(error)
        self.queue.clear()
        if self._running is not None:
            options, jobs = self._running
            for job in jobs:
                if job.live:
                    job.future.set_exception(error)
            options.terminate = True

    def expected_s(self, pixels: int, runs: int = 1) -> float:
        return self.model.cost.seconds(pixels, runs)

    # -- submitting work -------------------------------------------------------------------------------

    async def infer(self, items: list[np.ndarray], deadline: float) -> list[np.ndarray]:
        """Run the model on each (C, H, W) array (batched with others); results in the same order."""
        loop = asyncio.get_running_loop()
        pixels = [self.model.image_pixels(*i.shape[-2:]) for i in items]
        expected = self.expected_s(sum(pixels), len(items))
        if 0 < expected < self.min_run_s and sum(pixels) <= INLINE_MAX_PIXELS:  # too cheap for the queue (module docstring)
            for _ in items:
                self.metrics.queue_wait.labels(self.model.key).observe(0.0)
            return self._run_group(items)
        jobs = [Job(loop.create_future(), deadline, self.expected_s(p), self.model.cost.bytes(p), item=i)
                for i, p in zip(items, pixels)]
        self._submit(jobs)
        return await self._wait(jobs, deadline)

    async def call(self, fn: Callable[[ort.RunOptions], Any], pixels: int, deadline: float, expected_s: float | None = None,
                   expected_bytes: int | None = None) -> Any:
        """Run fn(run_options) alone in the model's thread, in turn with the other jobs (a tile, or a latent's
        refinement: work other than this model's run, whose cost the caller gives)."""
        job = Job(asyncio.get_running_loop().create_future(), deadline, self.expected_s(pixels) if expected_s is None else expected_s,
                  self.model.cost.bytes(pixels) if expected_bytes is None else expected_bytes, fn=fn)
        self._submit([job])
        return (await self._wait([job], deadline))[0]

    def _submit(self, jobs: list[Job]) -> None:
        self.queue.extend(jobs)
        self._wakeup.set()

    async def _wait(self, jobs: list[Job], deadline: float) -> list:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(asyncio.gather(*[j.future for j in jobs]), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise timeout_error(self.timeout_s) from None
        finally:
            self._cancel(jobs)  # a no-op for finished jobs; stops the rest (timeout, shutdown, error)

    def _cancel(self, jobs: list[Job]) -> None:
        for job in jobs:
            if job.live:
                job.future.cancel()
        if self._running is not None:
            options, running_jobs = self._running
            if not any(j.live for j in running_jobs):
                options.terminate = True  # nobody is waiting for this run any more

    # -- the worker --------------------------------------------------------------------------------------

    def _take_same_shape(self, batch: list[Job]) -> None:
        shape = batch[0].item.shape
        keep = deque()
        while self.queue and len(batch) < self.max_batch_size:
            job = self.queue.popleft()
            if job.item is not None and job.item.shape == shape:
                batch.append(job)
            else:
                keep.append(job)
        for job in reversed(keep):
            self.queue.appendleft(job)

    async def _work(self) -> None:
        while True:
            while not self.queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            first = self.queue.popleft()
            if first.live:
                # In a call of its own, so nothing of this batch (inputs of up to hundreds of megabytes) stays
                # referenced from this loop's frame while it waits for the next job.
                await self._run_batch(first)
            del first

    async def _run_batch(self, first: Job) -> None:
        loop = asyncio.get_running_loop()
        batch = [first]
        if first.item is not None and self.enabled:
            self._take_same_shape(batch)
            if self.max_wait_s > 0 and len(batch) < self.max_batch_size:
                await asyncio.sleep(self.max_wait_s)
                self._take_same_shape(batch)
        now = loop.time()
        for job in batch:
            if job.live and now >= job.deadline:  # never start work nobody can use
                job.future.set_exception(timeout_error(self.timeout_s))
        batch = [job for job in batch if job.live]
        if not batch:
            return
        started = time.perf_counter()
        for job in batch:
            self.metrics.queue_wait.labels(self.model.key).observe(started - job.enqueued)
        expected_s = sum(j.expected_s for j in batch)
        options = self.model.run_options(sum(j.expected_bytes for j in batch))
        self._running = (options, batch)
        try:
            if first.fn is not None:
                result = [await loop.run_in_executor(self.executor, first.fn, options)]
            else:
                stacked = np.stack([j.item for j in batch])
                if 0 < expected_s < self.inline_s and stacked.shape[0] * self.model.image_pixels(*stacked.shape[2:]) <= INLINE_MAX_PIXELS:
                    result = list(self.run_now(stacked, options))
                else:
                    result = list(await loop.run_in_executor(self.executor, self.run_now, stacked, options))
                del stacked
        except Exception as e:  # a failing run fails its requests, never the worker
            error = e if isinstance(e, ServiceError) else ServiceError(500, "inference_failed", f"inference failed: {e}")
            if options.terminate:
                error = timeout_error(self.timeout_s)
            for job in batch:
                if job.live:
                    job.future.set_exception(error)
            return
        finally:
            self._running = None
        for job, out in zip(batch, result):
            if job.live:
                job.future.set_result(out)

    def run_now(self, batch: np.ndarray, options: ort.RunOptions | None = None) -> np.ndarray:
        """One session run on the calling thread, recorded in the metrics."""
        started = time.perf_counter()
        out = self.model.run(batch, options)
        self.metrics.inference.labels(self.model.key).observe(time.perf_counter() - started)
        self.metrics.batch_size.labels(self.model.key).observe(len(batch))
        return out

    def _run_group(self, items: list[np.ndarray]) -> list[np.ndarray]:
        """Run items now, on the calling thread, one session run per shape."""
        results: list = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(item.shape, []).append(i)
        for indices in groups.values():
            for i, out in zip(indices, self.run_now(np.stack([items[i] for i in indices]))):
                results[i] = out
        return results
