"""A loopback Discord for tests: the real discord.py client logs in, syncs commands and answers interactions."""

from .interactions import Ack, Interaction, StandinError
from .messages import Ping
from .model import Attachment, Channel, Member, Message, MessageVersion, Role, User
from .rest import RecordedRequest
from .server import DiscordStandin

__all__ = ["Ack", "Attachment", "Channel", "DiscordStandin", "Interaction", "Member", "Message", "MessageVersion",
           "Ping", "RecordedRequest", "Role", "StandinError", "User"]
