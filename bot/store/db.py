"""How the store talks to SQLite: opening a connection (connect, the only place PRAGMAs are set), one-hop reads
(fetch_one), write transactions (transaction), and StoreBase, which shares one connection among a Store's coroutines:
the base of every part of Store (jobs.py, images.py, limits.py, members.py)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
T = TypeVar("T")


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


class StoreBase:
    """The connection a Store shares among its coroutines, and the only ways its parts reach it: _read, _read_one,
    _write and _write_statement."""

    def __init__(self, db: aiosqlite.Connection, path: Path, images_dir: Path):
        self._db = db
        self._lock = asyncio.Lock()  # held for the whole of each write transaction on `_db`
        self._writes: set[asyncio.Task[Any]] = set()  # write transactions asked for and not yet finished
        self.path = path
        self.images_dir = images_dir
        self._closed = False

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
