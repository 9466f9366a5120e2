"""Settings: read the environment (and `.env`) once into one frozen, typed object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dotenv import load_dotenv

from engine.settings import EngineSettings

DISCORD_API_BASE = "https://discord.com/api/v10"
DISCORD_GATEWAY_URL = "wss://gateway.discord.gg/"


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one readable line."""


@dataclass(frozen=True)
class Settings:
    token: str
    engine: EngineSettings
    data_dir: Path = Path("data")
    api_base: str = DISCORD_API_BASE
    gateway_url: str = DISCORD_GATEWAY_URL
    sync_guild: int | None = None
    shards: int | Literal["auto"] | None = None  # None: one gateway connection; "auto": as many as Discord says
    image_retention_days: float = 30.0
    progress_interval: float = 1.5

    @property
    def database(self) -> Path:
        return self.data_dir / "imagine.db"

    def __repr__(self) -> str:  # never print the token
        return f"Settings(data_dir={self.data_dir!s}, api_base={self.api_base!r}, engine={self.engine!r})"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        token = env.get("DISCORD_TOKEN", "").strip()
        if not token:
            raise ConfigError("DISCORD_TOKEN is not set: copy .env.example to .env and paste your bot token there.")
        try:
            engine = EngineSettings.from_env(env)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return cls(
            token=token,
            engine=engine,
            data_dir=Path(env.get("DATA_DIR") or "data"),
            api_base=(env.get("DISCORD_API_BASE") or DISCORD_API_BASE).rstrip("/"),
            gateway_url=env.get("DISCORD_GATEWAY_URL") or DISCORD_GATEWAY_URL,
            sync_guild=_number(env, "DISCORD_SYNC_GUILD", int),
            shards=_shards(env),
            image_retention_days=_number(env, "IMAGE_RETENTION_DAYS", float) or 30.0,
            progress_interval=_number(env, "PROGRESS_INTERVAL", float) or 1.5,
        )


def _number(env: Mapping[str, str], key: str, kind: type[int] | type[float]):
    raw = env.get(key, "").strip()
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{key} must be {noun}, got {raw!r}") from None


def _shards(env: Mapping[str, str]) -> int | Literal["auto"] | None:
    raw = env.get("DISCORD_SHARDS", "").strip().lower()
    if not raw:
        return None
    if raw == "auto":
        return "auto"
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"DISCORD_SHARDS must be auto or a whole number of shards (1 or more), got {raw!r}")
    return int(raw)


def load() -> Settings:
    """Read `.env` (if present) over the process environment, once."""
    load_dotenv()
    return Settings.from_env(os.environ)
