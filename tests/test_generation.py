"""Edge-server generation: the tiny preset, seeds, latents and decoding."""

from __future__ import annotations

import pytest
import torch

from meg_lightning.errors import MissingWeightsError, UserError
from meg_lightning.generation import (decode_latents, generate_latents, latent_shape, load_pipeline,
                                      seed_for, vae_scale_factor)


def test_tiny_pipeline_is_sd_architecture(tiny_pipe):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    assert isinstance(tiny_pipe.unet, UNet2DConditionModel)
    assert isinstance(tiny_pipe.vae, AutoencoderKL)
    assert isinstance(tiny_pipe.text_encoder, CLIPTextModel)
    assert isinstance(tiny_pipe.tokenizer, CLIPTokenizer)
    assert isinstance(tiny_pipe.scheduler, DDIMScheduler)
    assert vae_scale_factor(tiny_pipe.vae) == 8  # read from the VAE config, same ratio as SD-v1.5


def test_tiny_pipeline_is_deterministic():
    from meg_lightning.generation.tiny import build_tiny_pipeline

    a, b = build_tiny_pipeline(), build_tiny_pipeline()
    for pa, pb in zip(a.unet.parameters(), b.unet.parameters()):
        assert torch.equal(pa, pb)


def test_seed_for_is_stable_and_distinct():
    seeds = [seed_for(0, i) for i in range(1000)]
    assert len(set(seeds)) == 1000
    assert seeds[:3] == [seed_for(0, 0), seed_for(0, 1), seed_for(0, 2)]
    assert seed_for(1, 0) != seed_for(0, 0)
    assert all(0 <= s < 2**63 for s in seeds)


def test_latent_shape_reads_vae_factor(make_cfg, tiny_pipe):
    cfg = make_cfg()
    assert latent_shape(tiny_pipe, cfg.generation) == (4, 8, 8)
    cfg = make_cfg("generation.height=60")
    with pytest.raises(UserError, match="generation.height=60"):
        latent_shape(tiny_pipe, cfg.generation)


def test_generated_latent_matches_stock_pipeline(make_cfg, tiny_pipe):
    cfg = make_cfg()
    g = cfg.generation
    z = generate_latents(tiny_pipe, ["a red fox at sunset"], [123], g)
    ref = tiny_pipe("a red fox at sunset", height=g.height, width=g.width,
                    num_inference_steps=g.num_inference_steps, guidance_scale=g.guidance_scale,
                    generator=torch.Generator().manual_seed(123), output_type="latent").images
    assert z.shape == (1, 4, 8, 8)
    torch.testing.assert_close(z, ref, rtol=0, atol=0)


def test_decode_divides_by_scaling_factor(tiny_pipe):
    z = torch.randn(2, 4, 8, 8)
    img = decode_latents(tiny_pipe.vae, z)
    assert img.shape == (2, 3, 64, 64) and 0 <= img.min() and img.max() <= 1
    with torch.no_grad():
        raw = tiny_pipe.vae.decode(z / tiny_pipe.vae.config.scaling_factor).sample
    torch.testing.assert_close(img, (raw / 2 + 0.5).clamp(0, 1))


def test_missing_local_folder_says_how_to_get_weights(make_cfg, tmp_path):
    cfg = make_cfg(f"model={tmp_path / 'no-such-model'}")
    with pytest.raises(MissingWeightsError) as e:
        load_pipeline(cfg)
    msg = str(e.value)
    assert "\n" not in msg and "model=tiny" in msg and "HF_HUB_OFFLINE" in msg


@pytest.mark.slow
def test_paper_weights_load_when_present(make_cfg):
    """Real SD-v1.5 weights (needs them in the HF cache or a local folder)."""
    cfg = make_cfg("model=paper", "generation.num_inference_steps=2")
    try:
        pipe = load_pipeline(cfg)
    except MissingWeightsError as e:
        pytest.skip(f"SD-v1.5 weights not available here: {e}")
    assert vae_scale_factor(pipe.vae) == 8
    assert latent_shape(pipe, cfg.generation) == (4, 64, 64)
