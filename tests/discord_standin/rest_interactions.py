"""REST routes of interactions: the callback (an interaction's first response) and the webhook its token opens
(follow-ups; getting, editing and deleting the original response and the follow-ups)."""

from __future__ import annotations

import copy
from typing import Any

from .components import FormError, check_modal
from .interactions import Ack, Interaction
from .model import EPHEMERAL, LOADING, Message
from .rest import DiscordError, _Body, invalid_form


class InteractionRoutes:
    """Interaction callbacks and webhooks; mixed into `DiscordStandin` (server.py), whose interactions it uses."""

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
