"""Feed the backend from the store's queue, up to its capacity() calls at once (each a job, or a batch of compatible
jobs of different members), and show each job's life on Discord."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from bot import render
from bot.backend import Backend
from bot.errors import UserError
from bot.store import Job, Store
from engine import JobCancelled, JobFailed, JobLost, Progress, Request, Result, batching

if TYPE_CHECKING:
    from bot.messages import JobMessages

log = logging.getLogger(__name__)

POSITION_UPDATES = 3  # the front of the queue sees itself move up; edits cost rate limit, /queue shows the rest
CAPACITY_EVERY = 5.0  # seconds between looks at backend.capacity() while idle or full (Ray replicas come and go)


class JobRunner:
    """The only task that hands work to the backend (bot/backend.py).

    It keeps up to backend.capacity() calls in flight (one for the local engine, one per running replica on Ray);
    each free slot claims the next turn, with the companions that may share its call, in one write transaction (the
    store decides whose turn it is; engine/batching.py which queued jobs fit), so the backend stays free of SQL and
    a restart loses nothing: a job that was running goes back to the queue and runs again, unless it was
    interrupted twice (it may be what kills the bot); then it fails and its member is told why. A slot is free again
    as soon as the backend is done with its call: showing the results on Discord does not hold it.
    """

    def __init__(self, store: Store, engine: Backend, messages: JobMessages) -> None:
        self.store = store
        self.engine = engine
        self.messages = messages
        self._wake = asyncio.Event()
        self._free = asyncio.Event()  # cleared while held(): claim nothing
        self._free.set()
        self._task: asyncio.Task | None = None
        self._calls: set[asyncio.Task] = set()  # calls in flight, one per busy slot
        self._shows: set[asyncio.Task] = set()  # results being shown on Discord
        self._stalled = False  # capacity() was 0 at the last look
        self.recovered = 0  # unfinished jobs taken back after a restart (the bot's ready line says how many)

    async def start(self) -> None:
        recovered = await self.store.recover()
        for job in recovered.failed:  # interrupted once too often: likely what brought the bot down
            log.info("Job %s failed: %s for user %s: %s", job.id, job.kind, job.user_id, job.error)
            await self.messages.finished(job, render.failed(job))
        self.recovered = len(recovered.queued)
        if recovered.queued:
            log.debug("Re-attached %d unfinished job(s) after a restart", len(recovered.queued))
        for job in recovered.queued:
            await self.messages.queued(job, restarted=True)
        self._task = asyncio.create_task(self._run(), name="imagine-runner")

    async def stop(self) -> None:
        tasks = [task for task in (self._task, *self._calls, *self._shows) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    def wake(self) -> None:
        """A job was admitted, or a slot came free: look at the queue again."""
        self._wake.set()

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Start no new job while inside (the one running goes on): jobs queue up, then run, batched where they fit.
        Tests use it to line jobs up without racing the engine."""
        self._free.clear()
        try:
            yield
        finally:
            self._free.set()

    async def cancel(self, job: Job) -> Job | None:
        """Cancel a queued or running job; the member's message says so either way."""
        cancelled = await self.store.cancel_job(job.id)
        if cancelled is None:
            return None
        if not self.engine.cancel(job.id):
            # Not in the backend (still queued, or its worker is gone): nobody else will update its message.
            await self.messages.finished(cancelled, render.cancelled(cancelled))
        return cancelled

    async def _run(self) -> None:
        while True:
            await self._free.wait()
            self._wake.clear()
            capacity = self.engine.capacity()
            if capacity == 0 and not self._stalled:  # no worker can be reached: the front of the queue hears why
                self._track(self._refresh_positions(unreachable=True))
            self._stalled = capacity == 0
            if len(self._calls) >= capacity:
                await self._sleep()  # a call ends, a job comes, or it is time to read the capacity again
                continue
            try:
                jobs = await self._claim()
            except Exception:
                log.exception("Could not read the job queue; retrying when the next job arrives")
                jobs = []
            if not jobs:
                await self._sleep()
                continue
            call = asyncio.create_task(self._call(jobs), name=f"imagine-call-{jobs[0].id}")
            self._calls.add(call)
            call.add_done_callback(self._call_done)
            self._track(self._refresh_positions())

    async def _sleep(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), CAPACITY_EVERY)

    def _call_done(self, call: asyncio.Task) -> None:
        self._calls.discard(call)
        if not call.cancelled() and call.exception() is not None:  # the store or Discord broke under us
            log.error("A call could not be completed", exc_info=call.exception())
        self.wake()

    def _track(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._shows.add(task)
        task.add_done_callback(self._shows.discard)

    async def _claim(self) -> list[Job]:
        """The head of the fair queue, and the queued jobs of other members that can share its pipeline call."""
        max_batch = self.engine.max_batch

        def plan(queue: list[Job]) -> list[int]:
            return batching.plan(
                [batching.Candidate(job.id, job.user_id, batching.recipe_key(job.kind, job.recipe)) for job in queue],
                max_batch,
            )

        return await self.store.claim_batch(plan, window=1 + batching.WINDOW if max_batch > 1 else 1)

    async def _call(self, jobs: list[Job]) -> None:
        """One slot's call: hold the slot until the backend is done with every job of it; results show apart."""
        # 1. Build the requests, with the source image for buttons that start from one; a job whose request
        #    cannot be built fails alone, and the others still run.
        runnable: list[tuple[Job, Request]] = []
        for job in jobs:
            try:
                runnable.append((job, await self._request_for(job)))
            except (UserError, ValueError) as error:  # e.g. the source images were pruned; a refused recipe
                failed = await self.store.fail_job(job.id, str(error))
                self._track(self.messages.finished(failed, render.failed(failed)))
        if not runnable:
            return

        # 2. Let the backend make them in one call; each job's progress flows back to its own message as it comes.
        outcomes = [asyncio.ensure_future(outcome) for outcome in self.engine.submit_batch(
            [(job.id, request, self._progress_for(job)) for job, request in runnable])]

        # 3. Each job's outcome is shown as soon as it is known (a job cancelled mid-batch is answered at once),
        #    while the slot is already free for the next call.
        for (job, _), outcome in zip(runnable, outcomes):
            self._track(self._show(job, outcome))
        await asyncio.wait(outcomes)

        # 4. A job whose worker went away goes back to the front of the queue before this slot claims again.
        for (job, _), outcome in zip(runnable, outcomes):
            if not outcome.cancelled() and isinstance(outcome.exception(), JobLost):
                await self._requeue(job, outcome.exception())

    async def _requeue(self, job: Job, error: JobLost) -> None:
        job = await self.store.requeue_lost(job.id, counted=error.worker_died)
        if job.status == "queued":
            log.warning("Job %s requeued: %s", job.id, error)
            await self.messages.queued(job, lost=True, unreachable=not error.worker_died)
        elif job.status == "failed":  # lost MAX_ATTEMPTS times
            log.info("Job %s failed: %s for user %s: %s", job.id, job.kind, job.user_id, job.error)
            await self.messages.finished(job, render.failed(job))

    def _progress_for(self, job: Job):
        def on_progress(progress: Progress) -> None:
            self.messages.progress(job, progress.step, progress.total, progress.preview)

        return on_progress

    async def _show(self, job: Job, outcome) -> None:
        try:
            await self._show_outcome(job, outcome)
        except Exception:  # the store or Discord broke under us; the batch's other jobs must still be shown
            log.exception("Job %s could not be completed", job.id)

    async def _show_outcome(self, job: Job, outcome) -> None:
        try:
            result = await outcome
        except JobCancelled:
            job = await self.store.get_job(job.id) or job
            log.info("Job %s cancelled: %s for user %s", job.id, job.kind, job.user_id)
            await self.messages.finished(job, render.cancelled(job))
            return
        except JobLost:
            return  # its call puts it back in the queue (_requeue)
        except JobFailed as error:
            job = await self.store.fail_job(job.id, str(error))
            log.info("Job %s failed: %s for user %s: %s", job.id, job.kind, job.user_id, error)
            await self.messages.finished(job, render.failed(job))
            return
        except Exception:
            log.exception("Job %s failed unexpectedly", job.id)
            job = await self.store.fail_job(
                job.id, "Something went wrong on my side while making this; please try again.")
            await self.messages.finished(job, render.failed(job))
            return

        # Keep the images for the buttons, then show the result.
        job = await self.store.finish_job(job.id, images=result.images, grid=result.grid, result=_summary(result))
        if job.status != "done":
            return  # cancelled just before the engine took it; its message already says so
        log.info("Job %s done: %s for user %s, %dx%d, %.1f s", job.id, job.kind, job.user_id, result.width,
                 result.height, result.elapsed)
        parent = await self.store.get_job(job.parent_id) if job.parent_id else None
        shown = render.finished(job, list(result.images), result.grid, parent=parent,
                                nsfw_ok=job.recipe.get("nsfw_ok", False))
        await self.messages.finished(job, shown)

    async def _request_for(self, job: Job) -> Request:
        recipe = job.recipe
        kind, init_image = job.kind, None
        if job.kind in ("variation", "upscale", "zoom", "pan"):
            # Zoom and pan start from the grid cell the upscale came from, at its grid size (not the upscale).
            init_image = await self.store.image(recipe["source_job"], recipe["source_index"])
        elif recipe.get("image_prompt"):
            # An image prompt (and its 🔄) is image to image from the member's picture, already fitted to the size.
            kind, init_image = "variation", await self.store.prompt_image(recipe["image_prompt"])
        return Request(
            kind=kind,
            prompt=recipe["prompt"],
            negative_prompt=recipe.get("negative_prompt", ""),
            width=recipe["width"],
            height=recipe["height"],
            steps=recipe["steps"],
            guidance=recipe["guidance"],
            seeds=tuple(recipe["seeds"]),
            init_image=init_image,
            strength=recipe.get("strength"),
            image_weight=recipe.get("image_weight") if recipe.get("image_prompt") else None,
            zoom=recipe.get("zoom") if job.kind == "zoom" else None,
            pan=recipe.get("pan") if job.kind == "pan" else None,
        )

    async def _refresh_positions(self, *, unreachable: bool = False) -> None:
        """Everyone still waiting moved up by one (or waits for a worker to be back); tell the front of the queue
        (unfinished_jobs is in run order)."""
        waiting = [job for job in await self.store.unfinished_jobs() if job.status == "queued"]
        for job in waiting[:POSITION_UPDATES]:
            await self.messages.queued(job, unreachable=unreachable)


def _summary(result: Result) -> dict:
    return {
        "seeds": list(result.seeds),
        "nsfw": list(result.nsfw),
        "width": result.width,
        "height": result.height,
        "elapsed": round(result.elapsed, 2),
        "model": result.model,
        "scheduler": result.scheduler,
        "prompt_truncated": result.prompt_truncated,
    }
