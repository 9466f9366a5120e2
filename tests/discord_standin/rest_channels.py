"""REST routes of channels and servers: a channel, its messages (list, get, post, edit, delete), typing and the bot's
reactions; a server, its channels, roles and members."""

from __future__ import annotations

import copy
from typing import Any

from .model import ATTACH_FILES, MANAGE_MESSAGES, SEND_MESSAGES, VIEW_CHANNEL, Channel, Guild, Message
from .rest import DiscordError, _Body, _rate_limited


class ChannelRoutes:
    """Channels and servers over REST; mixed into `DiscordStandin` (server.py), whose world and messages it uses."""

    # -- REST: channels, guild ---------------------------------------------------------------------------------

    def _channel_by_id(self, channel_id: str) -> Channel:
        for channel in [*(c for g in self.guilds for c in g.channels), *self._dm_channels.values()]:
            if str(channel.id) == channel_id:
                return channel
        raise DiscordError(404, "Unknown Channel", 10003)

    def _check_bot_permission(self, channel: Channel, needed: int) -> None:
        guild = self.guild_of(channel)
        if guild is None:
            return
        bot_member = guild.member(self.bot_user.id)
        assert bot_member is not None
        if ~guild.permissions_for(bot_member, channel) & needed:
            raise DiscordError(403, "Missing Permissions", 50013)

    async def _get_channel(self, channel_id: str, **_: Any) -> dict[str, Any]:
        return self._channel_by_id(channel_id).to_dict()

    async def _get_guild(self, guild_id: str, **_: Any) -> dict[str, Any]:
        guild = self._check_guild(guild_id)
        return {**guild.to_dict(), "approximate_member_count": len(guild.members)}

    def _check_guild(self, guild_id: str) -> Guild:
        guild = self.guild_by_id(guild_id)
        if guild is None:
            raise DiscordError(404, "Unknown Guild", 10004)
        return guild

    async def _get_guild_channels(self, guild_id: str, **_: Any) -> list[Any]:
        return [c.to_dict() for c in self._check_guild(guild_id).channels]

    async def _get_roles(self, guild_id: str, **_: Any) -> list[Any]:
        return [r.to_dict() for r in self._check_guild(guild_id).roles]

    async def _list_members(self, guild_id: str, **_: Any) -> list[Any]:
        return [m.to_dict() for m in self._check_guild(guild_id).members]

    async def _get_member(self, guild_id: str, user_id: str, **_: Any) -> dict[str, Any]:
        guild = self._check_guild(guild_id)
        member = next((m for m in guild.members if str(m.user.id) == user_id), None)
        if member is None:
            raise DiscordError(404, "Unknown Member", 10007)
        return member.to_dict()

    async def _typing(self, channel_id: str, **_: Any) -> None:
        self._channel_by_id(channel_id)

    async def _no_content(self, **_: Any) -> None:
        return None

    def _visible_message(self, channel_id: str, message_id: str) -> Message:
        channel = self._channel_by_id(channel_id)
        message = self._messages.get(int(message_id)) if message_id.isdigit() else None
        if message is None or message.deleted or message.channel_id != channel.id or message.ephemeral:
            raise DiscordError(404, "Unknown Message", 10008)
        return message

    async def _list_messages(self, channel_id: str, query: Any, **_: Any) -> list[Any]:
        channel = self._channel_by_id(channel_id)
        found = [m for m in self.messages(channel, include_ephemeral=False)]
        if "before" in query:
            found = [m for m in found if m.id < int(query["before"])]
        if "after" in query:
            found = [m for m in found if m.id > int(query["after"])]
        limit = int(query.get("limit", 50))
        found = found[:limit] if "after" in query else found[-limit:]
        return [copy.deepcopy(m.data) for m in reversed(found)]

    async def _get_channel_message(self, channel_id: str, message_id: str, **_: Any) -> dict[str, Any]:
        return copy.deepcopy(self._visible_message(channel_id, message_id).data)

    async def _create_channel_message(self, channel_id: str, body: _Body, **_: Any) -> dict[str, Any]:
        channel = self._channel_by_id(channel_id)
        self._check_bot_permission(channel, VIEW_CHANNEL | SEND_MESSAGES | (ATTACH_FILES if body.files else 0))
        if self.busy_posts > 0:
            self.busy_posts -= 1
            raise _rate_limited(f"posts{channel_id}", 5, 0.01)
        payload = body.json or {}
        message = self._new_message(channel, payload, body.files, author=self.bot_user, allowed_flags=4 | 4096)
        await self._store_new_message(message, channel)
        return copy.deepcopy(message.data)

    async def _edit_channel_message(self, channel_id: str, message_id: str, body: _Body, **_: Any) -> dict[str, Any]:
        message = self._visible_message(channel_id, message_id)
        if message.author_id != self.bot_user.id:
            raise DiscordError(403, "Cannot edit a message authored by another user", 50005)
        self._charge_edit(message.channel_id)
        await self._edit_message(message, body.json or {}, body.files)
        return copy.deepcopy(message.data)

    async def _delete_channel_message(self, channel_id: str, message_id: str, **_: Any) -> None:
        message = self._visible_message(channel_id, message_id)
        if message.author_id != self.bot_user.id:  # anyone's message needs Manage Messages; its own, nothing
            self._check_bot_permission(self._channel_by_id(channel_id), MANAGE_MESSAGES)
        await self._delete_message(message)
