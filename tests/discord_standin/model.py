"""The stand-in's world: users, roles, channels, guilds, messages and attachments, in Discord's payload shapes."""

from __future__ import annotations

import copy
import datetime
import io
import mimetypes
import threading
import time
from dataclasses import dataclass, field
from typing import Any

DISCORD_EPOCH_MS = 1420070400000

# Permission bits (https://discord.com/developers/docs/topics/permissions).
CREATE_INSTANT_INVITE = 1 << 0
ADMINISTRATOR = 1 << 3
MANAGE_CHANNELS = 1 << 4
MANAGE_GUILD = 1 << 5
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
MENTION_EVERYONE = 1 << 17
USE_EXTERNAL_EMOJIS = 1 << 18
CONNECT = 1 << 20
SPEAK = 1 << 21
CHANGE_NICKNAME = 1 << 26
MANAGE_ROLES = 1 << 28
USE_APPLICATION_COMMANDS = 1 << 31
ALL_PERMISSIONS = (1 << 51) - 1

DEFAULT_EVERYONE_PERMISSIONS = (
    CREATE_INSTANT_INVITE | ADD_REACTIONS | VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES
    | READ_MESSAGE_HISTORY | MENTION_EVERYONE | USE_EXTERNAL_EMOJIS | CONNECT | SPEAK | CHANGE_NICKNAME
    | USE_APPLICATION_COMMANDS
)
MODERATOR_PERMISSIONS = DEFAULT_EVERYONE_PERMISSIONS | MANAGE_CHANNELS | MANAGE_GUILD | MANAGE_MESSAGES

# Message flags.
EPHEMERAL = 1 << 6
LOADING = 1 << 7


class Snowflakes:
    """Discord-shaped ids: milliseconds since the Discord epoch, shifted, plus an increment; always increasing."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            candidate = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
            self._last = max(candidate, self._last + 1)
            return self._last

    def next_on_shard(self, shard_id: int, num_shards: int) -> int:
        """An id whose guild lands on `shard_id` of `num_shards` (Discord: ``(id >> 22) % num_shards``)."""
        with self._lock:
            ms = max(int(time.time() * 1000) - DISCORD_EPOCH_MS, (self._last >> 22) + 1)
            ms += (shard_id - ms) % num_shards
            self._last = ms << 22
            return self._last


def iso_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


@dataclass(eq=False)
class User:
    id: int
    name: str
    bot: bool = False
    global_name: str | None = None

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def to_dict(self) -> dict[str, Any]:
        data = {
            "id": str(self.id),
            "username": self.name,
            "global_name": self.global_name,
            "discriminator": "0",
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
            "primary_guild": None,
        }
        if self.bot:
            data["bot"] = True
        return data


@dataclass(eq=False)
class Role:
    id: int
    name: str
    permissions: int
    position: int = 0
    managed: bool = False
    mentionable: bool = False  # anyone may ping it; otherwise only members with MENTION_EVERYONE

    @property
    def mention(self) -> str:
        return f"<@&{self.id}>"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": str(self.permissions),
            "managed": self.managed,
            "mentionable": self.mentionable,
            "flags": 0,
        }


@dataclass(eq=False)
class Member:
    user: User
    roles: list[Role]
    joined_at: str = field(default_factory=iso_now)
    nick: str | None = None

    @property
    def id(self) -> int:
        return self.user.id

    @property
    def name(self) -> str:
        return self.user.name

    @property
    def mention(self) -> str:
        return self.user.mention

    def to_dict(self, *, with_user: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "roles": [str(r.id) for r in self.roles],
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "joined_at": self.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self.user.to_dict()
        return data


@dataclass(eq=False)
class Channel:
    id: int
    name: str
    guild_id: int | None
    type: int = 0  # 0 guild text, 1 DM
    position: int = 0
    nsfw: bool = False
    topic: str | None = None
    # Overwrites in Discord's shape: {"id": str, "type": 0 role | 1 member, "allow": str, "deny": str}.
    permission_overwrites: list[dict[str, Any]] = field(default_factory=list)
    recipients: list[User] = field(default_factory=list)
    last_message_id: int | None = None

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"

    def to_dict(self) -> dict[str, Any]:
        if self.type == 1:
            return {
                "id": str(self.id),
                "type": 1,
                "last_message_id": str(self.last_message_id) if self.last_message_id else None,
                "recipients": [u.to_dict() for u in self.recipients],
                "flags": 0,
            }
        return {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "parent_id": None,
            "permission_overwrites": copy.deepcopy(self.permission_overwrites),
            "nsfw": self.nsfw,
            "topic": self.topic,
            "rate_limit_per_user": 0,
            "last_message_id": str(self.last_message_id) if self.last_message_id else None,
            "flags": 0,
        }


@dataclass(eq=False)
class Guild:
    id: int
    name: str
    owner_id: int
    roles: list[Role]
    channels: list[Channel]
    members: list[Member]

    @property
    def everyone(self) -> Role:
        return next(r for r in self.roles if r.id == self.id)

    def role(self, name: str) -> Role:
        for role in self.roles:
            if role.name == name:
                return role
        raise KeyError(f"no role named {name!r}; roles: {[r.name for r in self.roles]}")

    def member(self, user_id: int) -> Member | None:
        return next((m for m in self.members if m.user.id == user_id), None)

    def permissions_for(self, member: Member, channel: Channel | None = None) -> int:
        """Discord's permission algorithm: base from roles, then channel overwrites (everyone, roles, member)."""
        if member.user.id == self.owner_id:
            return ALL_PERMISSIONS
        base = self.everyone.permissions
        for role in member.roles:
            base |= role.permissions
        if base & ADMINISTRATOR:
            return ALL_PERMISSIONS
        if channel is None:
            return base
        overwrites = {int(o["id"]): o for o in channel.permission_overwrites}
        everyone = overwrites.get(self.id)
        if everyone:
            base = (base & ~int(everyone["deny"])) | int(everyone["allow"])
        allow = deny = 0
        for role in member.roles:
            o = overwrites.get(role.id)
            if o and o.get("type", 0) == 0:
                allow |= int(o["allow"])
                deny |= int(o["deny"])
        base = (base & ~deny) | allow
        own = overwrites.get(member.user.id)
        if own and own.get("type") == 1:
            base = (base & ~int(own["deny"])) | int(own["allow"])
        return base

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "icon_hash": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "region": None,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "features": [],
            "roles": [r.to_dict() for r in self.roles],
            "emojis": [],
            "stickers": [],
            "system_channel_id": str(self.channels[0].id) if self.channels else None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "max_members": 500000,
            "max_video_channel_users": 25,
            "application_id": None,
        }

    def to_gateway_dict(self) -> dict[str, Any]:
        data = self.to_dict()
        data.update(
            {
                "joined_at": iso_now(),
                "large": False,
                "unavailable": False,
                "member_count": len(self.members),
                "members": [m.to_dict() for m in self.members],
                "channels": [c.to_dict() for c in self.channels],
                "threads": [],
                "presences": [],
                "voice_states": [],
                "stage_instances": [],
                "guild_scheduled_events": [],
                "soundboard_sounds": [],
                "lazy": True,
            }
        )
        for channel in data["channels"]:
            channel.pop("guild_id", None)
        return data


