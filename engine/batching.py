"""Batch planning: which queued jobs may share one pipeline call. Pure Python: no torch, no SQL.

The store decides whose turn it is (the head of the fair queue always runs next) and calls `plan` inside the one
write transaction that claims the head and its companions; the engine only runs the batch it is given.

    key = recipe_key("imagine", {"width": 512, "height": 512, "steps": 25, "guidance": 7.0, "seeds": [1, 2, 3, 4]})
    ids = plan([Candidate(7, member=1, key=key), Candidate(8, member=1, key=key), Candidate(9, member=2, key=key)], 4)
    # -> [7, 9]: the head, then at most one job per member, in queue order
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

WINDOW = 12  # companions come from the next WINDOW queued jobs after the head, so none jumps far ahead

# Operation families that can share a call, by job kind. Upscales and outpaints (zoom, pan) always run alone:
# each has its own canvas and source, and one runs seldom enough that sharing a call would gain little.
FAMILIES = {"imagine": "text-to-image", "reroll": "text-to-image", "variation": "image-to-image"}

# Schedulers that draw one noise tensor (or one Brownian tree) for the whole batch: a job's images would depend on
# its companions, so with these every job runs alone.
ALONE_SCHEDULERS = frozenset({"DPMSolverSDEScheduler"})


def batch_key(kind: str, *, width: int, height: int, steps: int, guidance: float, strength: float | None,
              images: int, model: str = "", scheduler: str = "", loras: Sequence = ()) -> Hashable | None:
    """What shapes a pipeline call; jobs may share a call only if their keys are equal. None: the job runs alone.

    Classifier-free guidance on or off (guidance > 1) is part of the key as well as its scale: it doubles the batch.
    `model` is the configured model name; `loras` the (name, weight) pairs, whose order does not matter.
    """
    family = FAMILIES.get(kind)
    if family is None or scheduler in ALONE_SCHEDULERS:
        return None
    lora_set = tuple(sorted((str(name), float(weight)) for name, weight in loras))
    return (family, model, lora_set, scheduler, width, height, steps, guidance > 1.0, float(guidance),
            None if family == "text-to-image" else strength, images)


def recipe_key(kind: str, recipe: Mapping) -> Hashable | None:
    """The batch key of a queued job, from its stored recipe (model, LoRAs and scheduler when the recipe names them:
    the bot stores "model": "<name>" and "loras": [["name", 0.8], ...]; an old recipe has neither, and then means the
    default model and no LoRAs, so `model` "" groups it with the other old ones).

    An imagine or reroll with an image prompt runs image to image (the engine gets it as a variation of the picture).
    """
    if kind in ("imagine", "reroll") and recipe.get("image_prompt"):
        kind = "variation"
    try:
        return batch_key(
            kind, width=int(recipe["width"]), height=int(recipe["height"]), steps=int(recipe["steps"]),
            guidance=float(recipe["guidance"]), strength=recipe.get("strength"), images=len(recipe["seeds"]),
            model=recipe.get("model") or "", scheduler=recipe.get("scheduler", ""), loras=recipe.get("loras") or (),
        )
    except (KeyError, TypeError, ValueError):  # a recipe the engine will refuse anyway: let it fail alone
        return None


@dataclass(frozen=True)
class Candidate:
    """A queued job as the planner sees it: its id, its member and its batch key (None: runs alone)."""

    id: int
    member: int
    key: Hashable | None


def plan(queue: Sequence[Candidate], max_batch: int, window: int = WINDOW) -> list[int]:
    """The ids to run in one call: the head of the queue (queue[0]) first, then companions with its key, taken in
    queue order from the next `window` jobs, at most one per member, up to max_batch jobs in all.

    Never waits: with nothing compatible queued, the head runs alone. max_batch 1 turns batching off.
    """
    if not queue:
        return []
    head = queue[0]
    chosen = [head.id]
    if head.key is None or max_batch <= 1:
        return chosen
    members = {head.member}
    for job in queue[1:1 + window]:
        if len(chosen) >= max_batch:
            break
        if job.key == head.key and job.member not in members:
            chosen.append(job.id)
            members.add(job.member)
    return chosen
