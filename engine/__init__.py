"""The GPU side of imagine-bot: a small async API over a diffusers pipeline.

Importing this package does not import torch or diffusers; `Engine.start()` loads them in the worker thread.
"""

from engine import batching
from engine.engine import Engine
from engine.jobs import JobCancelled, JobFailed, JobLost, ModelDefaults, Progress, Request, Result
from engine.settings import EngineSettings

__all__ = [
    "Engine",
    "batching",
    "EngineSettings",
    "JobCancelled",
    "JobFailed",
    "JobLost",
    "ModelDefaults",
    "Progress",
    "Request",
    "Result",
]