@dataclass(eq=False)
class Attachment:
    """A file as Discord stores it; `.data` holds the bytes the bot uploaded."""

    id: int
    filename: str
    data: bytes
    url: str
    content_type: str | None = None
    description: str | None = None
    width: int | None = None
    height: int | None = None

    @classmethod
    def create(cls, *, id: int, filename: str, data: bytes, base_url: str, channel_id: int,
               description: str | None = None, content_type: str | None = None) -> "Attachment":
        content_type = content_type if content_type and content_type != "application/octet-stream" else None
        content_type = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        width = height = None
        if content_type.startswith("image/"):
            try:
                from PIL import Image

                with Image.open(io.BytesIO(data)) as image:
                    width, height = image.size
            except Exception:  # not an image after all: Discord leaves the size out too
                pass
        url = f"{base_url}/attachments/{channel_id}/{id}/{filename}"
        return cls(id=id, filename=filename, data=data, url=url, content_type=content_type,
                   description=description, width=width, height=height)

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def spoiler(self) -> bool:
        return self.filename.startswith("SPOILER_")

    def image(self):
        """The attachment opened with Pillow."""
        from PIL import Image

        return Image.open(io.BytesIO(self.data))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url.replace("/attachments/", "/media-proxy/attachments/", 1),
            "content_type": self.content_type,
        }
        if self.description is not None:
            data["description"] = self.description
        if self.width is not None:
            data["width"], data["height"] = self.width, self.height
        if self.spoiler:
            data["flags"] = 0
        return data

    def __repr__(self) -> str:
        return f"<Attachment {self.filename} {self.size}B {self.width}x{self.height}>"


class MessageVersion:
    """One state of a message as users saw it: what `Message.history` holds and what `Message` is now."""

    def __init__(self, data: dict[str, Any], attachments: list[Attachment]) -> None:
        self.data = data
        self._attachments = list(attachments)

    @property
    def id(self) -> int:
        return int(self.data["id"])

    @property
    def channel_id(self) -> int:
        return int(self.data["channel_id"])

    @property
    def content(self) -> str:
        return self.data.get("content", "")

    @property
    def embeds(self) -> list[dict[str, Any]]:
        return self.data.get("embeds", [])

    @property
    def components(self) -> list[dict[str, Any]]:
        return self.data.get("components", [])

    @property
    def attachments(self) -> list[Attachment]:
        return list(self._attachments)

    @property
    def flags(self) -> int:
        return int(self.data.get("flags", 0))

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        """True while the message is a deferred 'Bot is thinking...' placeholder."""
        return bool(self.flags & LOADING)

    @property
    def author_id(self) -> int:
        return int(self.data["author"]["id"])

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """Every button in the message, flattened out of its action rows (and any nested layouts)."""
        found: list[dict[str, Any]] = []

        def walk(components: list[dict[str, Any]]) -> None:
            for c in components:
                if c.get("type") == 2:
                    found.append(c)
                walk(c.get("components", []))
                if "accessory" in c:
                    walk([c["accessory"]])

        walk(self.components)
        return found

    @property
    def selects(self) -> list[dict[str, Any]]:
        """Every string select in the message, out of its action rows."""
        return [c for row in self.components for c in row.get("components", []) if c.get("type") == 3]

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} id={self.id} content={self.content[:60]!r} embeds={len(self.embeds)}"
                f" attachments={[a.filename for a in self._attachments]} flags={self.flags}>")


class Message(MessageVersion):
    """A live message: it changes in place when the bot edits it; earlier versions are kept in `.history`."""

    def __init__(self, data: dict[str, Any], attachments: list[Attachment], *, interaction: Any = None) -> None:
        super().__init__(data, attachments)
        self.history: list[MessageVersion] = []
        self.deleted = False
        self.interaction = interaction  # the stand-in Interaction this message answers, if any
        self.pinged: frozenset[int] = frozenset()  # user ids notified when the message was created

    @property
    def edits(self) -> int:
        return len(self.history)

    def _replace(self, data: dict[str, Any], attachments: list[Attachment]) -> None:
        self.history.append(MessageVersion(copy.deepcopy(self.data), self._attachments))
        self.data = data
        self._attachments = list(attachments)
