"""Edge-server (ES) generation: load a text-to-image LDM and turn prompts into latents z.

Paper Algorithm 1, steps 3-5: prompt s -> CLIP embedding (eq. 9) -> U-Net DDIM sampling (eq. 25)
-> latent z (4 x H/f_d x W/f_d). The UE side turns a (received) latent back into an image with the
VAE decoder, :func:`decode_latents` (eq. 5).

Latents are the U-Net outputs, i.e. what ``StableDiffusionPipeline(..., output_type="latent")``
returns (before ``1 / vae.config.scaling_factor``); decoding divides by the scaling factor. The
down-sampling factor f_d is read from the VAE config, never assumed to be 8.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
from diffusers.utils import logging as dlog
from transformers.utils import logging as tlog

from meg_lightning.config import GenerationConfig, MegConfig
from meg_lightning.errors import ConfigError, MissingWeightsError
from meg_lightning.generation.sd15 import ensure_sd15_random
from meg_lightning.generation.tiny import build_tiny_pipeline

#: the folder of the shipped ``mini`` pipeline (trained by ``meg train-mini``: meg_lightning.mini)
MINI_PIPELINE_DIR = Path(__file__).resolve().parents[1] / "mini" / "weights" / "pipeline"

DEFAULT_HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def seed_for(base_seed: int, index: int) -> int:
    """The per-sample seed of cache entry ``index``: any sample can be regenerated alone."""
    digest = hashlib.sha256(f"meg-latent:{base_seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError("generation.device", name, "auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("generation.device", name, "a device that exists (no CUDA GPU here)")
    return dev


def model_id(model: str) -> str:
    """The diffusers id or folder that ``model`` names (``paper`` -> the SD-v1.5 hub id)."""
    return DEFAULT_HUB_ID if model == "paper" else model


def _missing_weights(model: str, why: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"cannot load model {model!r} ({why}). Provide the weights in one of three ways: "
        f"(1) with network access, log in to Hugging Face and run once with model={DEFAULT_HUB_ID} "
        f"(they are then cached; set HF_HUB_OFFLINE=1 to reuse the cache offline); "
        f"(2) model=/path/to/a/local/diffusers/folder (e.g. from `huggingface-cli download "
        f"{DEFAULT_HUB_ID}`); (3) offline without weights, use model=mini (a small trained "
        "model shipped with the package, `make demo`) or model=tiny (random weights).")


@contextmanager
def _no_loading_bars() -> Iterator[None]:
    """No progress bars while a pipeline loads (diffusers' "Loading pipeline components" and
    transformers' "Loading weights", nested: cursor-up codes in a log); restored afterwards."""
    was = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was[0]:
            dlog.enable_progress_bar()
        if was[1]:
            tlog.enable_progress_bar()


def load_pipeline(cfg: MegConfig, device: torch.device | None = None):
    """A ``StableDiffusionPipeline`` (DDIM scheduler, no safety checker) for ``cfg.model``."""
    device = device or resolve_device(cfg.generation.device)
    if cfg.model == "tiny":
        pipe = build_tiny_pipeline()
    elif cfg.model == "mini":
        # the shipped diffusers folder, loaded exactly like any local SD-v1.5 folder
        if not (MINI_PIPELINE_DIR / "model_index.json").exists():
            raise MissingWeightsError(f"model='mini': its weights are missing from "
                                      f"{str(MINI_PIPELINE_DIR)!r} (a broken install?): reinstall "
                                      "meg_lightning or run `make train-mini` to train them")
        return load_pipeline(replace(cfg, model=str(MINI_PIPELINE_DIR)), device)
    elif cfg.model == "sd15-random":
        # SD-v1.5's exact configs with random weights, built once, then loaded like a local folder
        return load_pipeline(replace(cfg, model=str(ensure_sd15_random())), device)
    else:
        name = model_id(cfg.model)
        looks_local = name.startswith((".", "/", "~")) or os.path.isdir(os.path.expanduser(name))
        if looks_local and not (Path(name).expanduser() / "model_index.json").exists():
            raise _missing_weights(name, "no model_index.json in that folder")
        verbosity = dlog.get_verbosity()
        dlog.set_verbosity_error()  # our own one-line error replaces diffusers' multi-line log
        try:
            with _no_loading_bars():
                pipe = StableDiffusionPipeline.from_pretrained(
                    os.path.expanduser(name), dtype=_DTYPES[cfg.generation.dtype],
                    safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        except (OSError, ValueError, EnvironmentError) as e:
            raise _missing_weights(name, type(e).__name__) from None
        except Exception as e:  # huggingface_hub / requests connection errors
            if "connect" in repr(e).lower() or "offline" in repr(e).lower():
                raise _missing_weights(name, type(e).__name__) from None
            raise
        finally:
            dlog.set_verbosity(verbosity)
        # the paper samples with DDIM (Table I: 50 steps)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_vae(cfg: MegConfig, device: torch.device | None = None):
    """Only the VAE (the UE's decoder D) of ``cfg.model``: what decoding needs. For a diffusers
    folder or hub id it is read alone (``subfolder="vae"``), so the U-Net and text encoder
    (3.9 GB of SD-v1.5's 4.3 GB in float32) are never loaded; ``tiny`` is built whole (small)."""
    device = device or resolve_device(cfg.generation.device)
    if cfg.model == "tiny":
        return load_pipeline(cfg, device).vae
    if cfg.model == "mini":
        return load_vae(replace(cfg, model=str(MINI_PIPELINE_DIR)), device)
    if cfg.model == "sd15-random":
        return load_vae(replace(cfg, model=str(ensure_sd15_random())), device)
    name = os.path.expanduser(model_id(cfg.model))
    try:
        vae = AutoencoderKL.from_pretrained(name, subfolder="vae",
                                            dtype=_DTYPES[cfg.generation.dtype])
    except Exception:  # noqa: BLE001 - whatever went wrong, the full loader explains it
        return load_pipeline(cfg, device).vae
    return vae.to(device)


def vae_scale_factor(vae) -> int:
    """f_d: the VAE's spatial down-sampling factor, from its config."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def latent_shape(pipe, gen: GenerationConfig) -> tuple[int, int, int]:
    """(C, H/f_d, W/f_d) of the latents this pipeline produces at ``gen``'s image size."""
    f = vae_scale_factor(pipe.vae)
    for key, v in (("generation.height", gen.height), ("generation.width", gen.width)):
        if v % f:
            raise ConfigError(key, v, f"a multiple of the VAE down-sampling factor {f}")
    return (pipe.unet.config.in_channels, gen.height // f, gen.width // f)


@torch.no_grad()
def generate_latents(pipe, prompts: Sequence[str], seeds: Sequence[int],
                     gen: GenerationConfig) -> torch.Tensor:
    """Latents z (B, C, H/f_d, W/f_d) for ``prompts``, sample i drawn with its own ``seeds[i]``.

    One generator per sample makes each latent independent of its batch-mates: batching changes
    the result only through floating-point reduction order in the batched U-Net.
    """
    # CPU generators: the same noise whatever device the U-Net runs on
    gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    out = pipe(list(prompts), height=gen.height, width=gen.width,
               num_inference_steps=gen.num_inference_steps, guidance_scale=gen.guidance_scale,
               eta=gen.eta, generator=gens, output_type="latent")
    return out.images.to(device="cpu", dtype=torch.float32)


@torch.no_grad()
def decode_latents(vae, z: torch.Tensor) -> torch.Tensor:
    """UE side (eq. 5): images in [0, 1], (B, 3, H, W), from latents z (B, C, h, w)."""
    p = next(vae.parameters())
    image = vae.decode(z.to(p.device, p.dtype) / vae.config.scaling_factor).sample
    return (image.float() / 2 + 0.5).clamp(0, 1)
