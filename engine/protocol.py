"""What crosses between the bot and a Ray Serve replica (engine/serve.py): plain dataclasses, versioned with the code.

    bot -> replica   Call (the jobs of one call, as engine.Request)
    replica -> bot   Started, then Step* and one Done or Failed per job, as a stream

A replica refuses a Call of another VERSION with a sentence saying to upgrade both sides together.
No torch here: the bot host imports this without a GPU stack.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.jobs import ModelDefaults, Request, Result

# Raise with any change below; bot and replicas must run the same code. 2: Request gained zoom and pan (their
# kinds). 3: several models and LoRAs (Request.model/loras, About.models/loras/loaded, Step.loading, Done.loaded).
VERSION = 3


@dataclass(frozen=True)
class Call:
    jobs: tuple[tuple[int, Request], ...]  # (job id, request): one job, or a batch with one batch key
    version: int = VERSION


@dataclass(frozen=True)
class About:
    """A replica's answer to describe(): what the bot offers members, and how many jobs a call may take."""

    defaults: ModelDefaults  # the default model's
    device: str
    dtype: str
    max_batch: int
    fast_path: str | None = None  # what the opt-in fast-path settings did (Engine.fast_path)
    models: tuple[ModelDefaults, ...] = ()  # every configured model, the default first (Engine.models)
    loras: tuple[str, ...] = ()  # the LoRA names of IMAGINE_LORA_DIR (Engine.loras)
    loaded: tuple[str, ...] = ()  # the models on this replica's device, most recently used first
    version: int = VERSION


@dataclass(frozen=True)
class Started:
    pid: int  # the replica's process (logs, and tests that kill it)
    node: str


@dataclass(frozen=True)
class Step:
    job_id: int
    step: int
    total: int
    preview: bytes | None
    loading: str | None = None  # Progress.loading: the job waits for this model to load


@dataclass(frozen=True)
class Done:
    job_id: int
    result: Result  # the job's PNG bytes (and grid), with their recipes
    loaded: tuple[str, ...] = ()  # the models on the replica's device after this call, most recently used first


@dataclass(frozen=True)
class Failed:
    job_id: int
    message: str  # a sentence for the member (engine.JobFailed), e.g. today's out-of-memory message
    cancelled: bool = False
