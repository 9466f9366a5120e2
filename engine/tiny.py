"""A tiny, randomly initialised Stable Diffusion pipeline for tests and benchmarks.

Nothing is downloaded: every part is built here from a config and saved with `save_pretrained`, so the folder loads
through `AutoPipelineForText2Image.from_pretrained(folder)` exactly like a real model. It draws noise-coloured
pictures, not foxes, but it runs the same code paths (text encoder, UNet, scheduler, VAE with vae_scale_factor 8,
optional safety checker) in a few seconds on a laptop CPU.

    python -m engine.tiny OUT_DIR [--safety-checker] [--flag-everything] [--inpaint] [--seed N]

`--inpaint` (inpaint=True) writes a StableDiffusionInpaintPipeline instead, whose UNet takes 9 channels (latents,
mask, masked image) like stable-diffusion-inpainting, for IMAGINE_INPAINT_MODEL.

`write_tiny_preview_model` writes a tiny TAESD-shaped AutoencoderTiny for IMAGINE_PREVIEW_MODEL, `write_tiny_vae`
a second tiny AutoencoderKL for IMAGINE_VAE_MODEL, and `write_tiny_lora` a LoRA .safetensors for IMAGINE_LORA_DIR.
`write_tiny_pipeline(path, seed=1)` is a second model with other weights (IMAGINE_MODELS).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    EulerDiscreteScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
)

SEED = 0
# Native side of the tiny model: unet.sample_size (8) * vae_scale_factor (8) = 64 px, so defaults stay fast.
UNET_SAMPLE_SIZE = 8
MAX_TOKENS = 77  # the same text window as real CLIP, so prompt truncation behaves as in SD 1.5


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte-level alphabet: every byte maps to one printable unicode character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def _write_tokenizer_files(folder: Path) -> None:
    """A byte-level vocabulary with no merges: every character is one token (a prompt of N letters is ~N tokens)."""
    alphabet = list(_bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    for ch in alphabet:
        vocab[ch + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def write_tiny_pipeline(path: str | Path, *, safety_checker: bool = False, flag_everything: bool = False,
                        inpaint: bool = False, seed: int = SEED) -> Path:
    """Write a tiny StableDiffusionPipeline to `path` and return the folder.

    safety_checker=True adds a tiny StableDiffusionSafetyChecker and CLIPImageProcessor, like SD 1.5 ships;
    flag_everything=True sets the checker's thresholds so that every image is flagged (to test blurring).
    inpaint=True writes a StableDiffusionInpaintPipeline with a 9-channel UNet (4 latent + 1 mask + 4 masked image).
    Another `seed` gives another model: the same shapes with other random weights (for several models).
    """
    if flag_everything and not safety_checker:
        raise ValueError("flag_everything=True needs safety_checker=True")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    # 1. Denoiser: two resolution levels, 32 and 64 channels; an inpainting UNet also sees the mask and masked image.
    unet = _tiny_unet(in_channels=9 if inpaint else 4)

    # 2. VAE with four blocks, so vae_scale_factor = 2 ** (4 - 1) = 8 as in real SD; its sample_size is also the
    #    tile size when VAE tiling is on.
    vae = _tiny_vae()

    # 3. Text encoder and a byte-level tokenizer written on the spot.
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=2 + 2 * 256,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            projection_dim=32,
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        _write_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=MAX_TOKENS)

    # 4. Scheduler, as SD 1.5 is commonly run.
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        steps_offset=1, timestep_spacing="leading",
    )

    # 5. Optional safety checker: a tiny CLIP vision tower with concept embeddings and thresholds.
    checker = feature_extractor = None
    if safety_checker:
        clip_config = CLIPConfig(
            text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 4},
            vision_config={
                "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 4,
                "image_size": 32, "patch_size": 8,
            },
            projection_dim=32,
        )
        checker = StableDiffusionSafetyChecker(clip_config).eval()
        # A concept fires when cosine(image, concept) - threshold > 0; cosines live in [-1, 1].
        threshold = -2.0 if flag_everything else 2.0
        with torch.no_grad():
            checker.concept_embeds.normal_()
            checker.special_care_embeds.normal_()
            checker.concept_embeds_weights.fill_(threshold)
            checker.special_care_embeds_weights.fill_(threshold)
        feature_extractor = CLIPImageProcessorPil(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
            image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
        )

    pipeline_class = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    pipe = pipeline_class(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=checker,
        feature_extractor=feature_extractor,
        requires_safety_checker=safety_checker,
    )
    pipe.save_pretrained(path)
    # Ship the tokenizer as SD 1.5 does: vocab.json + merges.txt (tokenizers' tokenizer.json is rebuilt from them).
    (path / "tokenizer" / "tokenizer.json").unlink(missing_ok=True)
    _write_tokenizer_files(path / "tokenizer")
    return path


def _tiny_unet(block_out_channels: tuple[int, int] = (32, 64), in_channels: int = 4) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        block_out_channels=block_out_channels,
        layers_per_block=1,
        sample_size=UNET_SAMPLE_SIZE,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def write_tiny_lora(path: str | Path, *, seed: int = 1, rank: int = 4, mismatched: bool = False) -> Path:
    """Write a LoRA for the tiny UNet as a .safetensors file (diffusers' format, as Kohya-trained LoRAs load), and
    return the file: `path` itself, its file stem the LoRA's name (e.g. "ink.safetensors" for IMAGINE_LORA_DIR).

    It is made with peft as training would (LoRA layers on the attention projections, here with random weights,
    so it visibly changes the pictures) and saved with StableDiffusionPipeline.save_lora_weights. mismatched=True
    writes one for a wider UNet of the same layout: the same layer names with other shapes, as a LoRA made for
    another model looks, which must fail to load.
    """
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"a LoRA file's name ends in .safetensors, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    unet = _tiny_unet((64, 128) if mismatched else (32, 64))
    # init_lora_weights=False: random A and B (trained LoRAs are not zero, a fresh one would be).
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    StableDiffusionPipeline.save_lora_weights(path.parent, unet_lora_layers=get_peft_model_state_dict(unet),
                                              weight_name=path.name)
    return path


def _tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        norm_num_groups=8,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        sample_size=64,
    )


def write_tiny_vae(path: str | Path, *, seed: int = 1) -> Path:
    """Write another tiny AutoencoderKL that fits the tiny pipeline (same latents), with other random weights."""
    path = Path(path)
    torch.manual_seed(seed)
    _tiny_vae().save_pretrained(path)
    return path


def write_tiny_preview_model(path: str | Path, *, colour: tuple[int, int, int] | None = None) -> Path:
    """Write a tiny TAESD-shaped AutoencoderTiny (4 latent channels, 8x upsampling) to `path`.

    colour=(r, g, b) makes its decoder paint every latent that colour, so a test can tell its previews apart.
    """
    path = Path(path)
    torch.manual_seed(SEED)
    model = AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    )
    if colour is not None:
        last = model.decoder.layers[-1]  # the output convolution; the decoder maps its [0, 1] output to [-1, 1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.copy_(torch.tensor(colour, dtype=torch.float32) / 255)
    model.save_pretrained(path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m engine.tiny", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--safety-checker", action="store_true", help="include a tiny safety checker")
    parser.add_argument("--flag-everything", action="store_true", help="the checker flags every image")
    parser.add_argument("--inpaint", action="store_true", help="an inpainting pipeline (9-channel UNet)")
    parser.add_argument("--seed", type=int, default=SEED, help="another seed writes a model with other weights")
    args = parser.parse_args(argv)
    folder = write_tiny_pipeline(args.out_dir, safety_checker=args.safety_checker or args.flag_everything,
                                 flag_everything=args.flag_everything, inpaint=args.inpaint, seed=args.seed)
    print(folder)


if __name__ == "__main__":
    main()
