"""The offline ``sd15-random`` preset: SD-v1.5's exact component configurations, random weights.

Paper-scale mechanics, memory and time without the real weights (which cannot be downloaded on
the project machines). Every component has SD-v1.5's configuration
(``stable-diffusion-v1-5/stable-diffusion-v1-5``, ``*/config.json``):

- ``UNet2DConditionModel``: 859,520,964 parameters (4 -> 320/640/1280/1280, cross-attention 768);
- ``AutoencoderKL``: 83,653,863 parameters (f_d = 8: 512x512 -> 4x64x64, scaling 0.18215);
- ``CLIPTextModel`` (ViT-L/14 text tower): 123,060,480 parameters, 77 positions;
- ``CLIPTokenizer``: SD's vocabulary size 49,408 and 77 tokens, built in code (byte-level base
  alphabet + synthetic merges; the real merges are part of the download we cannot make);
- ``DDIMScheduler`` with SD's noise schedule.

It is not a model of images (the weights are ``torch.manual_seed``-ed random initialisations).
The pipeline is built once and saved as a diffusers folder (fp16 safetensors, ~2.1 GB) under
:func:`sd15_random_dir` (``$MEG_SD15_RANDOM_DIR``, else ``~/.cache/meg_lightning/sd15-random``);
it is then loaded through ``StableDiffusionPipeline.from_pretrained`` exactly like a local
SD-v1.5 folder.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from meg_lightning.generation.tiny import BOS, EOS, sd_ddim_scheduler

NAME = "sd15-random"
DIR_ENV = "MEG_SD15_RANDOM_DIR"
VOCAB_SIZE = 49408  # CLIP BPE: 256 bytes, 256 bytes + </w>, 48,894 merges, 2 specials
MAX_LENGTH = 77

#: parameter counts of SD-v1.5's components (the real checkpoint's, asserted in the tests)
PARAMS = {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}

UNET_CONFIG = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False,
    flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                      "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1,
    mid_block_scale_factor=1, act_fn="silu", norm_num_groups=32, norm_eps=1e-5,
    cross_attention_dim=768, attention_head_dim=8)

VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, act_fn="silu",
    norm_num_groups=32, sample_size=512, scaling_factor=0.18215)

TEXT_CONFIG = dict(
    vocab_size=VOCAB_SIZE, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
    num_attention_heads=12, max_position_embeddings=MAX_LENGTH, hidden_act="quick_gelu",
    layer_norm_eps=1e-5, projection_dim=768, bos_token_id=0, eos_token_id=2, pad_token_id=1)


def sd15_random_dir() -> Path:
    """Where the built pipeline is cached: ``$MEG_SD15_RANDOM_DIR``, else
    ``$XDG_CACHE_HOME/meg_lightning/sd15-random`` (``~/.cache/...``)."""
    if os.environ.get(DIR_ENV):
        return Path(os.environ[DIR_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "meg_lightning" / NAME


def _byte_alphabet() -> list[str]:
    """GPT-2 / CLIP's 256 printable stand-ins for the bytes 0..255 (bytes_to_unicode)."""

    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def sd15_tokenizer():
    """A CLIP BPE tokenizer with SD-v1.5's sizes: 49,408 tokens, 77 positions.

    Base alphabet and specials as in CLIP; the 48,894 merges are synthetic (letter/digit pairs,
    then triples, in a fixed order), so ordinary prompts tokenise into word pieces of realistic
    count. Token ids carry no meaning (the text encoder is random anyway).
    """

    base = _byte_alphabet()
    tokens = base + [c + "</w>" for c in base]
    alnum = "abcdefghijklmnopqrstuvwxyz0123456789"
    n_merges = VOCAB_SIZE - len(tokens) - 2
    merges: list[tuple[str, str]] = []
    seen = set(tokens)

    def add(a: str, b: str) -> None:
        if len(merges) < n_merges and a + b not in seen:
            merges.append((a, b))
            seen.add(a + b)
            tokens.append(a + b)

    pairs = [a + b for a in alnum for b in alnum]
    for a in alnum:
        for b in alnum:
            add(a, b)
            add(a, b + "</w>")
    for p in pairs:
        for c in alnum:
            add(p, c)
            add(p, c + "</w>")
    tokens += [BOS, EOS]
    if len(tokens) != VOCAB_SIZE:
        raise RuntimeError(f"sd15 tokenizer: built {len(tokens)} tokens, expected {VOCAB_SIZE}")
    vocab = {t: i for i, t in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges, unk_token=EOS, bos_token=BOS, eos_token=EOS,
                         pad_token=EOS, model_max_length=MAX_LENGTH)


def build_components(seed: int = 0, device: str | torch.device = "cpu") -> dict:
    """SD-v1.5-shaped ``unet``, ``vae``, ``text_encoder`` with seeded random weights.

    ``device="meta"`` builds them without allocating (parameter counts in milliseconds).
    """

    out = {}
    with torch.device(device):
        torch.manual_seed(seed)
        out["text_encoder"] = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
        torch.manual_seed(seed + 1)
        out["vae"] = AutoencoderKL(**VAE_CONFIG)
        torch.manual_seed(seed + 2)
        out["unet"] = UNet2DConditionModel(**UNET_CONFIG)
    return out


def build_sd15_random(folder: Path | None = None, seed: int = 0, progress: bool = True) -> Path:
    """Build the pipeline and save it as a diffusers folder (fp16 safetensors), atomically: it is
    written to ``<folder>.tmp-<pid>`` and renamed, so an interrupted build leaves no half folder."""

    folder = Path(folder) if folder else sd15_random_dir()
    t0 = time.perf_counter()
    if progress:
        print(f"building {NAME} (SD-v1.5 configs, random weights) -> {folder} (once; ~2.1 GB)",
              flush=True)
    parts = build_components(seed)
    pipe = StableDiffusionPipeline(tokenizer=sd15_tokenizer(), scheduler=sd_ddim_scheduler(),
                                   safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False, **parts)
    pipe.to(dtype=torch.float16)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    if (folder / "model_index.json").exists():  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)  # a folder without model_index.json is broken
        os.replace(tmp, folder)
    if progress:
        print(f"built {NAME} in {time.perf_counter() - t0:.0f} s", flush=True)
    return folder


def ensure_sd15_random(progress: bool = True) -> Path:
    """The cached folder, built first if it is missing."""

    folder = sd15_random_dir()
    if not (folder / "model_index.json").exists():
        build_sd15_random(folder, progress=progress)
    return folder
