"""Live previews: what a job looks like between two denoising steps, as a small JPEG.

Two ways from latents to pixels, chosen once at start-up:

- `LinearPreview` (the default): a fixed latent->RGB matrix, as ComfyUI and A1111 use. About 1 ms, no model, but
  one pixel per latent: 64x64 for a 512x512 image, so previews look soft.
- `TinyAutoencoderPreview` (IMAGINE_PREVIEW_MODEL): a tiny autoencoder's decoder, e.g. TAESD (diffusers
  `AutoencoderTiny`; madebyollin/taesd for SD 1.x/2.x, madebyollin/taesdxl for SDXL). Full resolution and close to
  the final colours, for a few ms on a GPU and about 10 MB of weights.

Both take the latents of ONE job (1 to 4 images) and return a JPEG of at most PREVIEW_SIDE px: the 2x2 grid for four
images, the picture itself for one.
"""

from __future__ import annotations

import io

import torch
from diffusers import AutoencoderTiny, DiffusionPipeline
from PIL import Image

from engine import images as imgs
from engine.loading import from_pretrained
from engine.settings import EngineSettings

PREVIEW_SIDE = 256

# Latent (4 channels) -> RGB linear approximations, as used for live previews by ComfyUI and A1111.
_LATENT_RGB_SD = torch.tensor(
    [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]]
)
_LATENT_RGB_SDXL = torch.tensor(
    [[0.3920, 0.4054, 0.4549], [-0.2634, -0.0196, 0.0653], [0.0568, 0.1687, -0.0755], [-0.3112, -0.2359, -0.2076]]
)


class LinearPreview:
    """Latents through a fixed latent->RGB matrix (no VAE decode, ~1 ms)."""

    name = "linear latent->RGB map"

    def __init__(self, latent_rgb: torch.Tensor) -> None:
        self.latent_rgb = latent_rgb

    @classmethod
    def for_pipeline(cls, pipe: DiffusionPipeline) -> "LinearPreview":
        return cls(_LATENT_RGB_SDXL if "XL" in type(pipe).__name__ else _LATENT_RGB_SD)

    def __call__(self, latents: torch.Tensor) -> bytes:
        with torch.no_grad():
            latents = latents.detach().float().cpu()
            if latents.shape[1] == 4:
                rgb = torch.einsum("bchw,cr->brhw", latents, self.latent_rgb)
            else:  # other latent spaces: the first three channels, standardised
                rgb = latents[:, :3]
                rgb = (rgb - rgb.mean()) / (rgb.std() + 1e-6) / 2
        return _jpeg_of(rgb)


class TinyAutoencoderPreview:
    """Latents through a tiny autoencoder's decoder (TAESD): sharp, full-resolution previews."""

    def __init__(self, model: AutoencoderTiny, name: str) -> None:
        self.model = model
        self.name = name

    @classmethod
    def load(cls, name: str, pipe: DiffusionPipeline, device: str, dtype: torch.dtype) -> "TinyAutoencoderPreview":
        """Load IMAGINE_PREVIEW_MODEL; one readable error if it is missing or does not fit the model's latents."""
        model = from_pretrained(AutoencoderTiny, name, setting=f"IMAGINE_PREVIEW_MODEL={name!r}", dtype=dtype,
                                kind="of a diffusers AutoencoderTiny, e.g. madebyollin/taesd (SD 1.x/2.x) or "
                                     "madebyollin/taesdxl (SDXL)")
        wanted = getattr(getattr(pipe, "vae", None), "config", None)
        wanted = getattr(wanted, "latent_channels", model.config.latent_channels)
        if model.config.latent_channels != wanted:
            raise RuntimeError(
                f"IMAGINE_PREVIEW_MODEL={name!r} decodes {model.config.latent_channels}-channel latents, but this "
                f"model makes {wanted}-channel ones; use the tiny autoencoder made for this model family"
            )
        model.to(device).eval().requires_grad_(False)
        return cls(model, name)

    def __call__(self, latents: torch.Tensor) -> bytes:
        with torch.no_grad():
            parameter = next(self.model.parameters())
            latents = latents.detach().to(parameter.device, parameter.dtype)
            rgb = self.model.decode(latents / self.model.config.scaling_factor, return_dict=False)[0]
        return _jpeg_of(rgb.float().cpu())


def load(settings: EngineSettings, pipe: DiffusionPipeline, device: str,
         dtype: torch.dtype) -> LinearPreview | TinyAutoencoderPreview:
    """The previewer the settings ask for: the tiny autoencoder of IMAGINE_PREVIEW_MODEL, else the linear map."""
    if settings.preview_model:
        return TinyAutoencoderPreview.load(settings.preview_model, pipe, device, dtype)
    return LinearPreview.for_pipeline(pipe)


def _jpeg_of(rgb: torch.Tensor) -> bytes:
    """RGB in [-1, 1], shape (images, 3, h, w) -> a JPEG grid (4 images) or picture, at most PREVIEW_SIDE px."""
    pixels = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    tiles = [Image.fromarray(p) for p in pixels]
    picture = imgs.make_grid(tiles) if len(tiles) == 4 else tiles[0]
    scale = PREVIEW_SIDE / max(picture.size)
    picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                             Image.Resampling.BILINEAR)
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=80)
    return out.getvalue()
