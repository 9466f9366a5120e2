"""The SQLite store: the job queue and history, moderator limits, banned words, and image files on disk.

The connection is an aiosqlite one (its own thread; each statement is one hop from the event loop). Every write is
`BEGIN IMMEDIATE ... COMMIT`, or one statement in autocommit (which SQLite runs the same way), so two Store objects
(two connections, two processes) on the same file never over-admit, and within one Store an asyncio.Lock keeps the
statements of concurrent transactions from interleaving on the shared connection. Each write is as few statements as
it can be. An admission is first checked with one plain SELECT (no lock: a refusal needs nothing else), then made by
one `INSERT ... SELECT ... WHERE <under the limits>` in autocommit, so checking and inserting are atomic across
connections: two hops for an admission, one for a refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.resources
import json
import logging
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bot.errors import (
    ImagesDeleted, ImagesGone, InvalidLimit, JobNotFound, RateLimited, TooManyQueued, UserError, quoted,
)

log = logging.getLogger(__name__)

JOB_KINDS = ("imagine", "reroll", "variation", "upscale", "zoom", "pan")
WINDOW_S = 3600.0  # the rolling hour of Limits.jobs_per_hour
# A job interrupted this many times (the process died while it ran: the OOM killer, a driver crash) is not run
# again: it would likely kill the bot again, and every restart would start with it.
MAX_ATTEMPTS = 2
INTERRUPTED_TOO_OFTEN = (
    "The bot stopped twice while making this, so it won't try a third time: it may be too big for this server. "
    "Try a smaller size or fewer steps, or ask the server owner to look at the bot's log."
)
LOST_TOO_OFTEN = (
    "The GPU worker making this went away twice, so I won't try a third time: it may be too big for this server. "
    "Try a smaller size or fewer steps, or ask the server owner to look at the Ray cluster's logs."
)
BUSY_TIMEOUT_MS = 10_000
PROMPT_GRACE = 3600.0  # seconds a kept picture that no job names yet is left alone (its job may be being admitted)
T = TypeVar("T")


@dataclass(frozen=True)
class Recovered:
    """What Store.recover found at start-up."""

    queued: list[Job]  # every queued job in queue order, the interrupted ones (requeued) first
    failed: list[Job]  # jobs interrupted for the MAX_ATTEMPTS-th time, now failed with INTERRUPTED_TOO_OFTEN


class SchemaTooNew(RuntimeError):
    """The database was written by a newer version of the bot than this one."""


class MigrationError(RuntimeError):
    """A migration file is malformed or failed; the database is left at the last good version."""


@dataclass(frozen=True)
class Limits:
    enabled: bool = True  # bot enabled in the channel
    jobs_per_hour: int = 10  # jobs per user per rolling hour, per channel
    max_queued: int = 2  # max queued (not yet running) jobs per user, per channel
    max_steps: int = 50
    max_side: int = 1024  # max image side in px
    nsfw_allowed: bool = False  # only honoured in age-restricted channels (the bot decides)


LIMIT_KEYS = ("enabled", "jobs_per_hour", "max_queued", "max_steps", "max_side", "nsfw_allowed")
# Accepted ranges of the integer limits, inclusive.
LIMIT_RANGES = {"jobs_per_hour": (1, 1000), "max_queued": (1, 100), "max_steps": (1, 150), "max_side": (64, 4096)}


@dataclass(frozen=True)
class Preferences:
    """A member's own preferences in one server (/settings, /prefer); the defaults for a member who set none."""

    remix: bool = False  # 🔄 and the variation buttons first open a "Remix" modal with the prompt to edit
    variation: str = "strong"  # what V1-V4 use: "strong" or "subtle" (bot/admission.py STRENGTHS)
    aspect: str | None = None  # default aspect ratio of their prompts; None: the model's default
    suffix: str = ""  # appended to every prompt they send (flags allowed)


