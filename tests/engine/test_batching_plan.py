"""Batch planning (engine/batching.py) on its own: which queued jobs share a call. Pure Python, no torch."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from engine.batching import MAX_SKIPS, WINDOW, Candidate, batch_key, plan, prefer_loaded, recipe_key

RECIPE = {"prompt": "a fox", "width": 512, "height": 512, "steps": 25, "guidance": 7.0, "seeds": [1, 2, 3, 4]}
KEY = recipe_key("imagine", RECIPE)


@pytest.mark.parametrize(("kind", "change"), [
    ("imagine", {"width": 640}),
    ("imagine", {"height": 384}),
    ("imagine", {"steps": 30}),
    ("imagine", {"guidance": 6.5}),
    ("imagine", {"guidance": 1.0}),  # guidance off
    ("imagine", {"seeds": [1, 2]}),  # images per job
    ("imagine", {"model": "other-model"}),
    ("imagine", {"scheduler": "DDIMScheduler"}),
    ("variation", {"strength": 0.35}),
])
def test_anything_that_shapes_the_call_changes_the_key(kind, change):
    """Size, steps, guidance (on/off and scale), images per job, model, scheduler, family and strength split keys."""
    assert recipe_key(kind, RECIPE | change) != KEY


def test_prompt_seeds_and_reroll_keep_the_key_upscales_and_batch_noise_schedulers_run_alone():
    """Prompts, negative prompts and seeds don't split keys, reroll is text-to-image; upscales, DPM-SDE and
    broken recipes have no key (they run alone)."""
    other_words = {"prompt": "an owl", "negative_prompt": "blurry", "seeds": [5, 6, 7, 8]}
    assert recipe_key("reroll", RECIPE | other_words) == KEY
    strong = RECIPE | {"strength": 0.7}
    assert recipe_key("variation", strong) == recipe_key("variation", strong | {"prompt": "x"}) != KEY
    assert recipe_key("upscale", RECIPE | {"seeds": [1], "strength": 0.3}) is None
    assert recipe_key("imagine", RECIPE | {"scheduler": "DPMSolverSDEScheduler"}) is None
    assert recipe_key("imagine", {"prompt": "no size"}) is None
    assert batch_key("imagine", width=64, height=64, steps=4, guidance=7, strength=None, images=4) == \
        recipe_key("imagine", {"width": 64, "height": 64, "steps": 4, "guidance": 7.0, "seeds": [9, 9, 9, 9]})


def test_head_first_then_one_job_per_member_in_queue_order_up_to_max_batch():
    """The head always runs; companions share its key, come in queue order, one per member, max_batch in all."""
    other = recipe_key("imagine", RECIPE | {"width": 640})
    queue = [Candidate(1, 10, KEY), Candidate(2, 10, KEY), Candidate(3, 20, other), Candidate(4, 30, KEY),
             Candidate(5, 30, KEY), Candidate(6, 40, KEY), Candidate(7, 50, KEY)]
    assert plan(queue, 4) == [1, 4, 6, 7]
    assert plan(queue, 3) == [1, 4, 6]
    assert plan(queue, 1) == [1]  # batching off
    assert plan(queue[2:], 4) == [3]  # nothing else with the head's key: it runs alone, no waiting
    assert plan([Candidate(8, 10, None), *queue], 4) == [8]  # a job without a key runs alone
    assert plan([], 4) == []


def test_companions_come_only_from_the_window():
    """A compatible job further back than WINDOW jobs after the head is not taken."""
    other = recipe_key("imagine", RECIPE | {"steps": 5})
    queue = [Candidate(0, 0, KEY)] + [Candidate(n, n, other) for n in range(1, WINDOW + 1)]
    assert plan(queue + [Candidate(99, 99, KEY)], 4) == [0]
    assert plan(queue[:-1] + [Candidate(99, 99, KEY)], 4) == [0, 99]


def test_the_planning_module_imports_no_torch():
    """engine.batching is pure: importing it loads neither torch nor diffusers (the store's side can use it)."""
    code = "import sys, engine.batching; print(any(m in sys.modules for m in ('torch', 'diffusers')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def waiting(*models: str, skipped: dict[int, int] | None = None) -> list[Candidate]:
    """A queue in fair order, one job per member, of the given models (ids 1, 2, ...)."""
    return [Candidate(n, 10 * n, recipe_key("imagine", RECIPE | {"model": model}), model=model,
                      skipped=(skipped or {}).get(n, 0)) for n, model in enumerate(models, start=1)]


def test_a_job_for_the_loaded_model_goes_first_within_the_window_and_the_rest_keep_their_order():
    """With the head's model not loaded, the first job of the window whose model is goes first; else nothing moves."""
    assert [c.id for c in prefer_loaded(waiting("xl", "xl", "sd15", "sd15"), ("sd15",))] == [3, 1, 2, 4]
    assert [c.id for c in prefer_loaded(waiting("sd15", "xl"), ("sd15",))] == [1, 2]  # the head's is loaded
    assert [c.id for c in prefer_loaded(waiting("xl", "turbo"), ("sd15",))] == [1, 2]  # none is
    far = waiting(*["xl"] * (WINDOW + 1), "sd15")
    assert prefer_loaded(far, ("sd15",)) == far  # beyond the window
    assert [c.id for c in prefer_loaded(far[1:], ("sd15",))][0] == WINDOW + 2
    ordered = prefer_loaded(waiting("xl", "sd15", "sd15"), ("sd15",))
    assert plan(ordered, 4) == [2, 3]  # the batch follows the new head: its companions share its model


def test_a_job_passed_over_max_skips_times_is_passed_over_no_more():
    """A job in front of the loaded model's job that has been passed over MAX_SKIPS times runs (the head runs)."""
    assert [c.id for c in prefer_loaded(waiting("xl", "xl", "sd15", skipped={2: MAX_SKIPS}), ("sd15",))] == [1, 2, 3]
    assert [c.id for c in prefer_loaded(waiting("xl", "sd15", skipped={1: MAX_SKIPS - 1}), ("sd15",))] == [2, 1]


@pytest.mark.parametrize("seed", range(20))
def test_over_a_whole_queue_the_preference_switches_less_and_never_passes_a_job_over_more_than_max_skips(seed):
    """Claiming a random queue of two models turn by turn (one model loaded: the last one run), every job runs, none
    is passed over more than MAX_SKIPS times, and there are no more model switches than in fair order."""
    rng = random.Random(seed)
    models = [rng.choice(("a", "b")) for _ in range(40)]

    def run(preferring: bool) -> tuple[list[int], int]:
        queue, loaded, skipped, order, switches = waiting(*models), "a", {}, [], 0
        while queue:
            queue = [Candidate(c.id, c.member, c.key, c.model, skipped.get(c.id, 0)) for c in queue]
            ordered = prefer_loaded(queue, (loaded,)) if preferring else queue
            head = ordered[0]
            for passed in queue[:queue.index(head)]:
                skipped[passed.id] = skipped.get(passed.id, 0) + 1
            switches += head.model != loaded
            loaded = head.model
            order.append(head.id)
            queue.remove(head)
        assert max(skipped.values(), default=0) <= MAX_SKIPS
        return order, switches

    fair, fair_switches = run(False)
    preferred, preferred_switches = run(True)
    assert sorted(preferred) == fair == list(range(1, 41))
    assert preferred_switches <= fair_switches
