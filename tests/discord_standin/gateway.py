"""The stand-in's gateway: a `GatewayConnection` per websocket client (its compression, sequence numbers and shard),
and the `Gateway` mixin that speaks the protocol (HELLO, IDENTIFY and READY, RESUME, member chunks) and sends
events on the connection of the shard that owns them."""

from __future__ import annotations

import asyncio
import json
import secrets
import zlib
from typing import Any

from aiohttp import WSMsgType, web

from .model import Channel, Guild

GUILD_MEMBERS_INTENT = 1 << 1
GUILD_MESSAGES_INTENT = 1 << 9
GUILD_MESSAGE_REACTIONS_INTENT = 1 << 10
DIRECT_MESSAGES_INTENT = 1 << 12
DIRECT_MESSAGE_REACTIONS_INTENT = 1 << 13


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


class Gateway:
    """The gateway websocket; mixed into `DiscordStandin` (server.py), whose world and connections it uses."""

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
