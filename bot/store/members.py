"""Store's smaller tables: the other messages that show a job (job_messages), members' preferences, and meta (the
store's own key/values: the synced command tree's hash, the remembered Ray cluster, how long images are kept)."""

from __future__ import annotations

from collections.abc import Sequence

from bot.store.db import StoreBase, fetch_one
from bot.store.records import PREFERENCE_KEYS, Job, Preferences


class Members(StoreBase):
    """Store's job messages, member preferences and meta part."""

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
