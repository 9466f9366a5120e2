"""The schema migrations: finding the numbered SQL files (migrations_folder: a checkout's top-level migrations/, or
the package data `bot.migrations` of an installed wheel), reading and checking them, and applying the ones a database
lacks (migrate), each in its own transaction."""

from __future__ import annotations

import importlib.resources
import logging
import re
import sqlite3
from importlib.resources.abc import Traversable
from pathlib import Path

import aiosqlite

from bot.store.db import transaction

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# Migrations


class SchemaTooNew(RuntimeError):
    """The database was written by a newer version of the bot than this one."""


class MigrationError(RuntimeError):
    """A migration file is malformed or failed; the database is left at the last good version."""


def migrations_folder() -> Traversable:
    """The SQL migrations: the top-level migrations/ folder of a checkout (tests, `python -m bot`, `pip install -e`),
    else the copy installed inside the package as `bot.migrations` (pyproject.toml maps the folder there), read
    with importlib.resources so that a wheel works like a checkout. MigrationError if neither is there."""
    checkout = Path(__file__).resolve().parents[2]  # bot/store/migrations.py -> the checkout
    if (checkout / "pyproject.toml").is_file() and (checkout / "migrations").is_dir():
        return checkout / "migrations"
    try:
        return importlib.resources.files("bot.migrations")
    except ModuleNotFoundError:
        raise MigrationError(_NO_MIGRATIONS.format(where=f"{Path(__file__).parents[1] / 'migrations'}")) from None


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
