"""REST routes of the bot and its application: the bot user, other users and DM channels, the application, the
gateway URL, and application commands (global and per server)."""

from __future__ import annotations

import copy
import re
import secrets
from typing import Any

from .model import Channel
from .rest import DiscordError, _Body, invalid_form


class ApplicationRoutes:
    """Users, the application, the gateway URL and commands; mixed into `DiscordStandin` (server.py)."""

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
