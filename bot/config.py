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


BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class RaySettings:
    """IMAGINE_BACKEND=ray: where the cluster is and what the bot deploys on it (engine/serve.py)."""

    address: str | None = None  # RAY_ADDRESS, Ray's own variable (unset: the cluster `ray start` runs on this host)
    replicas: int = 1  # IMAGINE_RAY_REPLICAS: one per GPU
    gpus: float = 1.0  # IMAGINE_RAY_GPUS: GPUs per replica (0: CPU replicas of one CPU each)
    torch_threads: int | None = None  # IMAGINE_RAY_TORCH_THREADS: torch threads per replica (CPU replicas)
    shutdown_timeout: float = 900.0  # IMAGINE_RAY_SHUTDOWN_TIMEOUT: seconds a redeploy waits for a running job

    def __post_init__(self) -> None:
        if not 1 <= self.replicas <= 256:
            raise ConfigError(f"IMAGINE_RAY_REPLICAS must be from 1 to 256, got {self.replicas}")
        if self.gpus < 0:
            raise ConfigError(f"IMAGINE_RAY_GPUS must be 0 (CPU replicas) or more, got {self.gpus:g}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError(f"IMAGINE_RAY_TORCH_THREADS must be 1 or more, got {self.torch_threads}")
        if self.shutdown_timeout <= 0:
            raise ConfigError(f"IMAGINE_RAY_SHUTDOWN_TIMEOUT must be more than 0 s, got {self.shutdown_timeout:g}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RaySettings:
        values = {
            "replicas": _number(env, "IMAGINE_RAY_REPLICAS", int),
            "gpus": _number(env, "IMAGINE_RAY_GPUS", float),
            "torch_threads": _number(env, "IMAGINE_RAY_TORCH_THREADS", int),
            "shutdown_timeout": _number(env, "IMAGINE_RAY_SHUTDOWN_TIMEOUT", float),
        }
        return cls(address=env.get("RAY_ADDRESS", "").strip() or None,
                   **{key: value for key, value in values.items() if value is not None})


@dataclass(frozen=True)
class Settings:
    token: str
    engine: EngineSettings
    backend: str = "local"
    ray: RaySettings = RaySettings()
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
        return (f"Settings(data_dir={self.data_dir!s}, api_base={self.api_base!r}, engine={self.engine!r}, "
                f"backend={self.backend!r})")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        token = env.get("DISCORD_TOKEN", "").strip()
        if not token:
            raise ConfigError("DISCORD_TOKEN is not set: copy .env.example to .env and paste your bot token there.")
        try:
            engine = EngineSettings.from_env(env)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        backend = env.get("IMAGINE_BACKEND", "").strip().lower() or "local"
        if backend not in BACKENDS:
            raise ConfigError(f"IMAGINE_BACKEND must be local or ray, got {backend!r}")
        return cls(
            token=token,
            engine=engine,
            backend=backend,
            ray=RaySettings.from_env(env),
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
