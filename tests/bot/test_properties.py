"""Property-based: whatever members type, the parser, the button ids and the limits give a result or a sentence."""

from __future__ import annotations

import asyncio
import math
import re
import unicodedata

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.views import ACTIONS, JobButton
from bot.errors import InvalidLimit
from bot.image_prompt import MAX_SIDE, own_aspect
from bot.parsing import ASPECT_CHOICES, MAX_GUIDANCE, MAX_PROMPT, MAX_SEED, BadInput, parse_imagine
from bot.store import LIMIT_KEYS, LIMIT_RANGES, Limits, _parse_limit
from engine.jobs import ModelDefaults

SD15 = ModelDefaults(steps=25, guidance=7.0, size=512, model="sd15", scheduler="PNDMScheduler")
QUICK = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces members really type, and the ones that break parsers: zero-width and bidi marks, combining marks, emoji,
# NUL, markdown, mentions, flags with garbage, numbers Python reads in surprising ways.
PIECES = st.sampled_from([
    "\u200b", "\u200d", "\u200f", "\u202e", "\u0301", "e\u0301", "\x00", "\x1b[31m", "\r\n", "\t", "🦊", "👩‍👩‍👧",
    "**", "__", "~~", "`", "```", "> ", "# ", "-# ", "||", "<@123>", "<@!123>", "<@&456>", "@everyone", "@here",
    "--", "---", "--ar", "--AR", "--seed", "--no", "--steps", "--guidance", "--cfg", "--iw", "--chaos", "--ar--seed",
    "16:9", "9:21", "0:0", "1000:1", "١٦:٩", "1e400", "nan", "-inf", "inf", "-1", "1_000", "0x10", "٣", "１２",
    "99999999999999999999999", "9" * 5000, "4294967295", "4294967296", ":", "a fox", "",
])
TEXT = st.lists(st.one_of(PIECES, st.text(max_size=12)), max_size=30).map(" ".join) | st.text(max_size=1500)
NUMBERS = st.none() | st.integers() | st.integers(-(2**70), 2**70) | st.floats() | st.sampled_from(
    [math.nan, math.inf, -math.inf, -0.0, 1e308, True])


def is_sentence(text: str) -> bool:
    """A finished sentence a member can read: short enough for Discord, no control characters, ends in a period."""
    return (0 < len(text) <= 500 and text.rstrip().endswith((".", ".)"))
            and not any(unicodedata.category(c) == "Cc" for c in text))


@QUICK
@given(text=TEXT | st.text(min_size=1400, max_size=1500), negative=st.none() | TEXT,
       aspect=st.none() | st.sampled_from(ASPECT_CHOICES) | st.text(max_size=20) | PIECES,
       seed=NUMBERS, steps=NUMBERS, guidance=NUMBERS,
       picture=st.none() | st.tuples(st.integers(1, MAX_SIDE), st.integers(1, MAX_SIDE)))
def test_any_imagine_input_gives_a_valid_recipe_or_a_bad_input_sentence(text, negative, aspect, seed, steps,
                                                                        guidance, picture):
    """Any prompt text, options and image prompt size resolve to an in-range recipe, or to BadInput with a sentence."""
    try:
        recipe = parse_imagine(text, SD15, negative=negative, aspect=aspect, seed=seed, steps=steps,
                               guidance=guidance, image_aspect=None if picture is None else own_aspect(picture))
    except BadInput as error:
        assert is_sentence(str(error)), repr(str(error))
        return
    assert 0 < len(recipe.prompt) <= MAX_PROMPT and recipe.prompt == recipe.prompt.strip()
    assert any(unicodedata.category(c)[0] in "LNPS" for c in recipe.prompt)  # something visible to draw
    assert not any(unicodedata.category(c) == "Cc" for c in recipe.prompt + recipe.negative_prompt)
    assert len(recipe.negative_prompt) <= 1000
    assert recipe.width % 8 == 0 and recipe.height % 8 == 0 and 64 <= min(recipe.width, recipe.height)
    assert max(recipe.width, recipe.height) / min(recipe.width, recipe.height) <= 3.2
    assert re.fullmatch(r"\d{1,3}:\d{1,3}", recipe.aspect)
    assert type(recipe.steps) is int and 1 <= recipe.steps <= 150
    assert type(recipe.guidance) is float and 0 <= recipe.guidance <= MAX_GUIDANCE
    assert len(recipe.seeds) == 4 and all(type(s) is int and 0 <= s <= MAX_SEED for s in recipe.seeds)
    if picture is None:
        assert recipe.image_weight is None and "strength" not in recipe.to_dict()
    else:
        assert 0 <= recipe.image_weight <= 3 and 0.3 <= recipe.strength <= 0.9


CUSTOM_IDS = st.text(max_size=120) | st.builds(
    "imagine:{}:{}:{}".format,
    st.sampled_from([*ACTIONS, "", "U", "xx", "u "]),
    st.integers(-5, 10**25) | st.text("0123456789", max_size=30) | PIECES,
    st.integers(-2, 12) | PIECES,
)


@QUICK
@given(custom_id=CUSTOM_IDS)
def test_any_custom_id_is_either_not_ours_or_names_a_storable_job(custom_id):
    """A custom_id the template matches becomes a button with a job id SQLite can look up, and round-trips."""
    match = JobButton.__discord_ui_compiled_template__.fullmatch(custom_id)
    if match is None:
        return
    button = asyncio.run(JobButton.from_custom_id(None, None, match))
    assert 0 < button.job_id < 2**63 and button.action in ACTIONS and 0 <= button.index <= 4
    assert button.item.custom_id == custom_id


@given(action=st.sampled_from(list(ACTIONS)), job=st.integers(1, 10**18 - 1), index=st.integers(0, 4))
def test_every_button_the_bot_makes_matches_its_own_template(action, job, index):
    """Buttons the bot posts carry ids of at most 100 characters that its DynamicItem recognises."""
    custom_id = JobButton(action, job, index).item.custom_id
    assert len(custom_id) <= 100
    assert JobButton.__discord_ui_compiled_template__.fullmatch(custom_id)


LIMIT_VALUES = NUMBERS | st.booleans() | TEXT | st.sampled_from(
    ["1e3", " 5 ", "１２", "yes", "OFF", "True", "0x10", "-0", "5.0", "1_0", "", " "])


@QUICK
@given(key=st.sampled_from(LIMIT_KEYS) | st.text(max_size=30), value=LIMIT_VALUES)
def test_any_limit_value_is_stored_typed_or_refused_with_a_sentence(key, value):
    """A moderator's value for any key is either the limit's own type, in range, or InvalidLimit with a sentence."""
    try:
        typed = _parse_limit(key, value)
    except InvalidLimit as error:
        assert is_sentence(str(error)), repr(str(error))
        return
    assert key in LIMIT_KEYS
    if isinstance(getattr(Limits(), key), bool):
        assert type(typed) is bool
    else:
        low, high = LIMIT_RANGES[key]
        assert type(typed) is int and low <= typed <= high
