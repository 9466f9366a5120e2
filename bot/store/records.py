"""The store's records: the small frozen dataclasses its rows become (Job, Limits, Preferences, Recovered) and the
constants that go with them (job kinds, limit keys and ranges, preference keys, how often a job may be interrupted)."""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field, fields

JOB_KINDS = ("imagine", "reroll", "variation", "upscale", "zoom", "pan")
WINDOW_S = 3600.0  # the rolling hour of Limits.jobs_per_hour
# A job interrupted this many times (the process died while it ran: the OOM killer, a driver crash) is not run
# again: it would likely kill the bot again, and every restart would start with it.
MAX_ATTEMPTS = 2
INTERRUPTED_TOO_OFTEN = (
    "The bot stopped twice while making this, so it won't try a third time: it may be too big for this server. "
    "Try a smaller size or fewer steps, or ask the server owner to look at the bot's log."
)
LOST_TOO_OFTEN = (
    "The GPU worker making this went away twice, so I won't try a third time: it may be too big for this server. "
    "Try a smaller size or fewer steps, or ask the server owner to look at the Ray cluster's logs."
)


@dataclass(frozen=True)
class Recovered:
    """What Store.recover found at start-up."""

    queued: list[Job]  # every queued job in queue order, the interrupted ones (requeued) first
    failed: list[Job]  # jobs interrupted for the MAX_ATTEMPTS-th time, now failed with INTERRUPTED_TOO_OFTEN


@dataclass(frozen=True)
class Limits:
    enabled: bool = True  # bot enabled in the channel
    jobs_per_hour: int = 10  # jobs per user per rolling hour, per channel
    max_queued: int = 2  # max queued (not yet running) jobs per user, per channel
    max_steps: int = 50
    max_side: int = 1024  # max image side in px
    nsfw_allowed: bool = False  # only honoured in age-restricted channels (the bot decides)
    model: str | None = None  # the channel's default model (a configured name); None: the server's first model


LIMIT_KEYS = ("enabled", "jobs_per_hour", "max_queued", "max_steps", "max_side", "nsfw_allowed", "model")
# A model's configured name (IMAGINE_MODELS), as the engine accepts it; stored lower-case.
MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
# Accepted ranges of the integer limits, inclusive.
LIMIT_RANGES = {"jobs_per_hour": (1, 1000), "max_queued": (1, 100), "max_steps": (1, 150), "max_side": (64, 4096)}


@dataclass(frozen=True)
class Preferences:
    """A member's own preferences in one server (/settings, /prefer); the defaults for a member who set none."""

    remix: bool = False  # 🔄 and the variation buttons first open a "Remix" modal with the prompt to edit
    variation: str = "strong"  # what V1-V4 use: "strong" or "subtle" (bot/admission.py STRENGTHS)
    aspect: str | None = None  # default aspect ratio of their prompts; None: the model's default
    suffix: str = ""  # appended to every prompt they send (flags allowed)


PREFERENCE_KEYS = ("remix", "variation", "aspect", "suffix")


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    status: str  # queued|running|done|failed|cancelled
    user_id: int
    guild_id: int | None
    channel_id: int
    recipe: dict  # prompt, negative_prompt, width, height, steps, guidance, seeds, strength, source image index...
    parent_id: int | None  # job whose image this one uses (buttons)
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    message_id: int | None  # the Discord message that shows this job
    interaction_token: str | None = field(repr=False)  # edits the original response while valid (15 min)
    token_expires_at: float | None
    result: dict | None  # from finish_job: seeds, nsfw flags, elapsed, model...
    image_count: int  # images kept on disk for this job (0 if none or pruned)
    images_pruned: bool
    attempts: int  # times the job was handed to the engine (claim_next); a restart cuts an attempt short
    images_deleted_at: float | None = None  # when its requester or a moderator deleted its images (❌)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        values = {f.name: row[f.name] for f in fields(cls)}
        values["recipe"] = json.loads(values["recipe"])
        values["result"] = None if values["result"] is None else json.loads(values["result"])
        values["images_pruned"] = bool(values["images_pruned"])
        return cls(**values)
