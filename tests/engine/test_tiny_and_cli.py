"""The tiny model loads like a real one, is reproducible, and the CLI makes images with it."""

from __future__ import annotations

import io

from PIL import Image

from engine.__main__ import main
from engine.images import read_parameters
from engine.tiny import write_tiny_pipeline


def test_tiny_model_loads_through_auto_pipeline_and_is_reproducible(tiny_model, tmp_path):
    """AutoPipelineForText2Image loads the tiny folder as StableDiffusionPipeline; writing it again gives the same weights."""
    from diffusers import AutoPipelineForText2Image

    pipe = AutoPipelineForText2Image.from_pretrained(tiny_model)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.vae_scale_factor == 8 and pipe.tokenizer.model_max_length == 77
    assert (tiny_model / "tokenizer" / "vocab.json").exists() and (tiny_model / "tokenizer" / "merges.txt").exists()
    again = write_tiny_pipeline(tmp_path / "again")
    weights = "unet/diffusion_pytorch_model.safetensors"
    assert (again / weights).read_bytes() == (tiny_model / weights).read_bytes()


def test_cli_writes_grid_and_singles(tiny_model, tmp_path, monkeypatch, capsys):
    """`python -m engine PROMPT --grid --ar 3:2 --out X.png` writes a grid and four singles with their recipe."""
    monkeypatch.chdir(tmp_path)  # no .env here
    out = tmp_path / "fox.png"
    code = main(["a red fox", "--model", str(tiny_model), "--device", "cpu", "--steps", "2", "--ar", "3:2",
                 "--seed", "42", "--grid", "--out", str(out)])
    assert code == 0
    assert "seeds 42, 43, 44, 45" in capsys.readouterr().out
    single = (tmp_path / "fox-4.png").read_bytes()
    assert Image.open(io.BytesIO(out.read_bytes())).size == tuple(2 * s for s in Image.open(io.BytesIO(single)).size)
    assert "Seed: 45" in read_parameters(single)


def test_cli_bad_setting_is_one_line(tmp_path, monkeypatch, capsys):
    """A bad IMAGINE_* value in .env makes the CLI exit 2 with one readable line."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("IMAGINE_STEPS=lots\n")
    monkeypatch.delenv("IMAGINE_STEPS", raising=False)
    assert main(["a fox"]) == 2
    assert capsys.readouterr().err.strip() == "error: IMAGINE_STEPS must be a whole number, got 'lots'"
