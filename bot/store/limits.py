"""Moderators' limits and banned words: checking a limit's value, and Store's limits part (per channel, per server,
else the defaults of Limits)."""

from __future__ import annotations

import json

from bot.errors import InvalidLimit, UserError, quoted
from bot.store.db import StoreBase, _rowcount
from bot.store.records import LIMIT_KEYS, LIMIT_RANGES, MODEL_NAME, Limits


# ---------------------------------------------------------------------------------------------------------------
# Limits


def _parse_limit(key: str, value: object) -> bool | int | str:
    """Validate a moderator's value for `key` (a bool/int, or the text of one; a model's name) and return it typed.

    A model name is only checked to be one (the store doesn't know which models are configured: the bot does)."""
    if key not in LIMIT_KEYS:
        raise InvalidLimit(f"There is no limit called '{quoted(key)}'; the limits are: {', '.join(LIMIT_KEYS)}.")
    if key == "model":
        name = value.strip().lower() if isinstance(value, str) else ""
        if not MODEL_NAME.fullmatch(name):
            raise InvalidLimit(f"'model' is a model's name (letters, digits, '_', '.', '-'; up to 32), "
                               f"got '{quoted(value)}'.")
        return name
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


class ChannelLimits(StoreBase):
    """Store's limits part: the limits and banned_words tables."""

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
