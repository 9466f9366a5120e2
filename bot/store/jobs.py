"""The jobs and their queue: the fair queue order and the admission SQL, and Store's jobs part (admit, claim, finish,
fail, cancel, requeue, recover, and where a job stands in the queue)."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable, Sequence

import aiosqlite

from bot.errors import JobNotFound, RateLimited, TooManyQueued, UserError
from bot.store.db import StoreBase, _rowcount, fetch_one
from bot.store.images import _write_files
from bot.store.records import (
    INTERRUPTED_TOO_OFTEN, JOB_KINDS, LOST_TOO_OFTEN, MAX_ATTEMPTS, WINDOW_S, Job, Limits, Recovered,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# The fair queue order, shared by claim_next, queue_position, user_jobs and recover so that they always agree.
#
# Jobs interrupted by a restart (queued, with a start_seq) come first, in the order they first started. Then a
# user's n-th waiting job sits in round n; within a round users go by their last turn (never ran = 0, first), ties
# by their oldest waiting job. Claiming a job moves its user to the back of every later round, which is exactly
# round-robin, so the position computed now is the order in which claim_next will hand the jobs out. With batching
# (claim_batch), a companion that shares the head's call starts before its position said; nobody else starts later.
_QUEUE = """
WITH waiting AS (
    SELECT id, user_id, start_seq FROM jobs WHERE status = 'queued'
),
interrupted AS (
    SELECT id, ROW_NUMBER() OVER (ORDER BY start_seq) AS position FROM waiting WHERE start_seq IS NOT NULL
),
fresh AS (
    SELECT id, user_id, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY id) AS nth
    FROM waiting WHERE start_seq IS NULL
),
users AS (
    SELECT user_id, MIN(id) AS first_id,
           (SELECT COALESCE(MAX(start_seq), 0) FROM jobs AS ran
             WHERE ran.user_id = fresh.user_id AND ran.start_seq IS NOT NULL) AS last_turn
    FROM fresh GROUP BY user_id
),
queue AS (
    SELECT id, position FROM interrupted
    UNION ALL
    SELECT fresh.id,
           (SELECT COUNT(*) FROM interrupted)
           + ROW_NUMBER() OVER (ORDER BY fresh.nth, users.last_turn, users.first_id) AS position
    FROM fresh JOIN users USING (user_id)
)
"""


# Claiming a job: it is running, and takes the next turn (see _QUEUE). claim_batch runs it once per job it claims.
_CLAIM = """
UPDATE jobs
   SET status = 'running', started_at = :now, attempts = attempts + 1,
       start_seq = (SELECT COALESCE(MAX(start_seq), 0) + 1 FROM jobs WHERE start_seq IS NOT NULL)
 WHERE id = :id AND status = 'queued'
RETURNING *
"""


# ---------------------------------------------------------------------------------------------------------------
# Admission: a user's jobs in a channel within the rolling hour (failed ones give their slot back), and their
# waiting jobs. _ADMISSION_COUNTS also gives, for a refusal, the creation time of the job whose ageing-out frees a
# slot (the jobs_per_hour-th newest in the window); _ADMIT inserts the job only if both counts are under the limits.
_ADMISSION_COUNTS = """
SELECT
    (SELECT COUNT(*) FROM jobs
      WHERE user_id = :user AND channel_id = :channel AND created_at > :since AND status != 'failed'),
    (SELECT created_at FROM jobs
      WHERE user_id = :user AND channel_id = :channel AND created_at > :since AND status != 'failed'
      ORDER BY created_at DESC LIMIT 1 OFFSET :skip),
    (SELECT COUNT(*) FROM jobs WHERE user_id = :user AND channel_id = :channel AND status = 'queued')
"""
_ADMIT = """
INSERT INTO jobs (kind, status, user_id, guild_id, channel_id, recipe, parent_id, created_at,
                  interaction_token, token_expires_at)
