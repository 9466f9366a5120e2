"""A small Discord on 127.0.0.1: v10 REST and the gateway websocket, enough for an unmodified discord.py client."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
import secrets
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable

from aiohttp import WSMsgType, web

from .components import FormError, check_modal, check_select, modal_submit_data, select_data
from .interactions import Ack, Interaction, StandinError, wait_condition
from .mentions import Mentions, MentionsRefused, resolve as resolve_mentions
from .model import (
    ADD_REACTIONS, ADMINISTRATOR, ATTACH_FILES, DEFAULT_EVERYONE_PERMISSIONS, EMBED_LINKS, EPHEMERAL, LOADING,
    MANAGE_MESSAGES, MODERATOR_PERMISSIONS, READ_MESSAGE_HISTORY, SEND_MESSAGES, USE_APPLICATION_COMMANDS,
    VIEW_CHANNEL,
    Attachment, Channel, Guild, Member, Message, Role, Snowflakes, User, iso_now,
)

log = logging.getLogger(__name__)

API_PREFIX = "/api/v10"
GUILD_MEMBERS_INTENT = 1 << 1
GUILD_MESSAGES_INTENT = 1 << 9
GUILD_MESSAGE_REACTIONS_INTENT = 1 << 10
DIRECT_MESSAGES_INTENT = 1 << 12
DIRECT_MESSAGE_REACTIONS_INTENT = 1 << 13
OPTION_TYPES = {1: "subcommand", 2: "subcommand group", 3: "string", 4: "integer", 5: "boolean", 6: "user",
                7: "channel", 8: "role", 9: "mentionable", 10: "number", 11: "attachment"}


@dataclass(frozen=True)
class Ping:
    """A notification Discord sent: `user` was pinged by `message` when it was created."""

    message: Message
    user: User


@dataclass
class RecordedRequest:
    """One REST request as the stand-in received it."""

    method: str
    path: str
    route: str | None  # the route template, e.g. "/channels/{channel_id}/messages"; None when unknown
    query: dict[str, str]
    json: Any = None
    files: list[tuple[str, bytes]] = field(default_factory=list)  # (filename, bytes)
    at: float = 0.0  # the stand-in's clock when it arrived
    status: int | None = None
    response: Any = None

    def __repr__(self) -> str:
        return f"<{self.method} {self.path} -> {self.status}>"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON exactly as Discord labels it: discord.py parses only a bare `application/json` content type."""
    return web.Response(body=json.dumps(data).encode(), status=status, headers=headers,
                        content_type="application/json")


class DiscordError(Exception):
    """Raised inside a route handler: becomes Discord's error JSON."""

    def __init__(self, status: int, message: str, code: int, headers: dict[str, str] | None = None, **extra: Any):
        self.status, self.body, self.headers = status, {"message": message, "code": code, **extra}, headers or {}


def _rate_limited(bucket: str, limit: int, retry_after: float) -> DiscordError:
    """A per-route (shared) 429 with the headers and body Discord sends, retry_after in seconds."""
    return DiscordError(429, "You are being rate limited.", 0, headers={
        "Retry-After": str(max(1, int(retry_after + 0.999))),
        "X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset-After": f"{retry_after:.3f}",
        "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
        "X-RateLimit-Bucket": bucket, "X-RateLimit-Scope": "shared"},
        retry_after=retry_after, **{"global": False})


def invalid_form(field_name: str, message: str, code: str = "BASE_TYPE_INVALID") -> DiscordError:
    return DiscordError(400, "Invalid Form Body", 50035,
                        errors={field_name: {"_errors": [{"code": code, "message": message}]}})


@dataclass
class _Body:
    json: Any
    files: list[tuple[str, str, bytes, str | None]]  # (field name, filename, bytes, content type)


