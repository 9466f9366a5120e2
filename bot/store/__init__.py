"""The SQLite store: the job queue and history, moderator limits, banned words, and image files on disk.

The connection is an aiosqlite one (its own thread; each statement is one hop from the event loop). Every write is
`BEGIN IMMEDIATE ... COMMIT`, or one statement in autocommit (which SQLite runs the same way), so two Store objects
(two connections, two processes) on the same file never over-admit, and within one Store an asyncio.Lock keeps the
statements of concurrent transactions from interleaving on the shared connection. Each write is as few statements as
it can be. An admission is first checked with one plain SELECT (no lock: a refusal needs nothing else), then made by
one `INSERT ... SELECT ... WHERE <under the limits>` in autocommit, so checking and inserting are atomic across
connections: two hops for an admission, one for a refusal.

A package split along what it owns, behind the one `Store` face everyone imports from here: db.py (connections,
transactions, StoreBase), migrations.py, records.py (the dataclasses rows become), and Store's parts jobs.py (the
queue and admission), images.py (files on disk), limits.py (limits and banned words) and members.py (job messages,
preferences, meta), combined below.
"""

from __future__ import annotations

import asyncio
import logging
from importlib.resources.abc import Traversable
from pathlib import Path

from bot.store.db import connect
from bot.store.images import Images
from bot.store.jobs import Jobs
from bot.store.limits import ChannelLimits, _parse_limit
from bot.store.members import Members
from bot.store.migrations import MigrationError, SchemaTooNew, _read_migrations, migrate, migrations_folder
from bot.store.records import INTERRUPTED_TOO_OFTEN, LIMIT_KEYS, LIMIT_RANGES, LOST_TOO_OFTEN, Job, Limits, Preferences

# The names imported from bot.store today (bot/, tests/, benchmarks/); _parse_limit for tests/bot/test_properties.py.
__all__ = [
    "INTERRUPTED_TOO_OFTEN", "LIMIT_KEYS", "LIMIT_RANGES", "LOST_TOO_OFTEN", "Job", "Limits", "MigrationError",
    "Preferences", "SchemaTooNew", "Store", "_parse_limit", "migrations_folder",
]

log = logging.getLogger(__name__)


class Store(Jobs, Images, ChannelLimits, Members):
    """The bot's database. Open with `await Store.open(path)`, close with `await store.close()`."""

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
