"""Feed the engine from the store's queue, one call at a time (a job, or a batch of compatible jobs of different
members), and show each job's life on Discord."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from bot import render
from bot.errors import UserError
from bot.store import Job, Store
from engine import Engine, JobCancelled, JobFailed, Progress, Request, Result, batching

if TYPE_CHECKING:
    from bot.messages import JobMessages

log = logging.getLogger(__name__)

POSITION_UPDATES = 3  # the front of the queue sees itself move up; edits cost rate limit, /queue shows the rest


class JobRunner:
    """The only task that hands work to the engine.

    It claims the next job, with the companions that may share its pipeline call, in one write transaction (the
    store decides whose turn it is; engine/batching.py which queued jobs fit), so the engine stays free of SQL and
    a restart loses nothing: a job that was running goes back to the queue and runs again, unless it was
    interrupted twice (it may be what kills the bot); then it fails and its member is told why.
    """

    def __init__(self, store: Store, engine: Engine, messages: JobMessages) -> None:
        self.store = store
        self.engine = engine
        self.messages = messages
        self._wake = asyncio.Event()
        self._free = asyncio.Event()  # cleared while held(): claim nothing
        self._free.set()
        self._task: asyncio.Task | None = None
        self._refresher: asyncio.Task | None = None
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
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def wake(self) -> None:
        """A job was admitted: look at the queue again."""
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
            # Not in the engine: it was still queued, so nobody else will update its message.
            await self.messages.finished(cancelled, render.cancelled(cancelled))
        return cancelled

    async def _run(self) -> None:
        while True:
            await self._free.wait()
            self._wake.clear()
            try:
                jobs = await self._claim()
            except Exception:
                log.exception("Could not read the job queue; retrying when the next job arrives")
                jobs = []
            if not jobs:
                await self._wake.wait()
                continue
            self._refresher = asyncio.create_task(self._refresh_positions())
            try:
                await self._run_jobs(jobs)
            except Exception:  # the store or Discord broke under us; the next job must still run
                log.exception("Job(s) %s could not be completed", ", ".join(str(job.id) for job in jobs))

    async def _claim(self) -> list[Job]:
        """The head of the fair queue, and the queued jobs of other members that can share its pipeline call."""
        max_batch = self.engine.max_batch

        def plan(queue: list[Job]) -> list[int]:
            return batching.plan(
                [batching.Candidate(job.id, job.user_id, batching.recipe_key(job.kind, job.recipe)) for job in queue],
                max_batch,
            )

        return await self.store.claim_batch(plan, window=1 + batching.WINDOW if max_batch > 1 else 1)

    async def _run_jobs(self, jobs: list[Job]) -> None:
        # 1. Build the engine requests, with the source image for buttons that start from one; a job whose request
        #    cannot be built fails alone, and the others still run.
        runnable: list[tuple[Job, Request]] = []
        for job in jobs:
            try:
                runnable.append((job, await self._request_for(job)))
            except (UserError, ValueError) as error:  # e.g. the source images were pruned; a refused recipe
                failed = await self.store.fail_job(job.id, str(error))
                await self.messages.finished(failed, render.failed(failed))
        if not runnable:
            return

        # 2. Let the engine make them in one call; each job's progress flows back to its own message as it comes.
        outcomes = self.engine.submit_batch([(job.id, request, self._progress_for(job)) for job, request in runnable])

        # 3. Each job's outcome is shown as soon as it is known (a job cancelled mid-batch is answered at once).
        await asyncio.gather(*(self._show(job, outcome) for (job, _), outcome in zip(runnable, outcomes)))

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
        if job.kind in ("variation", "upscale"):
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
        )

    async def _refresh_positions(self) -> None:
        """Everyone still waiting moved up by one; tell the front of the queue (unfinished_jobs is in run order)."""
        waiting = [job for job in await self.store.unfinished_jobs() if job.status == "queued"]
        for job in waiting[:POSITION_UPDATES]:
            await self.messages.queued(job)


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