PREFERENCE_KEYS = ("remix", "variation", "aspect", "suffix")


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    status: str  # queued|running|done|failed|cancelled
    user_id: int
    guild_id: int | None
    channel_id: int
    recipe: dict  # prompt, negative_prompt, width, height, steps, guidance, seeds, strength, source image index...
    parent_id: int | None  # job whose image this one uses (buttons)
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    message_id: int | None  # the Discord message that shows this job
    interaction_token: str | None = field(repr=False)  # edits the original response while valid (15 min)
    token_expires_at: float | None
    result: dict | None  # from finish_job: seeds, nsfw flags, elapsed, model...
    image_count: int  # images kept on disk for this job (0 if none or pruned)
    images_pruned: bool
    attempts: int  # times the job was handed to the engine (claim_next); a restart cuts an attempt short
    images_deleted_at: float | None = None  # when its requester or a moderator deleted its images (❌)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        values = {f.name: row[f.name] for f in fields(cls)}
        values["recipe"] = json.loads(values["recipe"])
        values["result"] = None if values["result"] is None else json.loads(values["result"])
        values["images_pruned"] = bool(values["images_pruned"])
        return cls(**values)


async def connect(path: str | Path) -> aiosqlite.Connection:
    """Open a connection the way every connection to the store is opened: autocommit (we BEGIN ourselves), WAL."""
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        db.row_factory = aiosqlite.Row
        # First, so that switching to WAL waits for another process instead of failing.
        await db.execute_fetchall(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
        ((mode,),) = await db.execute_fetchall("PRAGMA journal_mode = WAL")
        if mode.lower() != "wal":
            log.warning("SQLite refused WAL for %s (journal_mode=%s); concurrent access will be slower", path, mode)
        await db.execute_fetchall("PRAGMA synchronous = NORMAL")  # in WAL: durable at checkpoints, never corrupt
        await db.execute_fetchall("PRAGMA foreign_keys = ON")
    except BaseException:
        await db.close()
        raise
    return db


async def fetch_one(db: aiosqlite.Connection, sql: str, parameters: Any = ()) -> sqlite3.Row | None:
    """The first row of a statement, or None, in one hop (execute + fetchone would be two, and leave it unfinished)."""
    rows = await db.execute_fetchall(sql, parameters)
    return next(iter(rows), None)


async def _rowcount(db: aiosqlite.Connection, sql: str, parameters: Any = ()) -> int:
    """Run one INSERT/UPDATE/DELETE and return how many rows it changed, in one hop."""
    cursor = await db.execute(sql, parameters)
    return cursor.rowcount


async def _begin_immediate(db: aiosqlite.Connection) -> None:
    """BEGIN IMMEDIATE, retried if another connection holds the write lock even past busy_timeout."""
    for attempt in range(1, 11):
        try:
            await db.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e) or attempt == 10:
                raise
            log.warning("database busy for %d ms, retrying BEGIN IMMEDIATE (attempt %d)", BUSY_TIMEOUT_MS, attempt)
            await asyncio.sleep(0.05 * attempt)


