"""Loading weights by hub id or local folder, with the one readable error a server owner sees when a setting names
something that isn't there or isn't what it should be.

    vae = from_pretrained(AutoencoderKL, name, setting=f"IMAGINE_VAE_MODEL={name!r}",
                          kind="of a diffusers AutoencoderKL", dtype=dtype)
"""

from __future__ import annotations

from typing import Any


def not_loadable(setting: str, kind: str, error: BaseException) -> RuntimeError:
    """"could not load IMAGINE_VAE_MODEL='x': it must be a Hugging Face hub id or a local folder of a diffusers
    AutoencoderKL (OSError: ...)": what was set, what it must be, and the first line of why it failed."""
    reason = (str(error).splitlines() or [""])[0]
    return RuntimeError(f"could not load {setting}: it must be a Hugging Face hub id or a local folder {kind} "
                        f"({type(error).__name__}: {reason})")


def from_pretrained(loader: Any, source: str, *, setting: str, kind: str, **kwargs: Any) -> Any:
    """`loader.from_pretrained(source, **kwargs)`; a missing or unreadable model raises not_loadable's error."""
    try:
        return loader.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:  # EnvironmentError is OSError
        raise not_loadable(setting, kind, e) from e
