"""The offline ``tiny`` preset: an SD-v1.5-architecture pipeline with small random weights.

Same classes as SD-v1.5 (``UNet2DConditionModel``, ``AutoencoderKL``, ``CLIPTextModel``,
``CLIPTokenizer``, ``DDIMScheduler``), built from small configs with ``torch.manual_seed`` before
each component, and a character-level CLIP tokenizer built in code, so that no file is
downloaded. Images are meaningless noise; the mechanics (shapes, the VAE down-sampling factor,
DDIM with classifier-free guidance, scaling factor) are the real ones.
"""

from __future__ import annotations

import string

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def sd_ddim_scheduler() -> DDIMScheduler:
    """The SD-v1.5 noise schedule with DDIM (``steps_offset=1`` as in SD-v1.5's config)."""
    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=False,
                         steps_offset=1)


def tiny_tokenizer(max_length: int = 77) -> CLIPTokenizer:
    """A character-level CLIP BPE tokenizer (no merges): every character is a token."""
    chars = string.ascii_lowercase + string.digits + string.punctuation
    tokens = [BOS, EOS] + list(chars) + [c + "</w>" for c in chars]
    vocab = {t: i for i, t in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], unk_token=EOS, bos_token=BOS, eos_token=EOS,
                         pad_token=EOS, model_max_length=max_length)


def build_tiny_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """Build the tiny pipeline deterministically (same weights for the same ``seed``)."""
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
        pad_token_id=1, projection_dim=32))
    torch.manual_seed(seed + 1)
    # 4 encoder blocks -> 3 down-samplings -> factor 8, as in SD-v1.5 (64x64 -> 4x8x8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8,
                        sample_size=64, scaling_factor=0.18215)
    torch.manual_seed(seed + 2)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4,
                                block_out_channels=(16, 32), layers_per_block=1,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=unet, scheduler=sd_ddim_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