class GatewayConnection:
    """One websocket client, with the compression it asked for and its own sequence numbers."""

    def __init__(self, ws: web.WebSocketResponse, compress: str | None) -> None:
        self.ws = ws
        self.compress = compress
        self.sequence = 0
        self.session_id: str | None = None
        self.intents = 0
        self.shard: tuple[int, int] | None = None  # [shard_id, num_shards] from IDENTIFY; None: unsharded
        self.dispatched: list[tuple[str, Any]] = []  # every event sent on this connection, (name, data)
        self.identified = False
        self._lock = asyncio.Lock()
        self._zlib = zlib.compressobj() if compress == "zlib-stream" else None
        self._zstd = None
        if compress == "zstd-stream":
            import zstandard  # only asked for by a client that has it

            self._zstd = zstandard.ZstdCompressor().compressobj()

    @property
    def open(self) -> bool:
        return not self.ws.closed

    def owns(self, guild_id: int | None) -> bool:
        """Whether this connection's shard hears about the guild (DMs: shard 0), as Discord routes them."""
        if self.shard is None:
            return True
        shard_id, num_shards = self.shard
        if guild_id is None:
            return shard_id == 0
        return (guild_id >> 22) % num_shards == shard_id

    async def send(self, op: int, d: Any, t: str | None = None) -> None:
        async with self._lock:
            payload: dict[str, Any] = {"op": op, "d": d, "s": None, "t": t}
            if op == 0:
                self.sequence += 1
                payload["s"] = self.sequence
            text = json.dumps(payload)
            if self.ws.closed:
                return
            if self._zlib is not None:
                await self.ws.send_bytes(self._zlib.compress(text.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH))
            elif self._zstd is not None:
                import zstandard

                await self.ws.send_bytes(self._zstd.compress(text.encode())
                                         + self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
            else:
                await self.ws.send_str(text)

    async def dispatch(self, event: str, data: Any) -> None:
        self.dispatched.append((event, data))
        await self.send(0, data, event)


class DiscordStandin:
    """Discord, as far as a discord.py bot can tell. Use as `async with DiscordStandin() as discord:`."""

    def __init__(self, *, token: str | None = None, upload_limit: int = 10 * 1024 * 1024,
                 port: int = 0) -> None:
        self.token = token or f"standin.{secrets.token_urlsafe(24)}"
        self.upload_limit = upload_limit  # bytes of files per request; more gets 413 / 40005
        self.response_deadline = 3.0  # seconds to the first interaction response; later gets 404 / 10062
        self.token_lifetime = 15 * 60.0  # seconds an interaction token works; later gets 401 / 50027
        self.edit_limit = 5  # message edits per channel ...
        self.edit_window = 5.0  # ... per this many seconds; more gets 429
        self.busy_posts = 0  # the next this many channel messages the bot posts get a short 429, as a busy Discord's
        self.heartbeat_interval = 41.25  # seconds, sent in HELLO
        self.refuse_resume = True  # answer RESUME with op 9 (session invalid), as Discord may
        self.recommended_shards: int | None = None  # GET /gateway/bot's `shards`; None: one per 1,000 servers
        self.enforce_default_permissions = True  # users lacking a command's default_member_permissions can't see it
        self.allow_unknown_routes = False  # the fixture fails a test that called a route the stand-in lacks
        self.requests: list[RecordedRequest] = []
        self.unknown_routes: list[RecordedRequest] = []
        self.identifies = 0
        self.resumes = 0
        self.gateway_queries: list[dict[str, str]] = []  # the query string of each gateway connection
        self.pings: list[Ping] = []  # every notification a created message sent, oldest first

        self._ids = Snowflakes()
        self._clock_offset = 0.0
        self._build_world()
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self._messages: dict[int, Message] = {}
        self._option_attachments: dict[int, Attachment] = {}  # files members attached to slash-command options
        self._interactions: dict[int, Interaction] = {}
        self._interactions_by_token: dict[str, Interaction] = {}
        self._edit_times: dict[int, deque[float]] = {}
        self._connections: list[GatewayConnection] = []
        self._session_shards: dict[str, tuple[int, int] | None] = {}
        self._routes = self._build_routes()
        self._changed: asyncio.Condition | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = port or None  # a fixed port (a bot may be started before the stand-in), or free

    # -- the world -------------------------------------------------------------------------------------------

    def _build_world(self) -> None:
        new = self._ids.next
        self.bot_user = User(new(), "imagine-bot", bot=True)
        self.application_id = self.bot_user.id  # Discord gives a bot user the application's id
        self.alice = User(new(), "alice", global_name="Alice")
        self.bob = User(new(), "bob", global_name="Bob")
        self.mod = User(new(), "mod", global_name="Mod")
        self.owner = User(new(), "owner", global_name="Owner")
        self.carol = User(new(), "carol", global_name="Carol")
        # Server A (`guild`): where the tests happen. Server B (`other_guild`): the bot is in it too, and so is
        # alice; carol only there. Channel names are unique across servers so that tests can name them.
        # Their ids put them on different shards of two (server A on shard 0, B on shard 1), so a sharded bot's
        # test covers both connections.
        self.guilds: list[Guild] = [
            self._new_guild("Imagine Test Server", self.owner, ["general", "art", "nsfw-art"],
                            [(self.alice, []), (self.bob, []), (self.mod, ["Moderator"]), (self.owner, [])],
                            shard=(0, 2)),
            self._new_guild("Another Server", self.carol, ["elsewhere"], [(self.carol, []), (self.alice, [])],
                            shard=(1, 2)),
        ]
        self._dm_channels: dict[int, Channel] = {}

    def _new_guild(self, name: str, owner: User, channel_names: list[str],
                   people: list[tuple[User, list[str]]], shard: tuple[int, int] = (0, 1)) -> Guild:
        new = self._ids.next
        guild_id = self._ids.next_on_shard(*shard)
        everyone = Role(guild_id, "@everyone", DEFAULT_EVERYONE_PERMISSIONS)
        moderator = Role(new(), "Moderator", MODERATOR_PERMISSIONS, position=2)
        bot_role = Role(new(), "imagine-bot", VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES,
                        position=1, managed=True)
        roles = [everyone, bot_role, moderator]
        channels = [Channel(new(), channel, guild_id, position=i, nsfw=channel.startswith("nsfw"))
                    for i, channel in enumerate(channel_names)]
        members = [Member(self.bot_user, [bot_role])]
        members += [Member(user, [r for r in roles if r.name in names]) for user, names in people]
        return Guild(guild_id, name, owner.id, roles, channels, members)

    @property
    def guild(self) -> Guild:
        """The first server, where tests happen unless they say otherwise."""
        return self.guilds[0]

    @property
    def other_guild(self) -> Guild:
        """A second server the bot is also in (channel `elsewhere`; members carol and alice)."""
        return self.guilds[1]

    def guild_by_id(self, guild_id: int | str | None) -> Guild | None:
        return next((g for g in self.guilds if str(g.id) == str(guild_id)), None)

    def guild_of(self, channel: Channel) -> Guild | None:
        """The server a channel belongs to (None for a DM channel)."""
        return self.guild_by_id(channel.guild_id) if channel.guild_id is not None else None

    @property
    def users(self) -> list[User]:
        found: dict[int, User] = {}
        for guild in self.guilds:
            found.update((m.user.id, m.user) for m in guild.members)
        return list(found.values())

    def channel(self, name_or_id: str | int | Channel) -> Channel:
        """A text channel of any server (`general`, `art`, `nsfw-art`, `elsewhere`) or a DM channel, by name or id."""
        if isinstance(name_or_id, Channel):
            return name_or_id
        channels = [c for g in self.guilds for c in g.channels]
        for channel in [*channels, *self._dm_channels.values()]:
            if channel.name == str(name_or_id).lstrip("#") or channel.id == name_or_id:
                return channel
        raise StandinError(f"no channel {name_or_id!r}; channels: {[c.name for c in channels]}")

    def user(self, name_or_id: str | int | User | Member) -> User:
        if isinstance(name_or_id, Member):
            return name_or_id.user
        if isinstance(name_or_id, User):
            return name_or_id
        for user in self.users:
            if name_or_id in (user.name, user.id):
                return user
        raise StandinError(f"no user {name_or_id!r}; users: {[u.name for u in self.users]}")

    def member(self, user: str | int | User | Member, guild: Guild | None = None) -> Member:
        """The user as a member of `guild` (the first server unless named)."""
        guild = guild or self.guild
        member = guild.member(self.user(user).id)
        if member is None:
            raise StandinError(f"{self.user(user).name} is not a member of {guild.name!r}")
        return member

    def add_member(self, name: str, *, roles: Iterable[str] = (), guild: Guild | None = None) -> User:
        """Another user joins a server (only the stand-in's record; no GUILD_MEMBER_ADD is sent)."""
        guild = guild or self.guild
        user = User(self._ids.next(), name)
        guild.members.append(Member(user, [guild.role(r) for r in roles]))
        return user

    def permissions(self, user: str | User | Member, channel: str | Channel | None = None) -> int:
        channel = self.channel(channel) if channel else None
        guild = (self.guild_of(channel) if channel else None) or self.guild
        return guild.permissions_for(self.member(user, guild), channel)

    def pinged(self, message: Message | None = None) -> set[User]:
        """Everyone a created message notified (all messages, or one): what tests of mentions assert on."""
        return {p.user for p in self.pings if message is None or p.message is message}

    # -- clock -------------------------------------------------------------------------------------------------

    def now(self) -> float:
        """The stand-in's clock (monotonic seconds); `advance_clock` moves it forward."""
        return time.monotonic() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Jump the stand-in's clock forward: deadlines, token lifetimes and edit windows all follow it."""
        self._clock_offset += seconds

    def expire_token(self, interaction: Interaction) -> None:
        """Make the interaction's token 15 minutes old: its webhook calls now get 401 / 50027."""
        interaction.created_at = self.now() - self.token_lifetime - 1

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def __aenter__(self) -> "DiscordStandin":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def start(self) -> None:
        self._changed = asyncio.Condition()
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("GET", "/gateway", self._gateway)
        app.router.add_route("GET", "/attachments/{channel_id}/{attachment_id}/{filename}", self._serve_attachment)
        app.router.add_route("GET", "/media-proxy/attachments/{channel_id}/{attachment_id}/{filename}",
                             self._serve_attachment)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._api)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port or 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        for conn in list(self._connections):
            await conn.ws.close(code=1001, message=b"stand-in shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def env(self) -> dict[str, str]:
        """Environment for a bot run as its own process (`python -m bot`)."""
        return {"DISCORD_TOKEN": self.token, "DISCORD_API_BASE": self.api_base,
                "DISCORD_GATEWAY_URL": self.gateway_url, "DISCORD_GUILD_ID": str(self.guild.id)}

    def point_discord_py_here(self) -> Callable[[], None]:
        """Aim this process's discord.py at the stand-in (as the bot does from its settings); returns an undo."""
        import discord.gateway
        import discord.http
        import yarl

        saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)

        def undo() -> None:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved

        return undo

    # -- waiting -----------------------------------------------------------------------------------------------

    async def _notify(self) -> None:
        if self._changed is None:
            return
        async with self._changed:
            self._changed.notify_all()

    async def _wait(self, predicate: Callable[[], bool], timeout: float, describe: Callable[[], str]) -> None:
        assert self._changed is not None, "the stand-in is not started"
        await wait_condition(self._changed, predicate, timeout, describe)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
        """Wait until something about the stand-in's state holds, re-checked on every change it sees."""
        await self._wait(predicate, timeout, lambda: f"{what} did not hold within {timeout}s")

    @property
    def connected(self) -> bool:
        """Whether a client is logged in on the gateway (identified on an open connection)."""
        return bool(self._live_connections())

    @property
    def shards(self) -> list[tuple[int, int]]:
        """The (shard_id, num_shards) of each identified open connection, in order; (0, 1) for an unsharded one."""
        return sorted(c.shard or (0, 1) for c in self._live_connections())

    def connection(self, shard_id: int = 0) -> GatewayConnection:
        """The latest identified open connection of a shard (shard 0 is an unsharded client's one connection)."""
        live = [c for c in self._live_connections() if (c.shard or (0, 1))[0] == shard_id]
        if not live:
            raise StandinError(f"no connection of shard {shard_id}; shards connected: {self.shards}")
        return live[-1]

    def _live_connections(self) -> list[GatewayConnection]:
        return [c for c in self._connections if c.open and c.identified]

    def _connection_for(self, guild_id: int | None) -> GatewayConnection | None:
        """The connection Discord sends a guild's events on (the latest identified one of the owning shard)."""
        live = [c for c in self._live_connections() if c.owns(guild_id)]
        return live[-1] if live else None

    async def wait_for_connection(self, timeout: float = 10.0, *, identifies: int | None = None,
                                  shards: int | None = None) -> None:
        """Wait until a client has identified (optionally: until the gateway has seen this many IDENTIFYs, or
        this many shards are connected)."""
        await self._wait(lambda: self.connected and (identifies is None or self.identifies >= identifies)
                         and (shards is None or len(self.shards) >= shards),
                         timeout, lambda: f"no client identified on the gateway within {timeout}s"
                                          f" (identifies so far: {self.identifies}; shards: {self.shards})")

    async def disconnect_clients(self, code: int = 4000) -> None:
        """Drop every gateway connection, as Discord does now and then; clients resume or re-identify."""
        for conn in list(self._connections):
            await conn.ws.close(code=code, message=b"dropped by the stand-in")

    # -- messages as users see them ---------------------------------------------------------------------------

    def messages(self, channel: str | Channel, *, include_ephemeral: bool = True) -> list[Message]:
        """Messages in a channel, oldest first (ephemeral ones included unless asked otherwise)."""
        channel = self.channel(channel)
        return [m for m in self._messages.values()
                if m.channel_id == channel.id and not m.deleted and (include_ephemeral or not m.ephemeral)]

    def latest_message(self, channel: str | Channel) -> Message | None:
        found = self.messages(channel)
        return found[-1] if found else None

    def message(self, message_id: int) -> Message:
        return self._messages[int(message_id)]

    async def wait_for_message(self, channel: str | Channel, predicate: Callable[[Message], bool] = lambda m: True,
                               timeout: float = 5.0) -> Message:
        """Wait until a message in the channel satisfies the predicate (re-checked on every create and edit)."""
        channel = self.channel(channel)
        found: list[Message] = []

        def check() -> bool:
            for message in reversed(self.messages(channel)):
                if not message.loading and predicate(message):
                    found.append(message)
                    return True
            return False

        await self._wait(check, timeout, lambda: f"no message in #{channel.name} matched within {timeout}s;"
                                                 f" latest: {self.messages(channel)[-3:]}")
        return found[0]

    def requests_to(self, route: str, method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests for one route template (e.g. "/channels/{channel_id}/messages")."""
        return [r for r in self.requests if r.route == route and (method is None or r.method == method)]

    # -- user actions ------------------------------------------------------------------------------------------

    async def say(self, user: str | User | Member, channel: str | Channel, content: str) -> Message:
        """A user posts a plain message in a channel."""
        user, channel = self.user(user), self.channel(channel)
        data = self._message_dict(channel, author=user, content=content)
        guild = self.guild_of(channel)
        mentions = resolve_mentions(content, None, guild=guild, known_users={u.id for u in self.users},
                                    author_permissions=self.permissions(user, channel) if guild else 0)
        self._set_mentions(data, mentions)
        message = Message(data, [])
        message.pinged = mentions.pinged(guild, user.id)
        await self._store_new_message(message, channel)
        return message

    async def slash(self, user: str | User | Member, channel: str | Channel, command: str, /,
                    **options: Any) -> Interaction:
        """A user runs a slash command: `slash(alice, "general", "imagine", prompt="a fox")`.

        `command` may be a space-separated path into subcommands ("limits set"); options take Python values
        (users, channels and roles as the stand-in's objects, attachments as (filename, bytes)).
        """
        channel = self.channel(channel)
        guild = self.guild_of(channel)
        if guild is None:
            raise StandinError("slash commands in DMs are not supported by the stand-in")
        member = self.member(user, guild)
        parts = command.lstrip("/").split()
        definition, guild_scoped = await self._synced_command(parts[0], guild)
        self._check_can_use(member, channel, definition)
        resolved: dict[str, dict[str, Any]] = {}
        data: dict[str, Any] = {"id": definition["id"], "name": definition["name"], "type": 1}
        if guild_scoped:
            data["guild_id"] = str(guild.id)
        container, level = data, definition
        for i, part in enumerate(parts[1:], start=1):
            sub = next((o for o in level.get("options", []) if o["name"] == part and o["type"] in (1, 2)), None)
            if sub is None:
                names = [o["name"] for o in level.get("options", []) if o["type"] in (1, 2)]
                raise StandinError(f"/{' '.join(parts[:i])} has no subcommand {part!r}; it has {names}")
            entry = {"name": sub["name"], "type": sub["type"], "options": []}
            container.setdefault("options", []).append(entry)
            container, level = entry, sub
        groups = [o["name"] for o in level.get("options", []) if o["type"] in (1, 2)]
        if groups:
            raise StandinError(f"/{command} is a group; pick one of its subcommands: {groups}")
        values = self._option_values(command, level.get("options", []), options, resolved, channel, member)
        if values or container is not data:
            container["options"] = values
        if resolved:
            data["resolved"] = resolved
        return await self._dispatch_interaction(2, member, channel, data)

    async def click(self, user: str | User | Member, message: Message, button: str) -> Interaction:
        """A user clicks a button on a message, found by its label, emoji or custom_id."""
        channel = self.channel(message.channel_id)
        member = self.member(user, self.guild_of(channel))
        candidates = message.buttons
        chosen = next((b for b in candidates if button in (b.get("label"), b.get("custom_id"),
                                                           (b.get("emoji") or {}).get("name"))), None)
        if chosen is None:
            shown = [b.get("label") or (b.get("emoji") or {}).get("name") or b.get("custom_id") for b in candidates]
            raise StandinError(f"no button {button!r} on message {message.id}; its buttons: {shown}")
        if chosen.get("disabled"):
            raise StandinError(f"button {button!r} on message {message.id} is disabled; a user cannot click it")
        self._check_can_see(member, message)
        if "custom_id" not in chosen:
            raise StandinError(f"button {button!r} is a link button (style {chosen.get('style')}); it opens a URL")
        data: dict[str, Any] = {"custom_id": chosen["custom_id"], "component_type": 2}
        if "id" in chosen:
            data["id"] = chosen["id"]
        return await self._dispatch_interaction(3, member, channel, data, source=message)

    async def react(self, user: str | User | Member, message: Message, emoji: str) -> None:
        """A user adds a (unicode) emoji reaction to a message: the message counts it, and a bot with the reactions
        intent gets MESSAGE_REACTION_ADD on the shard of the message's server."""
        user, channel = self.user(user), self.channel(message.channel_id)
        if message.deleted or message.ephemeral:
            raise StandinError(f"message {message.id} cannot be reacted to (deleted or ephemeral)")
        guild = self.guild_of(channel)
        member = self.member(user, guild) if guild is not None else None
        if member is not None and ~self.permissions(member, channel) & (ADD_REACTIONS | READ_MESSAGE_HISTORY):
            raise StandinError(f"{user.name} may not add reactions in #{channel.name}")
        reactions = message.data.setdefault("reactions", [])
        entry = next((r for r in reactions if r["emoji"]["name"] == emoji), None)
        if entry is None:
            entry = {"count": 0, "count_details": {"burst": 0, "normal": 0}, "me": False, "me_burst": False,
                     "emoji": {"id": None, "name": emoji}, "burst_colors": []}
            reactions.append(entry)
        entry["count"] += 1
        entry["count_details"]["normal"] += 1
        entry["me"] = entry["me"] or user.id == self.bot_user.id
        data: dict[str, Any] = {"user_id": str(user.id), "channel_id": str(channel.id), "message_id": str(message.id),
                                "emoji": {"id": None, "name": emoji}, "message_author_id": str(message.author_id),
                                "burst": False, "burst_colors": [], "type": 0}
        if guild is not None and member is not None:
            data["guild_id"] = str(guild.id)
            data["member"] = member.to_dict()
        await self._notify()
        intent = DIRECT_MESSAGE_REACTIONS_INTENT if guild is None else GUILD_MESSAGE_REACTIONS_INTENT
        await self._broadcast("MESSAGE_REACTION_ADD", data, channel, intent=intent)

    async def message_command(self, user: str | User | Member, message: Message, command: str) -> Interaction:
        """A user runs a message context-menu command (Apps → `command`) on a message: a type 3 command whose
        interaction data names the message (`target_id`) and carries it in `resolved.messages`."""
        channel = self.channel(message.channel_id)
        guild = self.guild_of(channel)
        if guild is None:
            raise StandinError("context-menu commands in DMs are not supported by the stand-in")
        if message.deleted or message.ephemeral:
            raise StandinError(f"message {message.id} has no context menu (deleted or ephemeral)")
        member = self.member(user, guild)
        definition, guild_scoped = await self._synced_command(command, guild, kind=3)
        self._check_can_use(member, channel, definition)
        data: dict[str, Any] = {"id": definition["id"], "name": definition["name"], "type": 3,
                                "target_id": str(message.id),
                                "resolved": {"messages": {str(message.id): copy.deepcopy(message.data)}}}
        if guild_scoped:
            data["guild_id"] = str(guild.id)
        return await self._dispatch_interaction(2, member, channel, data)

    async def select(self, user: str | User | Member, message: Message, select: str, values: list[str]) -> Interaction:
        """A user picks `values` in a string select of a message, found by its custom_id or placeholder."""
        channel = self.channel(message.channel_id)
        member = self.member(user, self.guild_of(channel))
        self._check_can_see(member, message)
        chosen = next((s for s in message.selects if select in (s.get("custom_id"), s.get("placeholder"))), None)
        if chosen is None:
            shown = [s.get("placeholder") or s.get("custom_id") for s in message.selects]
            raise StandinError(f"no select {select!r} on message {message.id}; its selects: {shown}")
        if chosen.get("disabled"):
            raise StandinError(f"select {select!r} on message {message.id} is disabled; a user cannot use it")
        return await self._dispatch_interaction(3, member, channel, select_data(chosen, values), source=message)

    async def submit_modal(self, opened_by: Interaction, values: dict[str, str] | None = None) -> Interaction:
        """The user who got a modal (callback type 9) fills it in and submits it: a MODAL_SUBMIT interaction.

        `values` maps text input custom_ids to what the user typed; the others keep their pre-filled values.
        Discord includes the message whose button opened the modal, so the bot may answer with an update (7).
        """
        if opened_by.modal is None:
            raise StandinError(f"interaction {opened_by.describe()} did not open a modal (ack: {opened_by.ack})")
        if opened_by.modal_submitted:
            raise StandinError("that modal was already submitted; it closed")
        data = modal_submit_data(opened_by.modal, values or {})
        opened_by.modal_submitted = True
        return await self._dispatch_interaction(5, opened_by.member, opened_by.channel, data,
                                                source=opened_by.source_message)

    def _check_can_see(self, member: Member, message: Message) -> None:
        """Only the member an ephemeral message was shown to can see it, so only they can use its components."""
        if message.deleted:
            raise StandinError(f"message {message.id} was deleted; nobody can use its components")
        if message.ephemeral and (message.interaction is None or message.interaction.user.id != member.user.id):
            raise StandinError(f"message {message.id} is ephemeral: only the member it was shown to can see it")

    async def forge_click(self, user: str | User | Member, message: Message, custom_id: str) -> Interaction:
        """A modified client sends a button click with a custom_id of its choosing, which the message needn't carry.

        Official Discord clients cannot do this: they only send the custom_id of a button the message shows. Discord
        itself does not check the custom_id, so a bot must not trust it: this is how a test plays that attacker.
        The interaction's `message` is still the real clicked message, as Discord fills it in.
        """
        channel = self.channel(message.channel_id)
        member = self.member(user, self.guild_of(channel))
        if message.deleted or message.ephemeral:
            raise StandinError(f"message {message.id} cannot be clicked (deleted or ephemeral)")
        return await self._dispatch_interaction(3, member, channel, {"custom_id": custom_id, "component_type": 2},
                                                source=message)

    async def _synced_command(self, name: str, guild: Guild, timeout: float = 5.0,
                              kind: int = 1) -> tuple[dict[str, Any], bool]:
        """A synced command of this kind (1 slash, 2 user menu, 3 message menu) by name: the server's, else global."""
        def lookup() -> tuple[dict[str, Any], bool] | None:
            for cmd in self.guild_commands.get(guild.id, []):
                if cmd["name"] == name and cmd.get("type", 1) == kind:
                    return cmd, True
            for cmd in self.global_commands:
                if cmd["name"] == name and cmd.get("type", 1) == kind:
                    return cmd, False
            return None

        def synced_names() -> list[str]:
            return sorted({c["name"] for c in [*self.global_commands, *self.guild_commands.get(guild.id, [])]})

        await self._wait(lambda: lookup() is not None, timeout,
                         lambda: f"/{name} is not synced (waited {timeout}s); synced commands: {synced_names()}")
        found = lookup()
        assert found is not None
        return found

    def _check_can_use(self, member: Member, channel: Channel, definition: dict[str, Any]) -> None:
        perms = self.permissions(member, channel)
        if not perms & USE_APPLICATION_COMMANDS:
            raise StandinError(f"{member.name} may not use application commands in #{channel.name}")
        needed = definition.get("default_member_permissions")
        if self.enforce_default_permissions and needed is not None and not perms & ADMINISTRATOR:
            if int(needed) & ~perms:
                raise StandinError(
                    f"{member.name} cannot see /{definition['name']}: it needs permissions {needed}"
                    f" (default_member_permissions) and they have {perms};"
                    f" set discord.enforce_default_permissions = False to let them try anyway")
        if definition.get("nsfw") and not channel.nsfw:
            raise StandinError(f"/{definition['name']} is age-restricted; Discord offers it only in NSFW channels")

    def _option_values(self, command: str, defs: list[dict[str, Any]], given: dict[str, Any],
                       resolved: dict[str, dict[str, Any]], channel: Channel,
                       invoker: Member) -> list[dict[str, Any]]:
        by_name = {o["name"]: o for o in defs}
        values = []
        for key, value in given.items():
            definition = by_name.get(key) or by_name.get(key.replace("_", "-"))
            if definition is None:
                raise StandinError(f"/{command} has no option {key!r}; its options: {list(by_name)}")
            values.append({"name": definition["name"], "type": definition["type"],
                           "value": self._option_value(command, definition, value, resolved, channel, invoker)})
        missing = [o["name"] for o in defs if o.get("required") and o["name"] not in {v["name"] for v in values}]
        if missing:
            raise StandinError(f"/{command} needs option(s) {missing}; Discord would not send it without them")
        return values

    def _option_value(self, command: str, definition: dict[str, Any], value: Any,
                      resolved: dict[str, dict[str, Any]], channel: Channel, invoker: Member) -> Any:
        kind, name = definition["type"], definition["name"]
        guild = self.guild_of(channel) or self.guild
        try:
            if kind == 3:
                value = str(value)
            elif kind == 4:
                if isinstance(value, bool) or int(value) != value:
                    raise ValueError(value)
                value = int(value)
            elif kind == 10:
                value = float(value)
            elif kind == 5:
                if not isinstance(value, bool):
                    raise ValueError(value)
            elif kind in (6, 9) and not isinstance(value, Role):
                user = self.user(value)
                resolved.setdefault("users", {})[str(user.id)] = user.to_dict()
                member = guild.member(user.id)
                if member is not None:
                    resolved.setdefault("members", {})[str(user.id)] = {
                        **member.to_dict(with_user=False),
                        "permissions": str(guild.permissions_for(member, channel))}
                return str(user.id)
            elif kind in (8, 9):
                role = value if isinstance(value, Role) else guild.role(str(value))
                resolved.setdefault("roles", {})[str(role.id)] = role.to_dict()
                return str(role.id)
            elif kind == 7:
                target = self.channel(value)
                resolved.setdefault("channels", {})[str(target.id)] = {
                    "id": str(target.id), "name": target.name, "type": target.type, "nsfw": target.nsfw,
                    "parent_id": None,
                    "permissions": str(guild.permissions_for(invoker, target))}
                return str(target.id)
            elif kind == 11:
                filename, blob = value
                attachment = Attachment.create(id=self._ids.next(), filename=filename, data=blob,
                                               base_url=self.base_url, channel_id=channel.id)
                resolved.setdefault("attachments", {})[str(attachment.id)] = attachment.to_dict()
                self._option_attachments[attachment.id] = attachment  # Discord serves it at its url
                return str(attachment.id)
        except (TypeError, ValueError):
            raise StandinError(f"/{command} option {name!r} is a {OPTION_TYPES.get(kind, kind)};"
                               f" Discord would not accept {value!r}") from None
        choices = definition.get("choices")
        if choices and value not in [c["value"] for c in choices]:
            raise StandinError(f"/{command} option {name!r} must be one of {[c['value'] for c in choices]},"
                               f" got {value!r}")
        for bound, ok in (("min_value", lambda b: value >= b), ("max_value", lambda b: value <= b),
                          ("min_length", lambda b: len(value) >= b), ("max_length", lambda b: len(value) <= b)):
            if definition.get(bound) is not None and not ok(definition[bound]):
                raise StandinError(f"/{command} option {name!r} breaks {bound}={definition[bound]}: {value!r}")
        return value

    def _command_path(self, data: dict[str, Any]) -> str:
        path = [data.get("name", "?")]
        options = data.get("options", [])
        while options and options[0].get("type") in (1, 2):
            path.append(options[0]["name"])
            options = options[0].get("options", [])
        return " ".join(path)

    async def _dispatch_interaction(self, type: int, member: Member, channel: Channel, data: dict[str, Any],
                                    source: Message | None = None) -> Interaction:
        await self._wait(lambda: self._connection_for(channel.guild_id) is not None, 10.0,
                         lambda: f"no gateway connection (shard) owns server {channel.guild_id} within 10s;"
                                 f" shards connected: {self.shards}")
        conn = self._connection_for(channel.guild_id)
        assert conn is not None
        interaction_id = self._ids.next()
        token = f"aW50ZXJhY3Rpb246{interaction_id}:{secrets.token_urlsafe(48)}"
        guild = self.guild_of(channel)
        assert guild is not None
        bot_member = guild.member(self.bot_user.id)
        assert bot_member is not None
        member_perms = guild.permissions_for(member, channel)
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": type,
            "data": data,
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
            "channel_id": str(channel.id),
            "channel": {**channel.to_dict(), "permissions": str(member_perms)},
            "member": {**member.to_dict(), "permissions": str(member_perms)},
            "token": token,
            "version": 1,
            "app_permissions": str(guild.permissions_for(bot_member, channel)),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "entitlement_sku_ids": [],
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0,
            "attachment_size_limit": self.upload_limit,
        }
        if source is not None:
            payload["message"] = copy.deepcopy(source.data)
        interaction = Interaction(self, id=interaction_id, token=token, type=type, member=member, channel=channel,
                                  data=data, payload=payload, source_message=source)
        self._interactions[interaction_id] = interaction
        self._interactions_by_token[token] = interaction
        interaction.dispatched_at = self.now()
        await conn.dispatch("INTERACTION_CREATE", payload)
        return interaction

    # -- gateway -----------------------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        if request.query.get("encoding", "json") != "json":
            await ws.close(code=4002, message=b"the stand-in speaks json only")
            return ws
        self.gateway_queries.append(dict(request.query))
        conn = GatewayConnection(ws, request.query.get("compress"))
        self._connections.append(conn)
        try:
            await conn.send(10, {"heartbeat_interval": int(self.heartbeat_interval * 1000), "_trace": ["standin"]})
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._gateway_message(conn, json.loads(msg.data))
                elif msg.type == WSMsgType.BINARY:
                    await self._gateway_message(conn, json.loads(zlib.decompress(msg.data)))
        finally:
            self._connections.remove(conn)
            await self._notify()
        return ws

    async def _gateway_message(self, conn: GatewayConnection, msg: dict[str, Any]) -> None:
        op, d = msg.get("op"), msg.get("d")
        if op == 1:
            await conn.send(11, None)
        elif op == 2:
            await self._identify(conn, d)
        elif op == 6:
            self.resumes += 1
            if self.refuse_resume or d.get("token") != self.token:
                await conn.send(9, False)
            else:
                conn.identified, conn.session_id = True, d.get("session_id")
                conn.shard = self._session_shards.get(conn.session_id)  # a session keeps its shard
                await conn.dispatch("RESUMED", {"_trace": ["standin"]})
                await self._notify()
        elif op == 8:
            guild = self.guild_by_id(d.get("guild_id"))
            if guild is not None and guild in self._guilds_for(conn):
                await conn.dispatch("GUILD_MEMBERS_CHUNK", {
                    "guild_id": str(guild.id), "members": [m.to_dict() for m in guild.members],
                    "chunk_index": 0, "chunk_count": 1, "not_found": [], "nonce": d.get("nonce")})
        # op 3 (presence) and 4 (voice state) need no answer here.

    async def _identify(self, conn: GatewayConnection, d: dict[str, Any]) -> None:
        if d.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        shard = d.get("shard")
        if shard is not None:
            valid = (isinstance(shard, list) and len(shard) == 2 and all(type(n) is int for n in shard)
                     and 0 <= shard[0] < shard[1])
            if not valid:
                await conn.ws.close(code=4010, message=b"Invalid shard.")
                return
            conn.shard = (shard[0], shard[1])
        self.identifies += 1
        conn.intents = int(d.get("intents", 0))
        conn.session_id = secrets.token_hex(16)
        self._session_shards[conn.session_id] = conn.shard
        ready: dict[str, Any] = {
            "v": 10,
            "user": {**self.bot_user.to_dict(), "verified": True, "mfa_enabled": False, "email": None},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in self._guilds_for(conn)],
            "session_id": conn.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 1 << 23},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["standin"],
            "user_settings": {},
            "auth_session_id_hash": secrets.token_hex(8),
            "_trace": ["standin"],
        }
        if "shard" in d:
            ready["shard"] = d["shard"]
        await conn.dispatch("READY", ready)
        for guild in self._guilds_for(conn):
            data = guild.to_gateway_dict()
            if not conn.intents & GUILD_MEMBERS_INTENT:  # without the privileged intent Discord sends only the bot
                data["members"] = [m for m in data["members"] if m["user"]["id"] == str(self.bot_user.id)]
            await conn.dispatch("GUILD_CREATE", data)
        conn.identified = True
        await self._notify()

    def _guilds_for(self, conn: GatewayConnection) -> list[Guild]:
        """The servers a gateway connection hears about: all of them unsharded, else those of its shard
        (Discord's ``(guild_id >> 22) % num_shards == shard_id``)."""
        return [g for g in self.guilds if conn.owns(g.id)]

    async def _broadcast(self, event: str, data: dict[str, Any], channel: Channel, intent: int | None = None) -> None:
        conn = self._connection_for(channel.guild_id)
        if intent is None:
            intent = DIRECT_MESSAGES_INTENT if channel.type == 1 else GUILD_MESSAGES_INTENT
        if conn is not None and conn.intents & intent:
            await conn.dispatch(event, data)

    # -- REST plumbing -----------------------------------------------------------------------------------------

    def _build_routes(self) -> list[tuple[str, re.Pattern[str], str, Callable[..., Awaitable[Any]], bool]]:
        table: list[tuple[str, str, Callable[..., Awaitable[Any]], bool]] = [
            ("GET", "/users/@me", self._get_me, True),
            ("GET", "/users/{user_id}", self._get_user, True),
            ("POST", "/users/@me/channels", self._create_dm, True),
            ("GET", "/oauth2/applications/@me", self._get_application, True),
            ("GET", "/applications/@me", self._get_application, True),
            ("GET", "/gateway", self._get_gateway, False),
            ("GET", "/gateway/bot", self._get_gateway_bot, True),
            ("GET", "/applications/{application_id}/commands", self._get_commands, True),
            ("PUT", "/applications/{application_id}/commands", self._put_commands, True),
            ("POST", "/applications/{application_id}/commands", self._post_command, True),
            ("GET", "/applications/{application_id}/commands/{command_id}", self._get_command, True),
            ("PATCH", "/applications/{application_id}/commands/{command_id}", self._patch_command, True),
            ("DELETE", "/applications/{application_id}/commands/{command_id}", self._delete_command, True),
            ("GET", "/applications/{application_id}/guilds/{guild_id}/commands", self._get_commands, True),
            ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", self._put_commands, True),
            ("POST", "/applications/{application_id}/guilds/{guild_id}/commands", self._post_command, True),
            ("GET", "/applications/{application_id}/guilds/{guild_id}/commands/permissions",
             self._get_command_permissions, True),
            ("GET", "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}", self._get_command, True),
            ("PATCH", "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}",
             self._patch_command, True),
            ("DELETE", "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}",
             self._delete_command, True),
            ("POST", "/interactions/{interaction_id}/{interaction_token}/callback", self._interaction_callback, False),
            ("POST", "/webhooks/{webhook_id}/{webhook_token}", self._execute_webhook, False),
            ("GET", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}", self._get_webhook_message, False),
            ("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}", self._edit_webhook_message,
             False),
            ("DELETE", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}", self._delete_webhook_message,
             False),
            ("GET", "/channels/{channel_id}", self._get_channel, True),
            ("GET", "/channels/{channel_id}/messages", self._list_messages, True),
            ("POST", "/channels/{channel_id}/messages", self._create_channel_message, True),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._get_channel_message, True),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._edit_channel_message, True),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._delete_channel_message, True),
            ("POST", "/channels/{channel_id}/typing", self._typing, True),
            ("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._no_content, True),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._no_content, True),
            ("GET", "/guilds/{guild_id}", self._get_guild, True),
            ("GET", "/guilds/{guild_id}/channels", self._get_guild_channels, True),
            ("GET", "/guilds/{guild_id}/roles", self._get_roles, True),
            ("GET", "/guilds/{guild_id}/members", self._list_members, True),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member, True),
        ]
        routes = []
        for method, template, handler, auth in table:
            pattern = re.escape(template).replace(r"\{", "{").replace(r"\}", "}")
            pattern = re.sub(r"{(\w+)}", r"(?P<\1>[^/]+)", pattern)
            routes.append((method, re.compile(pattern), template, handler, auth))
        return routes

    async def _api(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        record = RecordedRequest(request.method, path, None, dict(request.query), at=self.now())
        self.requests.append(record)
        try:
            response = await self._route(request, path, record)
        except DiscordError as error:
            response = json_response(error.body, status=error.status, headers=error.headers)
            record.response = error.body
        record.status = response.status
        response.headers["Via"] = "1.1 google"  # discord.py takes a 429 without Via for a Cloudflare ban
        if record.route is not None and response.status != 429:
            bucket = f"{record.route.split('/{')[0]}:{record.method}".encode().hex()[:32]
            response.headers.update({"X-RateLimit-Bucket": bucket, "X-RateLimit-Limit": "50",
                                     "X-RateLimit-Remaining": "49", "X-RateLimit-Reset-After": "1.000",
                                     "X-RateLimit-Reset": f"{time.time() + 1:.3f}"})
        if record.status is not None and record.status >= 400:
            log.info("stand-in answered %s %s with %s: %s", request.method, path, response.status, record.response)
        return response

    async def _route(self, request: web.Request, path: str, record: RecordedRequest) -> web.StreamResponse:
        matched_path = False
        for method, pattern, template, handler, auth in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            matched_path = True
            if method != request.method:
                continue
            record.route = template
            if auth and request.headers.get("Authorization") != f"Bot {self.token}":
                raise DiscordError(401, "401: Unauthorized", 0)
            body = await self._read_body(request)
            record.json = body.json
            record.files = [(filename, blob) for _, filename, blob, _ in body.files]
            if sum(len(blob) for _, _, blob, _ in body.files) > self.upload_limit:
                raise DiscordError(413, "Request entity too large", 40005)
            result = await handler(body=body, query=request.query, **match.groupdict())
            if isinstance(result, web.StreamResponse):
                return result
            record.response = result
            if result is None:
                return web.Response(status=204)
            return json_response(result)
        self.unknown_routes.append(record)
        await self._notify()
        if matched_path:
            raise DiscordError(405, "405: Method Not Allowed", 0)
        raise DiscordError(404, "404: Not Found", 0)

    async def _read_body(self, request: web.Request) -> _Body:
        if not request.can_read_body:
            return _Body(None, [])
        if request.content_type.startswith("multipart/"):
            payload, files = None, []
            reader = await request.multipart()
            async for part in reader:
                blob = await part.read()  # type: ignore[union-attr]
                if part.name == "payload_json":  # type: ignore[union-attr]
                    payload = json.loads(blob)
                else:
                    files.append((part.name, part.filename or "unknown", bytes(blob),  # type: ignore[union-attr]
                                  part.headers.get("Content-Type")))  # type: ignore[union-attr]
            return _Body(payload, files)
        raw = await request.read()
        return _Body(json.loads(raw) if raw else None, [])

    async def _serve_attachment(self, request: web.Request) -> web.Response:
        option = self._option_attachments.get(int(request.match_info["attachment_id"]))
        if option is not None:
            return web.Response(body=option.data, content_type=option.content_type)
        for message in self._messages.values():
            for attachment in message.attachments + [a for v in message.history for a in v.attachments]:
                if str(attachment.id) == request.match_info["attachment_id"]:
                    return web.Response(body=attachment.data, content_type=attachment.content_type)
        return json_response({"message": "404: Not Found", "code": 0}, status=404)

    # -- REST: users, application, gateway ---------------------------------------------------------------------

    async def _get_me(self, **_: Any) -> dict[str, Any]:
        return {**self.bot_user.to_dict(), "verified": True, "mfa_enabled": False, "locale": "en-US",
                "email": None, "premium_type": 0}

    async def _get_user(self, user_id: str, **_: Any) -> dict[str, Any]:
        user = next((u for u in self.users if str(u.id) == user_id), None)
        if user is None:
            raise DiscordError(404, "Unknown User", 10013)
        return user.to_dict()

    async def _create_dm(self, body: _Body, **_: Any) -> dict[str, Any]:
        user = next((u for u in self.users if str(u.id) == str((body.json or {}).get("recipient_id"))), None)
        if user is None:
            raise DiscordError(400, "Invalid Recipient(s)", 50033)
        if user.id not in self._dm_channels:
            self._dm_channels[user.id] = Channel(self._ids.next(), f"dm-{user.name}", None, type=1,
                                                 recipients=[user])
        return self._dm_channels[user.id].to_dict()

    async def _get_application(self, **_: Any) -> dict[str, Any]:
        return {
            "id": str(self.application_id), "name": self.bot_user.name, "icon": None, "description": "",
            "summary": "", "type": None, "hook": True, "bot_public": False, "bot_require_code_grant": False,
            "verify_key": secrets.token_hex(32), "owner": self.owner.to_dict(), "team": None, "flags": 1 << 23,
            "bot": self.bot_user.to_dict(), "rpc_origins": [], "terms_of_service_url": None,
            "privacy_policy_url": None, "interactions_endpoint_url": None, "redirect_uris": [], "tags": [],
            "install_params": None, "approximate_guild_count": 1, "guild_id": None,
            "integration_types_config": {"0": {}}, "custom_install_url": None, "role_connections_verification_url":
                None, "cover_image": None, "primary_sku_id": None, "slug": None,
        }

    async def _get_gateway(self, **_: Any) -> dict[str, Any]:
        return {"url": self.gateway_url}

    async def _get_gateway_bot(self, **_: Any) -> dict[str, Any]:
        shards = self.recommended_shards or max(1, -(-len(self.guilds) // 1000))  # Discord: one per 1,000 servers
        return {"url": self.gateway_url, "shards": shards,
                "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 86_400_000,
                                        "max_concurrency": 1}}

    # -- REST: application commands ----------------------------------------------------------------------------

    def _command_list(self, application_id: str, guild_id: str | None) -> list[dict[str, Any]]:
        if application_id != str(self.application_id):
            raise DiscordError(403, "Missing Access", 50001)
        if guild_id is None:
            return self.global_commands
        guild = self.guild_by_id(guild_id)
        if guild is None:
            raise DiscordError(403, "Missing Access", 50001)
        return self.guild_commands.setdefault(guild.id, [])

    def _stored_command(self, payload: dict[str, Any], guild_id: str | None,
                        previous: list[dict[str, Any]]) -> dict[str, Any]:
        if not isinstance(payload, dict) or not payload.get("name"):
            raise invalid_form("name", "This field is required", "BASE_TYPE_REQUIRED")
        kind = payload.get("type", 1)
        if kind == 1 and not re.fullmatch(r"[-_\w]{1,32}", payload["name"]):
            raise invalid_form("name", "Command name is invalid", "APPLICATION_COMMAND_INVALID_NAME")
        old = next((c for c in previous if c["name"] == payload["name"] and c.get("type", 1) == kind), None)
        command = {
            "id": old["id"] if old else str(self._ids.next()),
            "application_id": str(self.application_id),
            "version": str(self._ids.next()),
            "type": kind,
            "name": payload["name"],
            "name_localizations": payload.get("name_localizations"),
            "description": payload.get("description", ""),
            "description_localizations": payload.get("description_localizations"),
            "default_member_permissions": payload.get("default_member_permissions"),
            "dm_permission": payload.get("dm_permission", True),
            "contexts": payload.get("contexts"),
            "integration_types": payload.get("integration_types", [0]),
            "nsfw": payload.get("nsfw", False),
        }
        if payload.get("options"):
            command["options"] = copy.deepcopy(payload["options"])
        if guild_id is not None:
            command["guild_id"] = guild_id
        return command

    async def _get_commands(self, application_id: str, guild_id: str | None = None, **_: Any) -> list[Any]:
        return copy.deepcopy(self._command_list(application_id, guild_id))

    async def _put_commands(self, application_id: str, body: _Body, guild_id: str | None = None,
                            **_: Any) -> list[Any]:
        current = self._command_list(application_id, guild_id)
        new = [self._stored_command(p, guild_id, current) for p in body.json or []]
        current[:] = new
        await self._notify()
        return copy.deepcopy(new)

    async def _post_command(self, application_id: str, body: _Body, guild_id: str | None = None,
                            **_: Any) -> dict[str, Any]:
        current = self._command_list(application_id, guild_id)
        command = self._stored_command(body.json, guild_id, current)
        current[:] = [c for c in current if c["id"] != command["id"]] + [command]
        await self._notify()
        return copy.deepcopy(command)

    def _find_command(self, application_id: str, guild_id: str | None, command_id: str) -> dict[str, Any]:
        for command in self._command_list(application_id, guild_id):
            if command["id"] == command_id:
                return command
        raise DiscordError(404, "Unknown application command", 10063)

    async def _get_command(self, application_id: str, command_id: str, guild_id: str | None = None,
                           **_: Any) -> dict[str, Any]:
        return copy.deepcopy(self._find_command(application_id, guild_id, command_id))

    async def _patch_command(self, application_id: str, command_id: str, body: _Body, guild_id: str | None = None,
                             **_: Any) -> dict[str, Any]:
        command = self._find_command(application_id, guild_id, command_id)
        command.update({k: v for k, v in (body.json or {}).items() if k != "id"})
        command["version"] = str(self._ids.next())
        await self._notify()
        return copy.deepcopy(command)

    async def _delete_command(self, application_id: str, command_id: str, guild_id: str | None = None,
                              **_: Any) -> None:
        command = self._find_command(application_id, guild_id, command_id)
        self._command_list(application_id, guild_id).remove(command)

    async def _get_command_permissions(self, **_: Any) -> list[Any]:
        return []

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

    # -- REST: interactions and their webhooks -----------------------------------------------------------------

    async def _interaction_callback(self, interaction_id: str, interaction_token: str, body: _Body, query: Any,
                                    **_: Any) -> Any:
        interaction = self._interactions.get(int(interaction_id)) if interaction_id.isdigit() else None
        if interaction is None or interaction.token != interaction_token:
            raise DiscordError(404, "Unknown interaction", 10062)
        if interaction.ack is not None:
            self._refuse(interaction, 400, "Interaction has already been acknowledged.", 40060)
        assert interaction.dispatched_at is not None
        elapsed = self.now() - interaction.dispatched_at
        if elapsed > self.response_deadline:
            self._refuse(interaction, 404, "Unknown interaction", 10062)
        payload = body.json or {}
        kind = payload.get("type")
        data = payload.get("data") or {}
        # Updating the message (6, 7) is for clicks, and for a modal submit when a click opened the modal;
        # a modal (9) can't answer a modal submit (5) or a ping (1).
        from_message = interaction.type == 3 or interaction.type == 5 and interaction.source_message is not None
        if kind in (6, 7) and not from_message or kind == 9 and interaction.type in (1, 5):
            self._refuse(interaction, 400, "Interaction callback type invalid for this interaction", 50035)
        if kind == 9:
            try:
                check_modal(data)
            except FormError as error:
                interaction.refusals.append({"status": 400, "message": str(error), "code": 50035})
                raise invalid_form(error.field, error.message, error.code) from None
            interaction.modal = copy.deepcopy(data)
        if kind not in (1, 4, 5, 6, 7, 8, 9, 10, 12):
            self._refuse(interaction, 400, "Invalid interaction callback type", 50035)
        message: Message | None = None
        if kind == 4:
            message = self._new_message(interaction.channel, data, body.files, author=self.bot_user,
                                        allowed_flags=EPHEMERAL | 4 | 4096, interaction=interaction)
            interaction.original = message
        elif kind == 5:
            flags = LOADING | (int(data.get("flags", 0)) & EPHEMERAL)
            message = self._new_message(interaction.channel, {"content": "", "flags": flags}, [],
                                        author=self.bot_user, allowed_flags=LOADING | EPHEMERAL,
                                        interaction=interaction, allow_empty=True)
            interaction.original = message
        elif kind in (6, 7):
            message = interaction.source_message
            interaction.original = message
            if kind == 7 and message is not None:
                interaction.source_edited = True
                await self._edit_message(message, data, body.files)
        interaction.ack = Ack(kind, elapsed)
        if message is not None and kind in (4, 5):
            await self._store_new_message(message, interaction.channel)
        else:
            await self._notify()
        if query.get("with_response") not in ("1", "true", "True"):
            return None
        result: dict[str, Any] = {"interaction": {
            "id": str(interaction.id), "type": interaction.type,
            "response_message_id": str(message.id) if message is not None else None,
            "response_message_loading": kind == 5,
            "response_message_ephemeral": bool(message is not None and message.ephemeral),
        }}
        if message is not None and kind in (4, 5, 7):
            result["resource"] = {"type": kind, "message": copy.deepcopy(message.data)}
        return result

    def _refuse(self, interaction: Interaction, status: int, message: str, code: int) -> None:
        interaction.refusals.append({"status": status, "message": message, "code": code})
        raise DiscordError(status, message, code)

    def _webhook_interaction(self, webhook_id: str, webhook_token: str) -> Interaction:
        interaction = self._interactions_by_token.get(webhook_token)
        if interaction is None or webhook_id != str(self.application_id):
            raise DiscordError(404, "Unknown Webhook", 10015)
        if self.now() - interaction.created_at >= self.token_lifetime:
            self._refuse(interaction, 401, "Invalid Webhook Token", 50027)
        if interaction.ack is None:  # never acknowledged (or too late): the token is useless
            self._refuse(interaction, 404, "Unknown Webhook", 10015)
        return interaction

    def _interaction_message(self, interaction: Interaction, message_id: str) -> Message:
        if message_id == "@original":
            message = interaction.original
        else:
            message = self._messages.get(int(message_id)) if message_id.isdigit() else None
            if message is not None and message is not interaction.original and message not in interaction.followups:
                message = None
        if message is None or message.deleted:
            self._refuse(interaction, 404, "Unknown Message", 10008)
        assert message is not None
        return message

    async def _execute_webhook(self, webhook_id: str, webhook_token: str, body: _Body, query: Any,
                               **_: Any) -> Any:
        interaction = self._webhook_interaction(webhook_id, webhook_token)
        payload = body.json or {}
        original = interaction.original
        if original is not None and original.loading and not original.deleted and original.interaction is interaction:
            # Discord: the first follow-up after a deferred response replaces the "thinking..." message.
            await self._edit_message(original, {k: v for k, v in payload.items() if k != "flags"}, body.files,
                                     new_files_only=True)
            message = original
        else:
            message = self._new_message(interaction.channel, payload, body.files, author=self.bot_user,
                                        allowed_flags=EPHEMERAL | 4 | 4096, interaction=interaction, followup=True)
            interaction.followups.append(message)
            await self._store_new_message(message, interaction.channel)
        if query.get("wait") in ("1", "true", "True"):
            return copy.deepcopy(message.data)
        return None

    async def _get_webhook_message(self, webhook_id: str, webhook_token: str, message_id: str,
                                   **_: Any) -> dict[str, Any]:
        interaction = self._webhook_interaction(webhook_id, webhook_token)
        return copy.deepcopy(self._interaction_message(interaction, message_id).data)

    async def _edit_webhook_message(self, webhook_id: str, webhook_token: str, message_id: str, body: _Body,
                                    **_: Any) -> dict[str, Any]:
        interaction = self._webhook_interaction(webhook_id, webhook_token)
        message = self._interaction_message(interaction, message_id)
        self._charge_edit(message.channel_id)
        if message is interaction.source_message:
            interaction.source_edited = True
        await self._edit_message(message, body.json or {}, body.files)
        return copy.deepcopy(message.data)

    async def _delete_webhook_message(self, webhook_id: str, webhook_token: str, message_id: str, **_: Any) -> None:
        interaction = self._webhook_interaction(webhook_id, webhook_token)
        await self._delete_message(self._interaction_message(interaction, message_id))

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

