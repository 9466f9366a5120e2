"""Show each job's life on its Discord message: queued, progress, then the result."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import discord

from bot import render
from bot.replies import NO_PINGS, ping
from bot.store import Job

if TYPE_CHECKING:
    from bot.bot import ImagineBot

log = logging.getLogger(__name__)

TOKEN_MARGIN = 30  # stop using an interaction token this many seconds before it expires

QUEUED, RUNNING, FINAL = range(3)

# Discord lets a bot edit messages in one channel about 5 times per 5 s; past that it answers 429 and every
# later edit in the channel waits in line, results included.
EDITS_PER_WINDOW = 5
EDIT_WINDOW = 5.0
# A result is never dropped for a busy channel: after discord.py's own retries give up on a 429 or a 5xx, it is sent
# again after these pauses (seconds).
RESULT_RETRIES = (2.0, 5.0, 15.0, 30.0)


class EditBudget:
    """Spends each channel's edit allowance on what matters: results always, waiting and progress when there's room.

    A skipped "waiting" or progress edit costs nothing: the next one (or the result) replaces it anyway.
    """

    def __init__(self, per_window: int = EDITS_PER_WINDOW, window: float = EDIT_WINDOW) -> None:
        self.per_window = per_window
        self.window = window
        self._spent: dict[int, deque[float]] = defaultdict(deque)

    def spend(self, channel_id: int, *, force: bool = False) -> bool:
        now = time.monotonic()
        spent = self._spent[channel_id]
        while spent and now - spent[0] >= self.window:
            spent.popleft()
        if len(spent) >= self.per_window and not force:
            return False
        spent.append(now)
        return True


@dataclass
class _Showing:
    phase: int = QUEUED
    last_edit: float = 0.0
    started: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    progress_task: asyncio.Task | None = None


class JobMessages:
    """Shows each job on its Discord message.

    While the interaction token is fresh, a job's message is the interaction's original response, edited through
    the interaction webhook. After that (a long queue, or a restart), Discord no longer accepts edits through the
    token, so the final result is posted as a fresh channel message that mentions the member. Updates never go
    backwards (a late "queued" edit never hides progress), and progress edits are throttled per message.
    """

    def __init__(self, bot: ImagineBot, interval: float) -> None:
        self.bot = bot
        self.interval = interval
        self._showing: dict[int, _Showing] = {}
        self.budget = EditBudget()
        # Results of one channel go out one at a time: sent together, they would all wait out the same 429 and
        # retry together, and some would run out of retries.
        self._results: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def queued(self, job: Job, *, restarted: bool = False, lost: bool = False, unreachable: bool = False) -> None:
        """The job waits; `lost`: again, after the worker making it went away (its progress no longer holds);
        `unreachable`: until the GPU workers can be reached again."""
        if lost and (showing := self._showing.get(job.id)):
            if showing.progress_task:
                await asyncio.gather(showing.progress_task, return_exceptions=True)
            self._showing.pop(job.id, None)
        position = await self.bot.store.queue_position(job.id)
        await self._show(job, QUEUED, render.queued(job, position, restarted=restarted, lost=lost,
                                                             unreachable=unreachable), throttle=False)

    def progress(self, job: Job, step: int, total: int, preview: bytes | None, *, loading: str | None = None) -> None:
        """Called for every engine step and never waits for Discord.

        The first step is shown at once (the member sees their job start); later ones at most once per interval.
        `loading`: the job's model is being loaded first (step 0), shown at once too.
        """
        showing = self._showing.setdefault(job.id, _Showing())
        if showing.progress_task is not None and not showing.progress_task.done():
            return
        first = not showing.started or loading is not None
        if not first and time.monotonic() - showing.last_edit < self.interval:
            return
        showing.started = True
        shown = render.progress(job, step, total, preview, loading=loading)
        showing.progress_task = asyncio.create_task(self._show(job, RUNNING, shown, throttle=not first))

    async def finished(self, job: Job, shown: render.Shown) -> None:
        """The final state of a job: its images, its failure or its cancellation. Never dropped."""
        showing = self._showing.get(job.id)
        if showing and showing.progress_task:
            await asyncio.gather(showing.progress_task, return_exceptions=True)
        await self._show(job, FINAL, shown, throttle=False)
        self._showing.pop(job.id, None)

    async def _show(self, job: Job, phase: int, shown: render.Shown, *, throttle: bool) -> None:
        showing = self._showing.setdefault(job.id, _Showing())
        async with showing.lock:
            if phase < showing.phase or (throttle and time.monotonic() - showing.last_edit < self.interval):
                return
            fresh = await self.bot.store.get_job(job.id) or job  # the token may have moved since `job` was read
            if (phase == QUEUED and fresh.status != "queued") or (phase == RUNNING and fresh.status != "running"):
                return  # a late update about a state the job has already left
            if not self.budget.spend(job.channel_id, force=phase == FINAL):
                return
            showing.phase = phase
            if phase == FINAL:
                async with self._results[job.channel_id]:
                    await self._deliver_result(fresh, shown)
            else:
                try:
                    await self._deliver(fresh, phase, shown)
                except discord.HTTPException as error:
                    log.warning("Could not update the message of job %s: %s", job.id, error)
                except Exception:
                    log.exception("Could not update the message of job %s", job.id)
            showing.last_edit = time.monotonic()

    async def _deliver_result(self, job: Job, shown: render.Shown) -> None:
        """Show a job's final state, trying again later while Discord is busy (429) or failing (5xx)."""
        for pause in (*RESULT_RETRIES, None):
            try:
                await self._deliver(job, FINAL, shown)
                return
            except discord.HTTPException as error:
                if pause is None or not (error.status == 429 or error.status >= 500):
                    log.warning("Could not show the result of job %s: %s", job.id, error)
                    return
                log.info("Discord is busy (%s); showing the result of job %s again in %g s", error.status, job.id,
                         pause)
            except Exception:
                log.exception("Could not show the result of job %s", job.id)
                return
            await asyncio.sleep(pause)
            job = await self.bot.store.get_job(job.id) or job  # the token may have been dropped meanwhile
            shown = _with_fresh_files(shown)


    async def _deliver(self, job: Job, phase: int, shown: render.Shown) -> None:
        store = self.bot.store
        if job.interaction_token and (job.token_expires_at or 0) - TOKEN_MARGIN > time.time():
            webhook = discord.Webhook.partial(self.bot.application_id, job.interaction_token, client=self.bot)
            try:
                message = await webhook.edit_message(
                    "@original",  # type: ignore[arg-type]  # Discord's alias for the interaction's first response
                    content=shown.content,
                    embed=shown.embed,
                    attachments=shown.files,
                    view=shown.view,
                    allowed_mentions=NO_PINGS,  # the member asked and is watching: no ping while the token works
                )
            except discord.HTTPException as error:
                if error.status not in (401, 404):
                    raise
                log.info("Interaction token of job %s is no longer accepted; moving to a channel message", job.id)
            else:
                if job.message_id != message.id:
                    await store.set_message(job.id, message.id)
                return
            await store.set_interaction(job.id, None, None)

        if phase != FINAL:
            return  # without a token only the result is worth a fresh message (and the ping that comes with it)
        channel = self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
        message = await channel.send(
            content=shown.content,
            embed=shown.embed or discord.utils.MISSING,
            files=shown.files,
            view=shown.view or discord.utils.MISSING,
            allowed_mentions=ping(job.user_id),  # the one ping the bot sends: your result is here
        )
        await store.set_message(job.id, message.id)


def _with_fresh_files(shown: render.Shown) -> render.Shown:
    """The same message with new File objects: discord.py has read (and released) the ones of the last try."""
    files = [discord.File(io.BytesIO(f.fp.getvalue()), filename=f.filename, description=f.description)
             for f in shown.files]
    return dataclasses.replace(shown, files=files)
