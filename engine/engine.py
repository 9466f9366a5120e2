"""The async face of the engine: a queue of jobs, one engine task, one worker thread that owns the pipeline.

Shape (as aiosqlite's `core.py`): the worker thread takes functions from a thread-safe queue, runs them, and hands
each result back to the event loop with `loop.call_soon_threadsafe`. The event loop never waits on torch.

    submit() -> asyncio.Queue -> engine task (one job at a time) -> worker thread -> Runner.run (engine/pipeline.py)
                                                                      |-> progress via call_soon_threadsafe

The engine task is the one place that picks the next job, so compatible jobs (same size and recipe) could later be
batched there. torch and diffusers are imported by the worker thread in `start()`, never when `engine` is imported.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from engine.jobs import JobCancelled, JobFailed, ModelDefaults, Progress, Request, Result
from engine.settings import EngineSettings

log = logging.getLogger(__name__)

ProgressCallback = Callable[[Progress], None]


@dataclass(eq=False)
class _Job:
    job_id: object
    request: Request
    on_progress: ProgressCallback | None
    future: asyncio.Future
    cancel_event: threading.Event = field(default_factory=threading.Event)


class _Worker(threading.Thread):
    """The one thread that touches the pipeline. `call(fn)` returns an asyncio future for fn's result."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(name="imagine-engine-worker", daemon=True)
        self._loop = loop
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()

    def call(self, fn: Callable[[], Any]) -> asyncio.Future:
        future = self._loop.create_future()
        self._inbox.put((future, fn))
        return future

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        """Run fn(*args) on the event loop, from this thread; dropped quietly if the loop has closed."""
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # loop closed: nobody is waiting any more
            pass

    def close(self) -> None:
        self._inbox.put(None)

    def run(self) -> None:
        while (item := self._inbox.get()) is not None:
            future, fn = item
            try:
                result = fn()
            except BaseException as e:  # noqa: BLE001 - every outcome must reach the waiting future
                self.post(_settle, future, None, e)
            else:
                self.post(_settle, future, result, None)
            del item, future, fn  # drop references to results and tracebacks before waiting again


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Engine:
    """Runs image jobs one at a time on the pipeline named by `settings.model`.

    engine = Engine(EngineSettings.from_env(os.environ))
    await engine.start()
    result = await engine.submit(job_id, Request("imagine", "a red fox in snow", seeds=(1, 2, 3, 4)))
    await engine.stop()
    """

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self._runner: Any = None  # engine.pipeline.Runner, created in the worker thread
        self._worker: _Worker | None = None
        self._task: asyncio.Task | None = None
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._jobs: dict[object, _Job] = {}  # queued and running, by job id
        self._running: _Job | None = None
        self._device = settings.device  # the resolved device once started

    # -- life cycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Resolve device and dtype and load the pipeline in the worker thread; logs model, device and dtype."""
        if self._worker is not None:
            raise RuntimeError("Engine.start() was already called")
        self._worker = _Worker(asyncio.get_running_loop())
        self._worker.start()
        try:
            self._runner = await self._worker.call(self._load)
        except BaseException:
            self._worker.close()
            await asyncio.to_thread(self._worker.join)
            self._worker = None
            raise
        self._device = self._runner.device
        log.info(
            "engine ready: model %s on %s (%s), %s, defaults %d steps, guidance %g, %dpx",
            self._runner.defaults.model, self._runner.device, self._runner.dtype_name,
            self._runner.defaults.scheduler, self._runner.defaults.steps, self._runner.defaults.guidance,
            self._runner.defaults.size,
        )
        self._task = asyncio.create_task(self._serve(), name="imagine-engine")

    def _load(self) -> Any:
        from engine.pipeline import Runner  # torch and diffusers come in here, in the worker thread

        return Runner.load(self.settings)

    async def stop(self) -> None:
        """Cancel queued and running jobs (they raise JobCancelled), stop the worker thread, free the pipeline."""
        for job in list(self._jobs.values()):
            job.cancel_event.set()
            self._finish(job, error=JobCancelled(f"job {job.job_id} was cancelled: the engine is stopping"))
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._worker is not None:
            if self._runner is not None:
                self._worker.call(self._runner.close)
            self._worker.close()
            await asyncio.to_thread(self._worker.join)
            self._worker = None
        self._runner = None

    # -- what the bot reads -----------------------------------------------------------------------------------

    @property
    def defaults(self) -> ModelDefaults:
        """Per-model defaults (steps, guidance, native size), with settings applied. Valid after start()."""
        if self._runner is None:
            raise RuntimeError("Engine.defaults is known after `await engine.start()`")
        return self._runner.defaults

    @property
    def dtype(self) -> str:
        """The dtype the pipeline computes in ("float16", "bfloat16", "float32"). Valid after start()."""
        if self._runner is None:
            raise RuntimeError("Engine.dtype is known after `await engine.start()`")
        return self._runner.dtype_name

    @property
    def device(self) -> str:
        """The device the pipeline runs on ("cuda", "mps", "cpu"); before start(), the setting ("auto", ...)."""
        return self._device

    @property
    def queued(self) -> int:
        """Jobs waiting, not counting the running one."""
        return sum(1 for job in self._jobs.values() if job is not self._running)

    # -- jobs -------------------------------------------------------------------------------------------------

    async def submit(
        self, job_id: object, request: Request, on_progress: ProgressCallback | None = None
    ) -> Result:
        """Queue a job and wait for its Result. Raises JobFailed (a readable sentence) or JobCancelled.

        on_progress is called on the event loop after every denoising step (with a preview every
        settings.preview_every steps). Cancelling the awaiting task cancels the job.
        """
        if self._task is None:
            raise RuntimeError("await engine.start() before submitting jobs")
        if job_id in self._jobs:
            raise ValueError(f"job {job_id!r} is already queued or running")
        job = _Job(job_id, request, on_progress, asyncio.get_running_loop().create_future())
        self._jobs[job_id] = job
        self._queue.put_nowait(job)
        try:
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            self.cancel(job_id)
            raise

    def cancel(self, job_id: object) -> bool:
        """Cancel a queued job now, or a running one after its current step. True if the job was found."""
        job = self._jobs.get(job_id)
        if job is None:
            return False
        job.cancel_event.set()  # the running job sees this in callback_on_step_end
        if job is not self._running:
            self._finish(job, error=JobCancelled(f"job {job_id} was cancelled before it started"))
        return True

    async def _serve(self) -> None:
        """The engine task: take the next job, run it in the worker thread, settle its future. Forever."""
        while True:
            job = await self._queue.get()
            if job.future.done():  # cancelled while queued
                continue
            self._running = job
            try:
                result = await self._worker.call(lambda job=job: self._runner.run(job.request, job.cancel_event,
                                                                                   self._progress_sender(job)))
            except (JobFailed, JobCancelled) as e:
                self._finish(job, error=e)
            except Exception as e:  # the runner turns errors into JobFailed; this is the last guard
                log.exception("job %s failed unexpectedly", job.job_id)
                self._finish(job, error=JobFailed(f"Something went wrong while making the image ({type(e).__name__})."))
            else:
                log.debug("job %s: %s, %d image(s) %dx%d, %d steps, %.1fs", job.job_id, job.request.kind,
                         len(result.images), result.width, result.height, job.request.steps, result.elapsed)
                self._finish(job, result=result)
            finally:
                self._running = None

    def _finish(self, job: _Job, *, result: Result | None = None, error: BaseException | None = None) -> None:
        if self._jobs.get(job.job_id) is job:
            del self._jobs[job.job_id]
        _settle(job.future, result, error)

    def _progress_sender(self, job: _Job) -> Callable[[int, int, bytes | None], None] | None:
        """A function for the worker thread that delivers Progress to job.on_progress on the event loop."""
        if job.on_progress is None:
            return None
        worker = self._worker

        def deliver(progress: Progress) -> None:
            if job.future.done():
                return
            try:
                job.on_progress(progress)
            except Exception:
                log.exception("on_progress callback for job %s raised", job.job_id)

        def send(step: int, total: int, preview: bytes | None) -> None:
            worker.post(deliver, Progress(job.job_id, step, total, preview))

        return send