async def transaction(db: aiosqlite.Connection, body: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
    """Run `body` in one write transaction, committed if it returns, rolled back if it (or COMMIT) raises.

    The caller makes sure no other coroutine uses `db` until this returns (Store._write holds the Store's lock)."""
    await _begin_immediate(db)
    try:
        result = await body(db)
        await db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite may already have rolled back by itself (e.g. on SQLITE_FULL)
            await db.execute("ROLLBACK")
        raise
    return result


# ---------------------------------------------------------------------------------------------------------------
# Migrations


def migrations_folder() -> Traversable:
    """The SQL migrations: the top-level migrations/ folder of a checkout (tests, `python -m bot`, `pip install -e`),
    else the copy installed inside the package as `bot.migrations` (pyproject.toml maps the folder there), read
    with importlib.resources so that a wheel works like a checkout. MigrationError if neither is there."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "migrations").is_dir():
        return checkout / "migrations"
    try:
        return importlib.resources.files("bot.migrations")
    except ModuleNotFoundError:
        raise MigrationError(_NO_MIGRATIONS.format(where=f"{Path(__file__).parent / 'migrations'}")) from None


_NO_MIGRATIONS = (
    "no database migrations found in {where}; this installation of the bot is incomplete, "
    "reinstall it (pip install --force-reinstall imagine-bot, or pip install -e . in a checkout)"
)


def _read_migrations(migrations_dir: Traversable) -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every NNNN_name.sql, checked to be numbered 1, 2, 3... with a header comment."""
    found = []
    files = sorted((entry for entry in migrations_dir.iterdir() if entry.name.endswith(".sql")), key=lambda e: e.name)
    if not files:
        raise MigrationError(_NO_MIGRATIONS.format(where=migrations_dir))
    for path in files:
        match = re.fullmatch(r"(\d+)_\w+\.sql", path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named like 0003_what_it_does.sql")
        sql = path.read_text(encoding="utf-8")
        if not sql.startswith("--"):
            raise MigrationError(f"{path}: the first line must be a '-- why' comment")
        found.append((int(match.group(1)), path.name, sql))
    for expected, (version, name, _) in enumerate(found, start=1):
        if version != expected:
            raise MigrationError(f"{migrations_dir}: expected migration {expected:04d}, found {name}")
    return found


def _statements(sql: str) -> list[str]:
    """Split a script into statements (a ';' inside a string or a trigger body does not end one)."""
    statements, pending = [], ""
    for piece in sql.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    # What follows the last ';' is blank or comments.
    return [s for s in statements if s.strip(";").strip()]


def _too_new(path: Path, current: int, known: int) -> SchemaTooNew:
    return SchemaTooNew(
        f"{path.name} is at schema version {current} but this bot only knows up to {known}; "
        "upgrade the bot or restore a backup"
    )


async def migrate(db: aiosqlite.Connection, path: Path, migrations: list[tuple[int, str, str]]) -> int:
    """Apply the migrations (from _read_migrations) the database lacks, each in its own transaction; returns the
    resulting version.

    Not executescript: it would commit first and leave a failed migration half-applied. Foreign keys are off while
    migrations run (a PRAGMA that only works outside a transaction), so that a migration may rebuild a table others
    point at (SQLite cannot alter a CHECK constraint); each migration checks them before it commits instead."""
    known = len(migrations)
    ((current,),) = await db.execute_fetchall("PRAGMA user_version")
    if current > known:
        raise _too_new(path, current, known)
    if current == known:
        return known
    await db.execute_fetchall("PRAGMA foreign_keys = OFF")
    try:
        return await _apply_migrations(db, path, migrations, current)
    finally:
        await db.execute_fetchall("PRAGMA foreign_keys = ON")


async def _apply_migrations(db: aiosqlite.Connection, path: Path, migrations: list[tuple[int, str, str]],
                            current: int) -> int:
    known = len(migrations)

    async def apply(db: aiosqlite.Connection, version: int, sql: str) -> bool:
        # Read again inside the write transaction: another process may have migrated the file meanwhile.
        ((current,),) = await db.execute_fetchall("PRAGMA user_version")
        if current > known:
            raise _too_new(path, current, known)
        if current >= version:
            return False
        for statement in _statements(sql):
            await db.execute(statement)
        broken = await db.execute_fetchall("PRAGMA foreign_key_check")
        if broken:
            table, rowid, parent, _ = broken[0]
            raise sqlite3.IntegrityError(f"{len(broken)} row(s) point at missing rows, e.g. {table} row {rowid} "
                                         f"at {parent}")
        # user_version lives in the database header, so it commits (or rolls back) with the migration.
        await db.execute(f"PRAGMA user_version = {version:d}")
        return True

    for version, name, sql in migrations[current:]:
        try:
            applied = await transaction(db, lambda db: apply(db, version, sql))
        except sqlite3.Error as e:
            raise MigrationError(
                f"migration {name} failed on {path.name}: {e}; the database was left at version {version - 1}"
            ) from e
        if applied:
            log.info("applied migration %s to %s", name, path.name)
    return known


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


# ---------------------------------------------------------------------------------------------------------------
# Limits


def _parse_limit(key: str, value: object) -> bool | int:
    """Validate a moderator's value for `key` (a bool/int, or the text of one) and return it typed."""
    if key not in LIMIT_KEYS:
        raise InvalidLimit(f"There is no limit called '{quoted(key)}'; the limits are: {', '.join(LIMIT_KEYS)}.")
    if isinstance(Limits.__dataclass_fields__[key].default, bool):
        if isinstance(value, bool):
            return value
        words = {"true": True, "yes": True, "on": True, "1": True,
                 "false": False, "no": False, "off": False, "0": False}
        if isinstance(value, str) and value.strip().lower() in words:
            return words[value.strip().lower()]
        raise InvalidLimit(f"'{key}' is on or off (true/false), got '{quoted(value)}'.")
    low, high = LIMIT_RANGES[key]
    try:
        if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
            raise ValueError
        number = int(value.strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidLimit(f"'{key}' must be a whole number from {low} to {high}, got '{quoted(value)}'.") from None
    if not low <= number <= high:
        raise InvalidLimit(f"'{key}' must be from {low} to {high}, got {number}.")
    return number


def _normalise_word(word: str) -> str:
    normalised = " ".join(word.split()).lower()
    if not normalised:
        raise UserError("A banned word can't be empty.")
    if len(normalised) > 100:
        raise UserError("A banned word can be at most 100 characters long.")
    return normalised


# ---------------------------------------------------------------------------------------------------------------


class Store:
    """The bot's database. Open with `await Store.open(path)`, close with `await store.close()`."""

    def __init__(self, db: aiosqlite.Connection, path: Path, images_dir: Path):
        self._db = db
        self._lock = asyncio.Lock()  # held for the whole of each write transaction on `_db`
        self._writes: set[asyncio.Task[Any]] = set()  # write transactions asked for and not yet finished
        self.path = path
        self.images_dir = images_dir
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        images_dir: str | Path | None = None,
        migrations_dir: str | Path | Traversable | None = None,
    ) -> Store:
        """Open (creating if needed) the database at `path` and bring its schema up to date.

        Images go to `images_dir`, by default `<db folder>/images`. `migrations_dir` is for tests.
        Raises SchemaTooNew if the database was written by a newer bot, MigrationError if a migration fails or the
        migrations are missing (then nothing is created or changed).
        """
        path = Path(path)
        images_dir = Path(images_dir) if images_dir is not None else path.parent / "images"
        if migrations_dir is None:
            migrations_dir = migrations_folder()
        elif isinstance(migrations_dir, str):
            migrations_dir = Path(migrations_dir)
        migrations = _read_migrations(migrations_dir)  # before connecting: without them, no empty file is left
        db = await connect(path)
        store = cls(db, path, images_dir)
        try:
            version = await migrate(db, path, migrations)
        except BaseException:
            await store.close()
            raise
        log.debug("opened %s (schema version %d), images in %s", path, version, images_dir)
        return store

    async def close(self) -> None:
        """Finish the writes already asked for, then close the connection and end its thread. Closing twice is
        harmless."""
        if self._closed:
            return
        self._closed = True
        if self._writes:
            await asyncio.wait(set(self._writes))
        async with self._lock:  # after the reads waiting for a transaction, which queued on the lock first
            await self._db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _read(self, sql: str, parameters: Any = ()) -> list[sqlite3.Row]:
        """Every row of one SELECT (which sees one consistent snapshot), in one hop. It shares the connection only
        while no transaction is open on it, so that it never sees another coroutine's uncommitted writes."""
        if not self._lock.locked():
            # No await between the check and the statement being queued: it runs before any later BEGIN.
            return list(await self._db.execute_fetchall(sql, parameters))
        async with self._lock:
            return list(await self._db.execute_fetchall(sql, parameters))

    async def _read_one(self, sql: str, parameters: Any = ()) -> sqlite3.Row | None:
        rows = await self._read(sql, parameters)
        return rows[0] if rows else None

    async def _write(self, body: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run `body(connection)` as one BEGIN IMMEDIATE transaction, alone on the connection. If the awaiting task
        is cancelled, the transaction still runs to its end (it is never cut in half); only its result is lost."""

        async def run() -> T:
            async with self._lock:
                return await transaction(self._db, body)

        task = asyncio.ensure_future(run())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return await asyncio.shield(task)

    async def _write_statement(self, sql: str, parameters: Any = ()) -> sqlite3.Row | None:
        """The first row of one INSERT/UPDATE/DELETE ... RETURNING, run as its own transaction, in one hop.

        SQLite runs a lone write statement in autocommit as BEGIN IMMEDIATE; statement; COMMIT: it takes the write
        lock (waiting up to busy_timeout) before it reads anything, so what it reads and writes is atomic across
        connections. Like _read, it shares the connection only while none of this Store's transactions is open."""
        try:
            if not self._lock.locked():
                # No await between the check and the statement being queued: it runs before any later BEGIN.
                return await fetch_one(self._db, sql, parameters)
            async with self._lock:
                return await fetch_one(self._db, sql, parameters)
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise
        # Busy past busy_timeout: again inside a transaction, whose BEGIN IMMEDIATE is retried.
        return await self._write(lambda db: fetch_one(db, sql, parameters))

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
        if not limits.enabled or limits.jobs_per_hour < 1:
            raise UserError("Image generation is turned off in this channel.")
        now = time.time() if now is None else now
        job = {"kind": kind, "user": user_id, "guild": guild_id, "channel": channel_id, "recipe": json.dumps(recipe),
               "parent": parent_id, "now": now, "token": interaction_token, "expires": token_expires_at,
               "since": now - WINDOW_S, "per_hour": limits.jobs_per_hour, "max_queued": limits.max_queued}
        counts = {key: job[key] for key in ("user", "channel", "since")} | {"skip": limits.jobs_per_hour - 1}

        # 1. The check alone, as one read outside any transaction (no lock, one hop). A refusal from this snapshot,
        #    exact retry_at included, is the decision the request would have got arriving at that moment.
        _raise_if_refused(await self._read_one(_ADMISSION_COUNTS, counts), limits)
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

        `plan` gets the first `window` queued jobs in fair order and returns the ids to run (engine/batching.py:
        same batch key, at most one per member); the head always runs, whatever it returns. One write transaction,
        each job taking its turn as if claimed one after another, so queue positions and /queue stay true."""
        now = time.time() if now is None else now

        async def claim(db: aiosqlite.Connection) -> list[sqlite3.Row]:
            queue = [Job.from_row(row) for row in await db.execute_fetchall(
                _QUEUE + "SELECT jobs.* FROM queue JOIN jobs USING (id) ORDER BY queue.position LIMIT ?",
                (max(1, window),),
            )]
            if not queue:
                return []
            offered = {job.id for job in queue[1:]}
            companions = [job_id for job_id in (plan(queue) if plan else ()) if job_id in offered]
            ids = [queue[0].id] + list(dict.fromkeys(companions))
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

    def _job_dir(self, job_id: int) -> Path:
        return self.images_dir / str(int(job_id))

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

    # --- images ----------------------------------------------------------------------------------------------

    async def _read_image(self, job_id: int, name: str) -> bytes:
        job = await self.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        if job.images_deleted_at is not None:
            raise ImagesDeleted(job_id)
        if job.images_pruned:
            kept_days = await self.get_meta("store.images_kept_days")
            raise ImagesGone(None if kept_days is None else float(kept_days))
        if job.status != "done":
            raise UserError(f"Job #{job_id} has no images; it is {job.status}.")
        try:
            return await asyncio.to_thread((self._job_dir(job_id) / name).read_bytes)
        except FileNotFoundError:
            log.warning("job %d: %s is missing from %s", job_id, name, self._job_dir(job_id))
            raise ImagesGone() from None

    async def image(self, job_id: int, index: int) -> bytes:
        """PNG bytes of image `index` (1..n) of a finished job. Raises JobNotFound, ImagesGone, or ValueError if
        the job has no image with that index."""
        job = await self.get_job(job_id)
        if job is not None and job.status == "done" and not job.images_pruned and not 1 <= index <= job.image_count:
            raise ValueError(f"job {job_id} has images 1..{job.image_count}, not {index}")
        return await self._read_image(job_id, f"{int(index)}.png")

    async def grid(self, job_id: int) -> bytes:
        """PNG bytes of the job's grid. Raises JobNotFound, ImagesGone."""
        return await self._read_image(job_id, "grid.png")

    async def save_prompt_image(self, png: bytes) -> str:
        """Keep an image prompt's picture before its job is queued; returns the key its recipe names it by.

        Kept by content (the SHA-256 of its PNG), apart from the jobs' folders: the job that brought it and every
        🔄 of that job share one file, so a reroll still starts from it after the first job's images are deleted.
        """
        key = hashlib.sha256(png).hexdigest()
        await asyncio.to_thread(_write_files, self.images_dir / "prompts", {f"{key}.png": png})
        return key

    async def prompt_image(self, key: str) -> bytes:
        """PNG bytes of an image prompt kept by save_prompt_image. Raises ImagesGone if it is missing."""
        if not re.fullmatch(r"[0-9a-f]{64}", key):
            raise ValueError(f"an image prompt key is a SHA-256 in hex, got {key!r}")
        try:
            return await asyncio.to_thread((self.images_dir / "prompts" / f"{key}.png").read_bytes)
        except FileNotFoundError:
            log.warning("image prompt %s is missing from %s", key, self.images_dir / "prompts")
            raise ImagesGone() from None

    async def release_prompt_images(self, keys: Iterable[str], now: float | None = None) -> int:
        """Delete the kept pictures (save_prompt_image) that no job needs any more; returns how many went.

        A picture is needed while a job naming it is queued or running, or done with its images still kept (its
        🔄 starts from the picture again). A picture no job names at all (its prompt was refused after it was
        kept, or the bot stopped in between) goes once it is PROMPT_GRACE seconds old, so a picture kept a
        moment ago for a job being admitted now stays."""
        now = time.time() if now is None else now
        removed = 0
        for key in dict.fromkeys(keys):
            if not re.fullmatch(r"[0-9a-f]{64}", key):
                continue
            row = await self._read_one(
                """
                SELECT COUNT(*) AS named,
                       COALESCE(SUM(status IN ('queued', 'running') OR (status = 'done' AND images_pruned = 0)), 0)
                         AS needed
                  FROM jobs WHERE json_extract(recipe, '$.image_prompt') = ?
                """,
                (key,),
            )
            path = self.images_dir / "prompts" / f"{key}.png"
            if row["needed"]:
                continue
            if not row["named"]:
                try:
                    if now - path.stat().st_mtime < PROMPT_GRACE:
                        continue
                except FileNotFoundError:
                    continue
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(path.unlink)
                removed += 1
        return removed

    async def prune_images(self, older_than_days: float, now: float | None = None) -> int:
        """Delete the image files of jobs finished more than `older_than_days` ago and mark them pruned; returns how
        many jobs lost their images. Files go first, so a crash half-way leaves nothing on disk unaccounted for.
        Then the kept pictures of image prompts that no job needs any more go too (release_prompt_images)."""
        now = time.time() if now is None else now
        cutoff = now - older_than_days * 86400
        rows = await self._read("SELECT id FROM jobs WHERE image_count > 0 AND finished_at < ? ORDER BY id", (cutoff,))
        job_ids = [job_id for (job_id,) in rows]
        for job_id in job_ids:
            await asyncio.to_thread(shutil.rmtree, self._job_dir(job_id), True)

        async def mark_pruned(db: aiosqlite.Connection) -> None:
            await db.executemany(
                "UPDATE jobs SET image_count = 0, images_pruned = 1 WHERE id = ?", [(job_id,) for job_id in job_ids]
            )
            # So that ImagesGone can say how long images are kept.
            await db.execute(
                "INSERT INTO meta (key, value) VALUES ('store.images_kept_days', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (f"{older_than_days:g}",),
            )

        await self._write(mark_pruned)
        if job_ids:
            log.debug("pruned the images of %d job(s) finished over %g days ago", len(job_ids), older_than_days)
        kept = await asyncio.to_thread(lambda: [path.stem for path in (self.images_dir / "prompts").glob("*.png")]
                                       if (self.images_dir / "prompts").is_dir() else [])
        await self.release_prompt_images(kept, now=now)
        return len(job_ids)

    async def delete_images(self, job_id: int, now: float | None = None) -> Job | None:
        """Delete a finished job's image files and mark them deleted, so its buttons say so (ImagesDeleted); None if
        there is no such finished job. Deleting twice is harmless. Files go first, as in prune_images."""
        now = time.time() if now is None else now
        job = await self.get_job(job_id)
        if job is None or job.status != "done":
            return None
        await asyncio.to_thread(shutil.rmtree, self._job_dir(job_id), True)
        row = await self._write_statement(
            """
            UPDATE jobs SET image_count = 0, images_pruned = 1, images_deleted_at = COALESCE(images_deleted_at, ?)
             WHERE id = ? AND status = 'done'
            RETURNING *
            """,
            (now, job_id),
        )
        if row is None:
            return None
        deleted = Job.from_row(row)
        if deleted.recipe.get("image_prompt"):  # the member's own picture goes too, unless a 🔄 of it still needs it
            await self.release_prompt_images([deleted.recipe["image_prompt"]], now=now)
        return deleted

    # --- messages showing a job ------------------------------------------------------------------------------

    async def add_message(self, job_id: int, message_id: int, channel_id: int) -> None:
        """Remember another message that shows the job (one /show posted), so a ❌ on it finds the job too."""
        await self._write_statement(
            "INSERT INTO job_messages (message_id, job_id, channel_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (message_id, job_id, channel_id),
        )

    async def job_for_message(self, message_id: int) -> Job | None:
        """The job a Discord message shows: its own message (jobs.message_id) or one /show posted; else None."""
        row = await self._read_one(
            """
            SELECT * FROM jobs WHERE message_id = :message
            UNION ALL
            SELECT jobs.* FROM job_messages JOIN jobs ON jobs.id = job_messages.job_id
             WHERE job_messages.message_id = :message
            LIMIT 1
            """,
            {"message": message_id},
        )
        return None if row is None else Job.from_row(row)

    # --- limits ----------------------------------------------------------------------------------------------

    async def limit_overrides(self, guild_id: int | None, channel_id: int) -> dict[str, tuple[object, str]]:
        """Every limit's effective value and where it comes from: "channel", "server" or "default"."""
        effective: dict[str, tuple[object, str]] = {key: (getattr(Limits(), key), "default") for key in LIMIT_KEYS}
        if guild_id is None:
            return effective
        rows = await self._read(
            # Server rows (channel_id 0) first, so the channel's own rows win.
            "SELECT channel_id, key, value FROM limits WHERE guild_id = ? AND channel_id IN (0, ?) "
            "ORDER BY channel_id = 0 DESC",
            (guild_id, channel_id),
        )
        for row in rows:
            effective[row["key"]] = (json.loads(row["value"]), "server" if row["channel_id"] == 0 else "channel")
        return effective

    async def limits_for(self, guild_id: int | None, channel_id: int) -> Limits:
        """Built-in defaults, overridden by the server's defaults, overridden by the channel's own settings."""
        overrides = await self.limit_overrides(guild_id, channel_id)
        return Limits(**{key: value for key, (value, _source) in overrides.items()})

    async def set_limit(self, guild_id: int, channel_id: int | None, key: str, value: object) -> None:
        """Set a limit for a channel, or the server default with channel_id None. Raises InvalidLimit (a UserError
        and a ValueError) with a readable sentence for an unknown key or a bad value."""
        typed = _parse_limit(key, value)
        await self._write(
            lambda db: db.execute(
                "INSERT INTO limits (guild_id, channel_id, key, value) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (guild_id, channel_id, key) DO UPDATE SET value = excluded.value",
                (guild_id, channel_id or 0, key, json.dumps(typed)),
            )
        )

    async def reset_limits(self, guild_id: int, channel_id: int | None, key: str | None = None) -> int:
        """Remove a channel's (or with None the server's) setting for `key`, or all of them; returns how many."""
        if key is not None and key not in LIMIT_KEYS:
            raise InvalidLimit(f"There is no limit called '{quoted(key)}'; the limits are: {', '.join(LIMIT_KEYS)}.")
        return await self._write(
            lambda db: _rowcount(
                db,
                "DELETE FROM limits WHERE guild_id = ? AND channel_id = ? AND (? IS NULL OR key = ?)",
                (guild_id, channel_id or 0, key, key),
            )
        )

    async def banned_words(self, guild_id: int) -> list[str]:
        rows = await self._read("SELECT word FROM banned_words WHERE guild_id = ? ORDER BY word", (guild_id,))
        return [word for (word,) in rows]

    async def add_banned_word(self, guild_id: int, word: str) -> bool:
        """Ban a word (stored lower-case, single-spaced); False if it was already banned. UserError if empty."""
        word = _normalise_word(word)
        added = await self._write(
            lambda db: _rowcount(
                db, "INSERT INTO banned_words (guild_id, word) VALUES (?, ?) ON CONFLICT DO NOTHING", (guild_id, word)
            )
        )
        return added == 1

    async def remove_banned_word(self, guild_id: int, word: str) -> bool:
        """Unban a word; False if it was not banned."""
        word = " ".join(word.split()).lower()
        removed = await self._write(
            lambda db: _rowcount(db, "DELETE FROM banned_words WHERE guild_id = ? AND word = ?", (guild_id, word))
        )
        return removed == 1

    # --- member preferences ----------------------------------------------------------------------------------

    async def preferences(self, guild_id: int | None, user_id: int) -> Preferences:
        """The member's preferences in this server, in one read; the defaults in DMs or if they set none."""
        if guild_id is None:
            return Preferences()
        row = await self._read_one(
            "SELECT remix, variation, aspect, suffix FROM preferences WHERE guild_id = ? AND user_id = ?",
            (guild_id, user_id),
        )
        if row is None:
            return Preferences()
        return Preferences(remix=bool(row["remix"]), variation=row["variation"], aspect=row["aspect"],
                           suffix=row["suffix"])

    async def set_preferences(self, guild_id: int, user_id: int, **changes: object) -> Preferences:
        """Change some of a member's preferences (the others keep their value) and return all of them."""
        unknown = set(changes) - set(PREFERENCE_KEYS)
        if unknown:
            raise ValueError(f"unknown preferences {sorted(unknown)}; they are {PREFERENCE_KEYS}")
        if changes.get("variation", "strong") not in ("strong", "subtle"):
            raise ValueError(f"variation is 'strong' or 'subtle', not {changes['variation']!r}")
        # One upsert of only the named columns (names from PREFERENCE_KEYS, values parameterised): a concurrent
        # change of another preference by the same member is not lost.
        columns = ", ".join(changes)
        row = await self._write(
            lambda db: fetch_one(
                db,
                f"INSERT INTO preferences (guild_id, user_id, {columns}) VALUES (?, ?{', ?' * len(changes)}) "
                "ON CONFLICT (guild_id, user_id) DO UPDATE SET "
                + ", ".join(f"{key} = excluded.{key}" for key in changes)
                + " RETURNING remix, variation, aspect, suffix",
                (guild_id, user_id, *(int(v) if isinstance(v, bool) else v for v in changes.values())),
            )
        )
        return Preferences(remix=bool(row["remix"]), variation=row["variation"], aspect=row["aspect"],
                           suffix=row["suffix"])

    async def reset_preferences(self, guild_id: int, user_id: int,
                                keys: Sequence[str] = PREFERENCE_KEYS) -> Preferences:
        """Put the named preferences (by default all) back to their defaults; returns what the member has now."""
        defaults = Preferences()
        return await self.set_preferences(guild_id, user_id, **{key: getattr(defaults, key) for key in keys})

    # --- meta ------------------------------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        row = await self._read_one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else row[0]

    async def set_meta(self, key: str, value: str) -> None:
        await self._write(
            lambda db: db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
        )


def _write_files(directory: Path, files: dict[str, bytes]) -> None:
    """Write each file atomically: a reader sees the whole old file or the whole new one, never half of one."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        temporary = directory / f".{name}.tmp"
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, directory / name)
