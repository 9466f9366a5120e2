"""Settings from the environment and request validation: errors that say what to change."""

from __future__ import annotations

import pytest

from engine import EngineSettings, Request
from engine.jobs import ASPECT_CHOICES, size_for_aspect


def test_settings_from_env_reads_typed_values():
    """IMAGINE_* keys become typed settings; missing or empty keys keep their defaults."""
    settings = EngineSettings.from_env({
        "IMAGINE_MODEL": "/models/sd15", "IMAGINE_DEVICE": "CPU", "IMAGINE_STEPS": "12", "IMAGINE_GUIDANCE": "5.5",
        "IMAGINE_CPU_OFFLOAD": "yes", "IMAGINE_SAFETY_CHECKER": "false", "IMAGINE_SIZE": "", "UNRELATED": "x",
        "IMAGINE_MAX_BATCH": "3",
    })
    assert settings == EngineSettings(model="/models/sd15", device="cpu", steps=12, guidance=5.5, cpu_offload=True,
                                      safety_checker=False, max_batch=3)


def test_models_are_named_pairs_in_order_or_the_one_model_named_after_its_source(tmp_path):
    """IMAGINE_MODELS gives (name, source) pairs in order, names lowercased, the first the default; without it the
    one IMAGINE_MODEL is named after the last part of its source; IMAGINE_LORA_DIR's .safetensors stems are the
    LoRAs, sorted."""
    settings = EngineSettings.from_env({"IMAGINE_MODELS": "SD15=stable-diffusion-v1-5/stable-diffusion-v1-5, "
                                        "turbo = stabilityai/sd-turbo", "IMAGINE_MAX_LOADED_MODELS": "2"})
    assert settings.model_sources() == (("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
                                        ("turbo", "stabilityai/sd-turbo"))
    assert settings.max_loaded_models == 2 and EngineSettings().max_loaded_models == 1
    assert EngineSettings(model="stabilityai/sd-turbo").model_sources() == (("sd-turbo", "stabilityai/sd-turbo"),)
    assert EngineSettings(model="/models/My Model v2/").model_sources() == (("my-model-v2", "/models/My Model v2/"),)
    for name in ("zest", "ink", "grain"):
        (tmp_path / f"{name}.safetensors").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a LoRA")
    assert EngineSettings(lora_dir=str(tmp_path)).lora_names() == ("grain", "ink", "zest")
    assert EngineSettings().lora_names() == ()
    with pytest.raises(ValueError, match="lora_dir must be a folder of LoRA .safetensors files"):
        EngineSettings(lora_dir=str(tmp_path / "missing")).lora_names()


def test_compile_warm_up_aspects_default_to_the_offered_ones():
    """IMAGINE_COMPILE_ASPECTS narrows the warm-up to the aspects listed; unset, it is every aspect the bot offers."""
    assert EngineSettings.from_env({"IMAGINE_COMPILE_ASPECTS": " 1:1, 16:9"}).warm_up_aspects() == ("1:1", "16:9")
    assert EngineSettings().warm_up_aspects() == ASPECT_CHOICES


@pytest.mark.parametrize(("env", "message"), [
    ({"IMAGINE_STEPS": "abc"}, "IMAGINE_STEPS must be a whole number, got 'abc'"),
    ({"IMAGINE_CPU_OFFLOAD": "maybe"}, "IMAGINE_CPU_OFFLOAD must be true or false, got 'maybe'"),
    ({"IMAGINE_DEVICE": "tpu"}, "IMAGINE_DEVICE must be one of auto, cuda, mps, cpu, got 'tpu'"),
    ({"IMAGINE_UPSCALE_STRENGTH": "2"}, "IMAGINE_UPSCALE_STRENGTH must be in (0, 1], got 2.0"),
    ({"IMAGINE_MAX_BATCH": "0"}, "IMAGINE_MAX_BATCH must be from 1 (no batching) to 16 jobs per call, got 0"),
    ({"IMAGINE_COMPILE": "true", "IMAGINE_CPU_OFFLOAD": "true"},
     "IMAGINE_COMPILE cannot be used with CPU offload: offload moves the weights between devices on every call, "
     "which compiled code cannot follow; turn one of them off"),
    ({"IMAGINE_COMPILE_ASPECTS": "1:1, wide"}, "IMAGINE_COMPILE_ASPECTS must be aspect ratios separated by commas, "
     "e.g. 1:1,2:3,16:9 (aspect ratio must look like 16:9 (two whole numbers), got 'wide')"),
    ({"IMAGINE_MODELS": "sd15"}, "IMAGINE_MODELS must be name=source pairs separated by commas, e.g. "
     "sd15=stable-diffusion-v1-5/stable-diffusion-v1-5,turbo=stabilityai/sd-turbo; got 'sd15'"),
    ({"IMAGINE_MODELS": "a=/m/a, A=/m/b"}, "IMAGINE_MODELS: the name a is given twice"),
    ({"IMAGINE_MODELS": "turbo= "}, "IMAGINE_MODELS: turbo has no source (a hub id or a local folder after 'turbo=')"),
    ({"IMAGINE_MODELS": "my model=/m/a"}, "IMAGINE_MODELS: 'my model' is not a usable name: a name is 1 to 32 "
     "lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"),
    ({"IMAGINE_MAX_LOADED_MODELS": "0"}, "IMAGINE_MAX_LOADED_MODELS must be at least 1, got 0"),
])
def test_settings_from_env_bad_value_is_one_readable_line(env, message):
    """A bad IMAGINE_* value raises ValueError naming the key, what it must be, and what it got."""
    with pytest.raises(ValueError) as info:
        EngineSettings.from_env(env)
    assert str(info.value) == message


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "imagine", "width": 500, "seeds": (1,)}, "width must be a multiple of 8 and at least 64, got 500"),
    ({"kind": "imagine", "seeds": ()}, "imagine needs 1 to 4 seeds, got 0"),
    ({"kind": "upscale", "seeds": (1, 2)}, "upscale needs 1 seed, got 2"),
    ({"kind": "variation", "seeds": (1,), "strength": 0.5}, "variation needs init_image"),
    ({"kind": "variation", "seeds": (1,), "init_image": b"png"}, "variation needs strength"),
    ({"kind": "imagine", "seeds": (-1,)}, "seeds must be whole numbers from 0 to 2\\*\\*63-1, got -1"),
    ({"kind": "paint", "seeds": (1,)},
     "kind must be one of imagine, reroll, variation, upscale, zoom, pan, got 'paint'"),
    ({"kind": "zoom", "seeds": (1,), "init_image": b"png", "zoom": 2.5}, "zoom must be greater than 1 and at most 2"),
    ({"kind": "zoom", "seeds": (1,), "init_image": b"png", "zoom": 1.0}, "zoom must be greater than 1 .*got 1.0"),
    ({"kind": "zoom", "seeds": (1,), "init_image": b"png"}, "zoom must be greater than 1 .*got None"),
    ({"kind": "pan", "seeds": (1,), "init_image": b"png", "pan": "sideways"},
     "pan must be one of left, right, up, down, got 'sideways'"),
    ({"kind": "pan", "seeds": (1,), "pan": "left"}, "pan needs init_image"),
    ({"kind": "imagine", "seeds": (1,), "zoom": 2.0}, "only a zoom job takes zoom, not imagine"),
    ({"kind": "imagine", "seeds": (1,), "loras": (("a", 1), ("b", 1), ("c", 1), ("d", 1))},
     "a job takes at most 3 LoRAs, got 4"),
    ({"kind": "imagine", "seeds": (1,), "loras": (("ink", 2.5),)}, "LoRA ink's weight must be from -2 to 2, got 2.5"),
    ({"kind": "imagine", "seeds": (1,), "loras": (("ink", 1), ("ink", 0.5))}, "a LoRA is named twice: ink, ink"),
])
def test_request_validation_teaches(kwargs, message):
    """Building an invalid Request raises ValueError with a sentence that says what is wrong."""
    with pytest.raises(ValueError, match=message):
        Request(prompt="a fox", **kwargs)


def test_size_for_aspect_keeps_area_and_multiples_of_8():
    """size_for_aspect keeps about native^2 pixels in multiples of 8, and rejects nonsense ratios."""
    assert size_for_aspect(512, "1:1") == (512, 512)
    width, height = size_for_aspect(512, "16:9")
    assert (width % 8, height % 8) == (0, 0) and width > height
    assert abs(width * height - 512 * 512) / (512 * 512) < 0.05
    with pytest.raises(ValueError, match="must look like 16:9"):
        size_for_aspect(512, "wide")


def test_a_requests_loras_from_a_stored_recipe_become_name_weight_tuples():
    """LoRAs read back from a JSON recipe (lists) become hashable (name, weight) tuples; "" is the default model."""
    request = Request("imagine", "a fox", seeds=(1,), loras=[["ink", 0.8], ["grain", -1]])
    assert request.loras == (("ink", 0.8), ("grain", -1)) and request.model == ""
    assert hash(request.loras)