SELECT :kind, 'queued', :user, :guild, :channel, :recipe, :parent, :now, :token, :expires
 WHERE (SELECT COUNT(*) FROM jobs
         WHERE user_id = :user AND channel_id = :channel AND created_at > :since AND status != 'failed') < :per_hour
   AND (SELECT COUNT(*) FROM jobs WHERE user_id = :user AND channel_id = :channel AND status = 'queued') < :max_queued
RETURNING *
"""


def _raise_if_refused(counts: sqlite3.Row, limits: Limits) -> None:
    """Raise RateLimited or TooManyQueued if the _ADMISSION_COUNTS row says the user is over a limit."""
    recent, oldest_that_counts, queued = counts
    if recent >= limits.jobs_per_hour:
        # A job counts while created_at > now - 1h, so it stops counting exactly at created_at + 1h.
        raise RateLimited(limits.jobs_per_hour, oldest_that_counts + WINDOW_S)
    if queued >= limits.max_queued:
        raise TooManyQueued(limits.max_queued)


class Jobs(StoreBase):
    """Store's jobs part: the jobs table and the queue."""

    # --- jobs ------------------------------------------------------------------------------------------------

    async def check_admission(self, user_id: int, channel_id: int, limits: Limits, now: float | None = None) -> None:
        """Raise the refusal admit() would give now (RateLimited, TooManyQueued, UserError), queueing nothing: one
        read, so a refusal can be told before anything is shown. admit() decides again, atomically."""
        if not limits.enabled or limits.jobs_per_hour < 1:
            raise UserError("Image generation is turned off in this channel.")
        now = time.time() if now is None else now
        counts = {"user": user_id, "channel": channel_id, "since": now - WINDOW_S, "skip": limits.jobs_per_hour - 1}
        _raise_if_refused(await self._read_one(_ADMISSION_COUNTS, counts), limits)

    async def admit(
        self,
        *,
        kind: str,
        user_id: int,
        guild_id: int | None,
        channel_id: int,
        recipe: dict,
        limits: Limits,
        parent_id: int | None = None,
        interaction_token: str | None = None,
        token_expires_at: float | None = None,
        now: float | None = None,
    ) -> Job:
        """Queue a job unless the user is over the channel's limits (RateLimited, TooManyQueued, UserError)."""
        if kind not in JOB_KINDS:
            raise ValueError(f"job kind must be one of {JOB_KINDS}, got {kind!r}")
        now = time.time() if now is None else now
        # 1. The check alone, as one read outside any transaction (no lock, one hop). A refusal from this snapshot,
        #    exact retry_at included, is the decision the request would have got arriving at that moment.
        await self.check_admission(user_id, channel_id, limits, now)
        job = {"kind": kind, "user": user_id, "guild": guild_id, "channel": channel_id, "recipe": json.dumps(recipe),
               "parent": parent_id, "now": now, "token": interaction_token, "expires": token_expires_at,
               "since": now - WINDOW_S, "per_hour": limits.jobs_per_hour, "max_queued": limits.max_queued}
        counts = {key: job[key] for key in ("user", "channel", "since")} | {"skip": limits.jobs_per_hour - 1}

        # 2. Check and insert again as one statement (atomic: it holds the write lock from its start to its end).
        try:
            row = await self._write_statement(_ADMIT, job)
        except sqlite3.IntegrityError:
            if parent_id is not None:  # the only foreign key
                raise JobNotFound(parent_id) from None
            raise
        if row is None:
            # Another admission took the last slot since step 1. Refuse with the counts as they are now, unless
            # a slot freed up meanwhile (a job started or failed): then decide again, in one write transaction.
            _raise_if_refused(await self._read_one(_ADMISSION_COUNTS, counts), limits)

            async def check_and_insert(db: aiosqlite.Connection) -> sqlite3.Row:
                _raise_if_refused(await fetch_one(db, _ADMISSION_COUNTS, counts), limits)
                try:
                    return await fetch_one(db, _ADMIT, job)
                except sqlite3.IntegrityError:
                    if parent_id is not None:
                        raise JobNotFound(parent_id) from None
                    raise

            row = await self._write(check_and_insert)
        return Job.from_row(row)

    async def claim_next(self, now: float | None = None) -> Job | None:
        """Mark the next job in fair order as running and return it; None if nothing is queued."""
        jobs = await self.claim_batch(now=now)
        return jobs[0] if jobs else None

    async def claim_batch(self, plan: Callable[[list[Job]], Sequence[int]] | None = None, *, window: int = 1,
                          now: float | None = None) -> list[Job]:
        """Mark the next job in fair order as running, with the companions `plan` picks to share its pipeline call,
        and return them, head first; [] if nothing is queued.

        `plan` gets the first `window` queued jobs in fair order and returns the ids to run, the one to run first
        first: the head of the queue, or another job of the window (engine/batching.py: prefer_loaded, for a job
        whose model is loaded; then its companions: same batch key, at most one per member). Ids outside the window
        are ignored; with none left, the head runs alone. One write transaction, each job taking its turn as if
        claimed one after another, so queue positions and /queue stay true: a job passed over keeps its place at the
        front, since its member took no turn."""
        now = time.time() if now is None else now

        async def claim(db: aiosqlite.Connection) -> list[sqlite3.Row]:
            queue = [Job.from_row(row) for row in await db.execute_fetchall(
                _QUEUE + "SELECT jobs.* FROM queue JOIN jobs USING (id) ORDER BY queue.position LIMIT ?",
                (max(1, window),),
            )]
            if not queue:
                return []
            offered = {job.id for job in queue}
            ids = list(dict.fromkeys(job_id for job_id in (plan(queue) if plan else ()) if job_id in offered))
            ids = ids or [queue[0].id]
            return [await fetch_one(db, _CLAIM, {"now": now, "id": job_id}) for job_id in ids]

        jobs = [Job.from_row(row) for row in await self._write(claim)]
        for job in jobs:
            log.debug("job %d (%s, user %d) started", job.id, job.kind, job.user_id)
        return jobs

    async def get_job(self, job_id: int) -> Job | None:
        row = await self._read_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else Job.from_row(row)

    async def _update_job(self, job_id: int, sql: str, parameters: Sequence[object]) -> None:
        """Run an UPDATE of one job's columns, the job's id as its last parameter; JobNotFound if no such job."""
        updated = await self._write(lambda db: _rowcount(db, sql, (*parameters, job_id)))
        if updated == 0:
            raise JobNotFound(job_id)

    async def set_message(self, job_id: int, message_id: int) -> None:
        """Remember the Discord message that shows the job. Raises JobNotFound."""
        await self._update_job(job_id, "UPDATE jobs SET message_id = ? WHERE id = ?", (message_id,))

    async def set_interaction(self, job_id: int, token: str | None, expires_at: float | None) -> None:
        """Remember (or forget, with None) the interaction token that can edit the job's message. Raises JobNotFound."""
        await self._update_job(
            job_id, "UPDATE jobs SET interaction_token = ?, token_expires_at = ? WHERE id = ?", (token, expires_at)
        )

    async def finish_job(
        self, job_id: int, *, images: Sequence[bytes], grid: bytes | None, result: dict, now: float | None = None
    ) -> Job:
        """Write the job's PNGs and mark it done. A job that is no longer running (cancelled meanwhile) is returned
        unchanged and its images are not kept; the caller can tell by `job.status`. Raises JobNotFound."""
        now = time.time() if now is None else now
        job = await self.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        if job.status != "running":
            log.debug("job %d finished but is %s; dropping its images", job_id, job.status)
            return job
        job_dir = self._job_dir(job_id)
        files = {f"{index}.png": png for index, png in enumerate(images, start=1)}
        if grid is not None:
            files["grid.png"] = grid
        await asyncio.to_thread(_write_files, job_dir, files)

        async def mark_done(db: aiosqlite.Connection) -> tuple[bool, sqlite3.Row]:
            row = await fetch_one(
                db,
                """
                UPDATE jobs SET status = 'done', finished_at = ?, result = ?, image_count = ?, error = NULL
                 WHERE id = ? AND status = 'running'
                RETURNING *
                """,
                (now, json.dumps(result), len(images), job_id),
            )
            if row is not None:
                return True, row
            return False, await fetch_one(db, "SELECT * FROM jobs WHERE id = ?", (job_id,))

        done, row = await self._write(mark_done)
        job = Job.from_row(row)
        if not done:  # cancelled between our check and the update
            log.debug("job %d finished but is %s; dropping its images", job_id, job.status)
            if job.status != "done":
                await asyncio.to_thread(shutil.rmtree, job_dir, True)
            return job
        log.debug("job %d done in %.1f s", job.id, now - (job.started_at or now))
        return job

    async def fail_job(self, job_id: int, error: str, now: float | None = None) -> Job:
        """Mark a queued or running job failed (it then stops counting against the hourly limit). A job already
        finished or cancelled is returned unchanged. Raises JobNotFound."""
        now = time.time() if now is None else now

        async def mark_failed(db: aiosqlite.Connection) -> tuple[bool, sqlite3.Row | None]:
            row = await fetch_one(
                db,
                """
                UPDATE jobs SET status = 'failed', finished_at = ?, error = ?
                 WHERE id = ? AND status IN ('queued', 'running')
                RETURNING *
                """,
                (now, error, job_id),
            )
            if row is not None:
                return True, row
            return False, await fetch_one(db, "SELECT * FROM jobs WHERE id = ?", (job_id,))

        failed, row = await self._write(mark_failed)
        if row is None:
            raise JobNotFound(job_id)
        if failed:
            log.debug("job %d failed: %s", job_id, error)
        return Job.from_row(row)

    async def cancel_job(self, job_id: int, now: float | None = None) -> Job | None:
        """Cancel a queued or running job and return it; None if there is no such job or it already ended."""
        now = time.time() if now is None else now
        row = await self._write(
            lambda db: fetch_one(
                db,
                """
                UPDATE jobs SET status = 'cancelled', finished_at = ?
                 WHERE id = ? AND status IN ('queued', 'running')
                RETURNING *
                """,
                (now, job_id),
            )
        )
        if row is None:
            return None
        log.debug("job %d cancelled", job_id)
        return Job.from_row(row)

    async def requeue_lost(self, job_id: int, now: float | None = None, *, counted: bool = True) -> Job:
        """A running job whose worker went away (a Ray replica killed, its node lost): back to the front of the
        queue, keeping the turn it took; after MAX_ATTEMPTS lost runs it fails with a sentence for its member.
        counted=False (the cluster couldn't be reached): the run is not counted, so the job never fails for it.
        A job no longer running (cancelled meanwhile) is returned as it is."""
        now = time.time() if now is None else now
        give_up = MAX_ATTEMPTS if counted else 1 << 62

        async def requeue(db: aiosqlite.Connection) -> sqlite3.Row:
            row = await fetch_one(
                db,
                """
                UPDATE jobs SET status = CASE WHEN attempts >= :max THEN 'failed' ELSE 'queued' END,
                       attempts = CASE WHEN :counted THEN attempts ELSE attempts - 1 END,
                       error = CASE WHEN attempts >= :max THEN :error END,
                       finished_at = CASE WHEN attempts >= :max THEN :now END,
                       started_at = CASE WHEN attempts >= :max THEN started_at END
                 WHERE id = :id AND status = 'running'
                RETURNING *
                """,
                {"max": give_up, "counted": counted, "error": LOST_TOO_OFTEN, "now": now, "id": job_id},
            )
            return row or await fetch_one(db, "SELECT * FROM jobs WHERE id = ?", (job_id,))

        return Job.from_row(await self._write(requeue))

    async def recover(self, now: float | None = None) -> Recovered:
        """At start-up: put jobs left running by a crash back in the queue, ahead of everything (in the order they
        first started), except those that were already interrupted before (MAX_ATTEMPTS): they fail with a sentence
        for the member, so that a job that kills the bot cannot crash-loop it. Returns the failed jobs and every
        queued job in queue order, so that the bot can show the former and re-attach the latter's messages."""
        now = time.time() if now is None else now

        async def requeue(db: aiosqlite.Connection) -> tuple[list[sqlite3.Row], list[int], list[sqlite3.Row]]:
            given_up = await db.execute_fetchall(
                """
                UPDATE jobs SET status = 'failed', finished_at = ?, error = ?
                 WHERE status = 'running' AND attempts >= ?
                RETURNING *
                """,
                (now, INTERRUPTED_TOO_OFTEN, MAX_ATTEMPTS),
            )
            running = [job_id for (job_id,) in await db.execute_fetchall(
                "SELECT id FROM jobs WHERE status = 'running' ORDER BY start_seq"
            )]
            if running:
                # Fresh turn numbers after every other: they run first, and their users go to the back afterwards,
                # as if those turns had just been taken (see _QUEUE).
                ((last_turn,),) = await db.execute_fetchall(
                    "SELECT COALESCE(MAX(start_seq), 0) FROM jobs WHERE start_seq IS NOT NULL"
                )
                await db.executemany(
                    "UPDATE jobs SET status = 'queued', started_at = NULL, start_seq = ? WHERE id = ?",
                    [(last_turn + n, job_id) for n, job_id in enumerate(running, start=1)],
                )
            queued = await db.execute_fetchall(
                _QUEUE + "SELECT jobs.* FROM queue JOIN jobs USING (id) ORDER BY queue.position"
            )
            return sorted(given_up, key=lambda row: row["start_seq"]), running, list(queued)

        given_up, running, rows = await self._write(requeue)
        if given_up:
            log.warning("failed %d job(s) interrupted %d times by a restart: %s", len(given_up), MAX_ATTEMPTS,
                        [row["id"] for row in given_up])
        if running:
            log.warning("requeued %d job(s) interrupted by a restart: %s", len(running), running)
        return Recovered(queued=[Job.from_row(row) for row in rows], failed=[Job.from_row(row) for row in given_up])

    async def unfinished_jobs(self) -> list[Job]:
        """Running jobs, then queued ones in the order they will run."""
        rows = await self._read(
            _QUEUE
            + """
            SELECT jobs.* FROM jobs LEFT JOIN queue USING (id)
             WHERE jobs.status IN ('queued', 'running')
             ORDER BY queue.position IS NOT NULL, queue.position, jobs.id
            """
        )
        return [Job.from_row(row) for row in rows]

    async def queue_position(self, job_id: int) -> int | None:
        """1 if the job runs next, 2 after that...; 0 if it is running; None if it is neither queued nor running."""
        row = await self._read_one(
            _QUEUE
            + """
                SELECT CASE status WHEN 'running' THEN 0
                                   WHEN 'queued' THEN (SELECT position FROM queue WHERE queue.id = jobs.id) END
                  FROM jobs WHERE id = ?
                """,
            (job_id,),
        )
        return None if row is None else row[0]

    async def user_jobs(self, user_id: int, guild_id: int | None) -> list[tuple[Job, int]]:
        """The user's running (position 0) and queued jobs in this server (or in DMs for None), in run order."""
        rows = await self._read(
            _QUEUE
            + """
                SELECT jobs.*, CASE jobs.status WHEN 'running' THEN 0 ELSE queue.position END AS position
                  FROM jobs LEFT JOIN queue USING (id)
                 WHERE jobs.user_id = ? AND jobs.guild_id IS ? AND jobs.status IN ('queued', 'running')
                 ORDER BY position, jobs.id
                """,
            (user_id, guild_id),
        )
        return [(Job.from_row(row), row["position"]) for row in rows]
