"""The stand-in's REST plumbing: the route table, each request recorded, its auth and body (JSON or multipart),
Discord's error JSON and rate-limit headers, and the attachments' file server. Routes live in rest_*.py."""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

API_PREFIX = "/api/v10"


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


class RestRouting:
    """Routing REST requests to their handlers; mixed into `DiscordStandin` (server.py), with the rest_*.py routes."""

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
