"""Messages as the stand-in makes them: built from a payload and checked against Discord's limits, stored, edited
and deleted, with the mentions they resolve, the pings they send (`Ping`) and the gateway events they cause."""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass
from typing import Any

from .components import FormError, check_select
from .interactions import Interaction
from .mentions import Mentions, MentionsRefused, resolve as resolve_mentions
from .model import EPHEMERAL, LOADING, Attachment, Channel, Message, User, iso_now
from .rest import DiscordError, _rate_limited, invalid_form


@dataclass(frozen=True)
class Ping:
    """A notification Discord sent: `user` was pinged by `message` when it was created."""

    message: Message
    user: User


class Messages:
    """Making, editing and deleting messages; mixed into `DiscordStandin` (server.py)."""

    # -- messages ----------------------------------------------------------------------------------------------

    def _charge_edit(self, channel_id: int) -> None:
        """Count an edit against the channel's edit limit, or refuse it with a 429 as Discord does."""
        now = self.now()
        times = self._edit_times.setdefault(channel_id, deque())
        while times and now - times[0] >= self.edit_window:
            times.popleft()
        if len(times) >= self.edit_limit:
            retry_after = round(max(self.edit_window - (now - times[0]), 0.001), 3)
            raise _rate_limited(f"edits{channel_id}", self.edit_limit, retry_after)
        times.append(now)

    def _message_dict(self, channel: Channel, *, author: User, content: str = "", type: int = 0) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self._ids.next()), "channel_id": str(channel.id), "author": author.to_dict(),
            "content": content, "timestamp": iso_now(), "edited_timestamp": None, "tts": False,
            "mention_everyone": False, "mentions": [], "mention_roles": [], "mention_channels": [],
            "attachments": [], "embeds": [], "components": [], "reactions": [], "pinned": False, "type": type,
            "flags": 0,
        }
        if channel.guild_id is not None:
            data["guild_id"] = str(channel.guild_id)
        return data

    def _validate(self, payload: dict[str, Any], has_files: bool, allow_empty: bool = False) -> None:
        content = payload.get("content") or ""
        if len(content) > 2000:
            raise invalid_form("content", "Must be 2000 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
        if len(payload.get("embeds") or []) > 10:
            raise invalid_form("embeds", "Must be 10 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
        rows = payload.get("components") or []
        if len(rows) > 5 and not int(payload.get("flags") or 0) & (1 << 15):
            raise invalid_form("components", "Must be 5 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
        for row in rows:
            if row.get("type") == 1 and len(row.get("components", [])) > 5:
                raise invalid_form("components", "Must be 5 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
            for item in row.get("components", []):
                if len(item.get("custom_id") or "") > 100:
                    raise invalid_form("custom_id", "Must be 100 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
                if item.get("type") == 3:
                    try:
                        check_select("components", item)
                    except FormError as error:
                        raise invalid_form(error.field, error.message, error.code) from None
                if item.get("type") == 3 and len(row["components"]) > 1:
                    raise invalid_form("components", "A select takes a whole action row.",
                                       "COMPONENT_LAYOUT_WIDTH_EXCEEDED")
        if not allow_empty and not (content or payload.get("embeds") or has_files or rows or payload.get("poll")
                                    or payload.get("sticker_ids")):
            raise DiscordError(400, "Cannot send an empty message", 50006)

    def _attachments(self, channel: Channel, payload: dict[str, Any], files: list[tuple[str, str, bytes, str | None]],
                     existing: list[Attachment] | None) -> list[Attachment]:
        listed = {str(a.get("id")): a for a in payload.get("attachments") or []}
        new = []
        for field_name, filename, blob, content_type in files:
            index = field_name[len("files["):-1] if field_name.startswith("files[") else field_name
            meta = listed.get(index, {})
            new.append(Attachment.create(id=self._ids.next(), filename=meta.get("filename") or filename, data=blob,
                                         base_url=self.base_url, channel_id=channel.id,
                                         description=meta.get("description"), content_type=content_type))
        if existing is None:
            return new
        if "attachments" in payload:
            return [a for a in existing if str(a.id) in listed] + new
        return existing + new

    def _new_message(self, channel: Channel, payload: dict[str, Any], files: list[tuple[str, str, bytes, str | None]],
                     *, author: User, allowed_flags: int, interaction: Interaction | None = None,
                     followup: bool = False, allow_empty: bool = False) -> Message:
        self._validate(payload, bool(files), allow_empty)
        reference = payload.get("message_reference")
        data = self._message_dict(channel, author=author, content=payload.get("content") or "",
                                  type=19 if reference else 0)
        data["tts"] = bool(payload.get("tts"))
        data["embeds"] = copy.deepcopy(payload.get("embeds") or [])
        data["components"] = copy.deepcopy(payload.get("components") or [])
        data["flags"] = int(payload.get("flags") or 0) & allowed_flags
        if payload.get("nonce") is not None:
            data["nonce"] = payload["nonce"]
        if reference:
            data["message_reference"] = {"type": 0, "channel_id": str(channel.id), **reference}
        mentions = self._resolve_mentions(channel, payload, data["content"])
        self._set_mentions(data, mentions)
        attachments = self._attachments(channel, payload, files, None)
        data["attachments"] = [a.to_dict() for a in attachments]
        if interaction is not None:
            data["webhook_id"] = str(self.application_id)
            data["application_id"] = str(self.application_id)
            command_type = interaction.data.get("type", 1) if interaction.type == 2 else None
            if interaction.type == 2 and not followup:
                data["type"] = 20 if command_type == 1 else 23  # CHAT_INPUT_COMMAND, CONTEXT_MENU_COMMAND
            metadata: dict[str, Any] = {
                "id": str(interaction.id), "type": interaction.type, "user": interaction.user.to_dict(),
                "authorizing_integration_owners": {"0": str(channel.guild_id or self.guild.id)},
            }
            if interaction.type == 2:
                metadata["name"] = self._command_path(interaction.data)
                metadata["command_type"] = command_type
                if command_type == 3:
                    metadata["target_message_id"] = interaction.data["target_id"]
                data["interaction"] = {"id": str(interaction.id), "type": 2, "name": metadata["name"],
                                       "user": interaction.user.to_dict()}
            else:
                metadata["interacted_message_id"] = str(interaction.source_message.id) \
                    if interaction.source_message else None
            if followup and interaction.original is not None:
                metadata["original_response_message_id"] = str(interaction.original.id)
            data["interaction_metadata"] = metadata
        message = Message(data, attachments, interaction=interaction)
        message.pinged = mentions.pinged(self.guild_of(channel), author.id)
        return message

    async def _store_new_message(self, message: Message, channel: Channel) -> None:
        self._messages[message.id] = message
        channel.last_message_id = message.id
        if not message.ephemeral and not message.loading:
            self._record_pings(message)
        await self._notify()
        if not message.ephemeral and not message.loading:
            await self._broadcast("MESSAGE_CREATE", self._gateway_message_dict(message), channel)

    def _resolve_mentions(self, channel: Channel, payload: dict[str, Any], content: str) -> Mentions:
        """Who the content mentions under the request's `allowed_mentions` (see mentions.py for Discord's rules)."""
        guild = self.guild_of(channel)
        permissions = 0
        if guild is not None:
            bot_member = guild.member(self.bot_user.id)
            assert bot_member is not None
            permissions = guild.permissions_for(bot_member, channel)
        reference = payload.get("message_reference") or {}
        replied = self._messages.get(int(reference["message_id"])) \
            if str(reference.get("message_id", "")).isdigit() else None
        try:
            return resolve_mentions(content, payload.get("allowed_mentions"), guild=guild,
                                    author_permissions=permissions,
                                    replied_to=replied.author_id if replied is not None else None,
                                    known_users={u.id for u in self.users})
        except MentionsRefused as refused:
            raise invalid_form(refused.field, refused.message, refused.code) from None

    def _set_mentions(self, data: dict[str, Any], mentions: Mentions) -> None:
        users = {u.id: u for u in self.users}
        data["mentions"] = [users[u].to_dict() for u in mentions.users if u in users]
        data["mention_roles"] = [str(r) for r in mentions.roles]
        data["mention_everyone"] = mentions.everyone

    def _record_pings(self, message: Message) -> None:
        users = {u.id: u for u in self.users}
        self.pings += [Ping(message, users[u]) for u in sorted(message.pinged) if u in users]

    def _gateway_message_dict(self, message: Message) -> dict[str, Any]:
        data = copy.deepcopy(message.data)
        guild = self.guild_of(self._channel_by_id(str(message.channel_id)))
        member = guild.member(message.author_id) if guild is not None else None
        if "guild_id" in data and member is not None and "webhook_id" not in data:
            data["member"] = member.to_dict(with_user=False)
        return data

    async def _edit_message(self, message: Message, payload: dict[str, Any],
                            files: list[tuple[str, str, bytes, str | None]], *, new_files_only: bool = False) -> None:
        channel = self._channel_by_id(str(message.channel_id))
        data = copy.deepcopy(message.data)
        was_loading = message.loading
        for key in ("content", "embeds", "components"):
            if key in payload:
                data[key] = copy.deepcopy(payload[key]) if payload[key] is not None else ([] if key != "content"
                                                                                            else "")
        if "flags" in payload and payload["flags"] is not None:
            data["flags"] = (data["flags"] & (EPHEMERAL | LOADING)) | (int(payload["flags"]) & (4 | (1 << 15)))
        data["flags"] &= ~LOADING
        mentions = None
        if "content" in payload or "allowed_mentions" in payload:  # Discord parses the content again on edit
            mentions = self._resolve_mentions(channel, payload, data["content"])
            self._set_mentions(data, mentions)
        attachments = self._attachments(channel, payload, files, message.attachments if not new_files_only else [])
        self._validate({**data, "flags": data["flags"]}, bool(attachments))
        data["attachments"] = [a.to_dict() for a in attachments]
        if not was_loading:
            data["edited_timestamp"] = iso_now()
        message._replace(data, attachments)
        if was_loading:  # filling a deferred response creates the message: this is when its mentions notify
            message.pinged = mentions.pinged(self.guild_of(channel), message.author_id) if mentions else frozenset()
            if not message.ephemeral:
                self._record_pings(message)
        await self._notify()
        if not message.ephemeral:
            event = "MESSAGE_CREATE" if was_loading else "MESSAGE_UPDATE"
            await self._broadcast(event, self._gateway_message_dict(message), channel)

    async def _delete_message(self, message: Message) -> None:
        message.deleted = True
        await self._notify()
        if not message.ephemeral:
            channel = self._channel_by_id(str(message.channel_id))
            data = {"id": str(message.id), "channel_id": str(message.channel_id)}
            if channel.guild_id:
                data["guild_id"] = str(channel.guild_id)
            await self._broadcast("MESSAGE_DELETE", data, channel)
