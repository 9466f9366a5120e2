"""The async face of the engine: a queue of jobs, one engine task, one worker thread that owns the pipeline.

Shape (as aiosqlite's `core.py`): the worker thread takes functions from a thread-safe queue, runs them, and hands
each result back to the event loop with `loop.call_soon_threadsafe`. The event loop never waits on torch.

    submit() / submit_batch() -> asyncio.Queue -> engine task (one call at a time) -> worker thread
        -> Runner.run or Runner.run_batch (engine/pipeline.py)      |-> per-job progress via call_soon_threadsafe

The engine runs what it is given: a batch (jobs with one batch key, chosen by the store with engine/batching.py) is
one pipeline call with per-job progress and per-job outcomes; if that call fails, each job is rerun alone.
torch and diffusers are imported by the worker thread in `start()`, never when `engine` is imported.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Awaitable, Sequence
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
    """Runs image jobs, one pipeline call at a time, on the configured models (`settings.model_sources()`; a job
    names its model, "" the default; up to IMAGINE_MAX_LOADED_MODELS stay loaded); a call is one job or a batch of
    up to max_batch compatible jobs (submit_batch).

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
        self._queue: asyncio.Queue[list[_Job]] = asyncio.Queue()  # one entry per pipeline call
        self._jobs: dict[object, _Job] = {}  # queued and running, by job id
        self._running: list[_Job] = []  # the jobs of the call in progress
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
        defaults = self.defaults
        log.info(
            "engine ready: model %s (%s) on %s (%s), %s, defaults %d steps, guidance %g, %dpx, up to %d job(s) per "
            "call; %d model(s), up to %d loaded; %d LoRA(s)", defaults.name, defaults.model, self._runner.device,
            self._runner.dtype_name, defaults.scheduler, defaults.steps, defaults.guidance, defaults.size,
            self._runner.max_batch, len(self._runner.models.defaults), self._runner.models.max_loaded,
            len(self._runner.models.loras),
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
        """The default model's defaults (steps, guidance, native size, name), with settings applied; every model's
        are in `models`. Valid after start()."""
        if self._runner is None:
            raise RuntimeError("Engine.defaults is known after `await engine.start()`")
        return self._runner.models.defaults[self._runner.models.default]

    @property
    def models(self) -> dict[str, ModelDefaults]:
        """Every configured model's defaults by name, in configured order, the default model first; read from their
        configs at start-up, without loading their weights. Valid after start()."""
        if self._runner is None:
            raise RuntimeError("Engine.models is known after `await engine.start()`")
        return dict(self._runner.models.defaults)

    @property
    def loras(self) -> tuple[str, ...]:
        """The LoRAs a job may name: file stems of IMAGINE_LORA_DIR's .safetensors files, sorted (read at start)."""
        if self._runner is None:
            raise RuntimeError("Engine.loras is known after `await engine.start()`")
        return self._runner.models.loras

    def loaded_models(self) -> tuple[str, ...]:
        """The names of the models on the device now, most recently used first (the default one after start())."""
        return () if self._runner is None else self._runner.models.loaded

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
    def max_batch(self) -> int:
        """Most jobs one pipeline call takes (IMAGINE_MAX_BATCH, or the device's and models' default: the smallest of
        the configured models', so that any batch fits any model); 1 = no batching. Valid after start()."""
        if self._runner is None:
            raise RuntimeError("Engine.max_batch is known after `await engine.start()`")
        return self._runner.max_batch

    def capacity(self) -> int:
        """Calls this backend runs at once: one, on this process's pipeline (bot/backend.py)."""
        return 1

    @property
    def fast_path(self) -> str | None:
        """What the opt-in fast-path settings did (compile and its warm-up, channels_last, VAE, previews), in one
        phrase for the start-up line; None when none of them is on. Valid after start()."""
        if self._runner is None:
            raise RuntimeError("Engine.fast_path is known after `await engine.start()`")
        s = self.settings
        if not (s.compile or s.channels_last or s.vae_model or s.preview_model):
            return None
        return f"{self._runner.fastpath.describe()}, previews: {self._runner.previewer.name}"

    @property
    def queued(self) -> int:
        """Jobs waiting, not counting the running ones."""
        return sum(1 for job in self._jobs.values() if job not in self._running)

    # -- jobs -------------------------------------------------------------------------------------------------

    async def submit(
        self, job_id: object, request: Request, on_progress: ProgressCallback | None = None
    ) -> Result:
        """Queue a job and wait for its Result. Raises JobFailed (a readable sentence) or JobCancelled.

        on_progress is called on the event loop after every denoising step (with a preview every
        settings.preview_every steps). Cancelling the awaiting task cancels the job.
        """
        (outcome,) = self.submit_batch([(job_id, request, on_progress)])
        return await outcome

    def submit_batch(
        self, jobs: Sequence[tuple[object, Request, ProgressCallback | None]]
    ) -> list[Awaitable[Result]]:
        """Queue jobs to run in ONE pipeline call: (job_id, request, on_progress) each, all with one batch key and
        at most max_batch of them. Returns one awaitable per job, in order, each settling on its own: its Result, or
        JobFailed / JobCancelled. Cancelling one job (cancel(), or cancelling its awaiting task) settles it at once;
        the call stops only when every job in it is cancelled. If the call fails, each job is rerun alone.

        with three jobs: a, b, c = engine.submit_batch([(1, req1, show1), (2, req2, show2), (3, req3, show3)])
        """
        if self._task is None:
            raise RuntimeError("await engine.start() before submitting jobs")
        if not jobs:
            raise ValueError("submit_batch needs at least one job")
        if len(jobs) > 1:
            if len(jobs) > self.max_batch:
                raise ValueError(f"a call takes at most {self.max_batch} jobs (IMAGINE_MAX_BATCH), got {len(jobs)}")
            keys = {self._runner.batch_key(request) for _, request, _ in jobs}
            if len(keys) != 1 or None in keys:
                raise ValueError("jobs can share a call only when their batch keys are equal (engine/batching.py)")
        ids = [job_id for job_id, _, _ in jobs]
        if len(set(ids)) != len(ids) or any(job_id in self._jobs for job_id in ids):
            raise ValueError(f"jobs {ids!r}: a job id is repeated, or already queued or running")
        loop = asyncio.get_running_loop()
        batch = [_Job(job_id, request, on_progress, loop.create_future()) for job_id, request, on_progress in jobs]
        for job in batch:
            self._jobs[job.job_id] = job
        self._queue.put_nowait(batch)
        return [self._outcome(job) for job in batch]

    async def _outcome(self, job: _Job) -> Result:
        try:
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            self.cancel(job.job_id)
            raise

    def cancel(self, job_id: object) -> bool:
        """Cancel a queued job now, or a running one after its current step (at once when it shares the call
        with jobs that go on). True if the job was found."""
        job = self._jobs.get(job_id)
        if job is None:
            return False
        job.cancel_event.set()  # the running call sees this in callback_on_step_end
        if job not in self._running:
            self._finish(job, error=JobCancelled(f"job {job_id} was cancelled before it started"))
        elif any(not other.cancel_event.is_set() for other in self._running):
            # Its companions go on: answer now; its images are discarded when the call ends.
            self._finish(job, error=JobCancelled(f"job {job_id} was cancelled while it ran with others"))
        return True

    async def _serve(self) -> None:
        """The engine task: take the next call's jobs, run them in the worker thread, settle each. Forever."""
        while True:
            batch = [job for job in await self._queue.get() if not job.future.done()]  # skip those cancelled
            if not batch:
                continue
            self._running = batch
            try:
                if len(batch) == 1:
                    await self._run_alone(batch[0])
                else:
                    await self._run_together(batch)
            finally:
                self._running = []

    async def _run_alone(self, job: _Job) -> None:
        try:
            result = await self._worker.call(lambda: self._runner.run(job.request, job.cancel_event,
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

    async def _run_together(self, batch: list[_Job]) -> None:
        """One pipeline call for the batch; if it fails, each job still wanted runs alone (and fails alone)."""
        try:
            outcomes = await self._worker.call(lambda: self._runner.run_batch(
                [job.request for job in batch], [job.cancel_event for job in batch],
                [self._progress_sender(job) for job in batch],
            ))
        except Exception as e:
            log.warning("%s; running its jobs %s alone", e, ", ".join(str(job.job_id) for job in batch))
            for job in batch:
                if not job.future.done():
                    self._running = [job]
                    await self._run_alone(job)
            return
        log.debug("jobs %s ran in one call", ", ".join(str(job.job_id) for job in batch))
        for job, outcome in zip(batch, outcomes):
            if isinstance(outcome, BaseException):
                self._finish(job, error=outcome)
            else:
                self._finish(job, result=outcome)

    def _finish(self, job: _Job, *, result: Result | None = None, error: BaseException | None = None) -> None:
        if self._jobs.get(job.job_id) is job:
            del self._jobs[job.job_id]
        _settle(job.future, result, error)

    def _progress_sender(self, job: _Job) -> Callable[..., None] | None:
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

        def send(step: int, total: int, preview: bytes | None, loading: str | None = None) -> None:
            worker.post(deliver, Progress(job.job_id, step, total, preview, loading))

        return send
