"""The ``mini`` model's components: SD-v1.5 classes at a size a 2-core CPU can train.

Same classes and data flow as SD-v1.5 (``CLIPTokenizer`` -> ``CLIPTextModel`` -> cross-attention
in ``UNet2DConditionModel``, DDIM on ``AutoencoderKL`` latents), only smaller:

    caption --word-level CLIPTokenizer--> ids (B, 16) --CLIPTextModel--> (B, 16, text_dim)
    image (B, 3, 64, 64) --VAE encoder, 3 down-samplings--> z (B, 4, 8, 8)   (f_d = 8, as SD-v1.5)

The tokenizer is built in code: a CLIP BPE whose merges are learned, by BPE itself, on the
caption vocabulary until every word is a single token (so "triangle" is one id, not eight).
"""

from __future__ import annotations

import string
from collections import Counter
from dataclasses import dataclass, field

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from meg_lightning.generation.tiny import BOS, EOS
from meg_lightning.mini.dataset import VOCABULARY

MAX_LENGTH = 16  # tokens per caption incl. BOS/EOS; the longest caption needs 13


def caption_words() -> list[str]:
    """Every word the captions use (sorted, so the tokenizer is independent of dict order)."""
    words = {"a", "on", "background", ","}
    for values in VOCABULARY.values():
        for v in values:
            words.update(v.split())
    return sorted(words)


def _learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE training on ``words`` (each counted once) until every word is one symbol.

    Applying the learned merges in order to a training word reproduces the training merges, so
    each word encodes to its single symbol. Ties are broken by the pair itself: deterministic.
    """
    seqs = [list(w[:-1]) + [w[-1] + "</w>"] for w in words]  # "red" -> r, e, d</w>
    merges: list[tuple[str, str]] = []
    while True:
        pairs = Counter((s[i], s[i + 1]) for s in seqs for i in range(len(s) - 1))
        if not pairs:
            return merges
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for s in seqs:
            i = 0
            while i < len(s) - 1:
                if (s[i], s[i + 1]) == best:
                    s[i:i + 2] = [s[i] + s[i + 1]]
                i += 1


def mini_tokenizer(max_length: int = MAX_LENGTH) -> CLIPTokenizer:
    """Word-level CLIP tokenizer: one token per caption word; other text falls back to chars."""
    chars = string.ascii_lowercase + string.digits + string.punctuation
    tokens = [BOS, EOS] + list(chars) + [c + "</w>" for c in chars]
    merges = _learn_merges(caption_words())
    tokens += [a + b for a, b in merges if a + b not in tokens]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    return CLIPTokenizer(vocab=vocab, merges=merges, unk_token=EOS, bos_token=BOS, eos_token=EOS,
                         pad_token=EOS, model_max_length=max_length)


@dataclass
class MiniModelConfig:
    """Sizes of the three networks (defaults: the shipped model)."""

    # 4 encoder blocks -> 3 down-samplings: f_d = 8, as SD-v1.5
    vae_channels: list[int] = field(default_factory=lambda: [16, 32, 32, 32])
    # GroupNorm groups in the VAE; >= 4 channels per group: one-channel groups erase flat colours
    vae_groups: int = 4
    latent_channels: int = 4  # C of z (SD-v1.5: 4)
    text_dim: int = 64  # CLIP hidden size = U-Net cross-attention dimension
    text_layers: int = 2  # CLIP transformer layers
    text_heads: int = 4  # CLIP attention heads
    # U-Net block widths; len - 1 down-samplings of z (8x8 -> 4x4)
    unet_channels: list[int] = field(default_factory=lambda: [64, 96])
    unet_layers: int = 1  # resnet (+ transformer) layers per U-Net block
    unet_head_dim: int = 8  # channels per attention head in the U-Net
    unet_groups: int = 16  # GroupNorm groups in the U-Net


def build_vae(cfg: MiniModelConfig, image_size: int = 64) -> AutoencoderKL:
    n = len(cfg.vae_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=cfg.latent_channels,
                         down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n,
                         block_out_channels=tuple(cfg.vae_channels), layers_per_block=1,
                         norm_num_groups=cfg.vae_groups, sample_size=image_size,
                         scaling_factor=1.0)  # set from the latent std after VAE training


def build_text_encoder(cfg: MiniModelConfig, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.text_dim, intermediate_size=2 * cfg.text_dim,
        num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads,
        max_position_embeddings=tokenizer.model_max_length, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        projection_dim=cfg.text_dim))


def build_unet(cfg: MiniModelConfig, latent_size: int = 8) -> UNet2DConditionModel:
    n = len(cfg.unet_channels)
    return UNet2DConditionModel(
        sample_size=latent_size, in_channels=cfg.latent_channels, out_channels=cfg.latent_channels,
        block_out_channels=tuple(cfg.unet_channels), layers_per_block=cfg.unet_layers,
        down_block_types=("CrossAttnDownBlock2D",) * n, up_block_types=("CrossAttnUpBlock2D",) * n,
        cross_attention_dim=cfg.text_dim, attention_head_dim=cfg.unet_head_dim,
        norm_num_groups=cfg.unet_groups)


def encode_text(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, captions: list[str]
                ) -> torch.Tensor:
    """Caption embeddings (B, MAX_LENGTH, text_dim) as ``StableDiffusionPipeline`` makes them.

    Padding to the tokenizer's full length and no attention mask, as the pipeline does for CLIP,
    so that training sees the same embeddings (padding included) as sampling.
    """
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids  # (B, L)
    return text_encoder(ids.to(text_encoder.device))[0]
