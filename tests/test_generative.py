"""The scheme registry, the generative receivers ``X+dm`` and prompt transmission (``prompt``)."""

from __future__ import annotations

import math
import re

import pytest
import torch

from meg_lightning import schemes as registry
from meg_lightning.channels import make as make_channel
from meg_lightning.errors import ConfigError
from meg_lightning.schemes.base import FAILURE_VALUE
from meg_lightning.schemes.feature import FeatureLatentScheme
from meg_lightning.schemes.generative import DiffusionReceiver
from meg_lightning.schemes.ideal import threshold_snr_db
from meg_lightning.schemes.prompt import SEED_BITS, PromptScheme, prompt_bits

LATENT = (4, 8, 8)


def test_registry_names_flags_and_unknown_names():
    names = registry.names()
    for n in ("centralized", "feature", "meg", "linear", "digital-image", "prompt"):
        assert n in names
    # +dm exactly for the schemes that deliver a latent, right after them
    assert {n for n in names if n.endswith("+dm")} == \
        {n + "+dm" for n in names if not n.endswith("+dm") and registry.scheme_class(n).yields_latent}
    assert names.index("meg+dm") == names.index("meg") + 1
    assert registry.scheme_class("meg+dm").uses_fc and registry.scheme_class("prompt").uses_fc
    assert not registry.scheme_class("feature+dm").uses_fc
    # the UE runs the generator for prompt transmission and every generative receiver, only
    assert {n for n in names if registry.runs_generator(n)} == \
        {"prompt"} | {n for n in names if n.endswith("+dm")}
    for bad in ("centralized+dm", "prompt+dm", "megg"):
        with pytest.raises(ConfigError, match=re.escape(f"eval.schemes='{bad}': expected one of")):
            registry.scheme_class(bad)
    # every registered scheme is its own class, named by the registry; the properties that
    # consumers read instead of names are set on each
    for n, cls in registry.SCHEMES.items():
        assert cls.name == n and cls.hue and isinstance(cls.order, int)
    assert registry.with_role("proposed") == ["meg"]
    assert set(registry.with_role("pixels") + registry.with_role("latent")) == {"centralized",
                                                                               "feature"}
    assert registry.having(regenerates=True) == ["prompt"]


def test_config_rejects_a_scheme_without_a_latent_receiver(make_cfg):
    with pytest.raises(ConfigError, match="eval.schemes"):
        make_cfg("eval.schemes=[centralized+dm]")
    with pytest.raises(ConfigError, match="eval.ue_steps"):
        make_cfg("eval.ue_steps=0")


def _latents(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *LATENT, generator=g) * torch.linspace(0.5, 1.5, LATENT[0]).view(1, -1, 1, 1)


def test_error_variance_of_feature_on_awgn_is_the_closed_form(tiny_pipe):
    """sigma_e^2 measured on calibration latents = P_z 10^(-SNR/10): the channel normalises each
    sample to unit power and adds noise of variance 10^(-SNR/10) per real symbol."""
    z_cal = _latents(256)
    base = FeatureLatentScheme(lambda z: z[:, :3])
    rx = DiffusionReceiver(base, lambda: tiny_pipe, z_cal, ue_steps=4, es_steps=10,
                           guidance_scale=1.0)
    for snr in (-10.0, 0.0, 10.0):
        closed = float((z_cal ** 2).mean()) * 10 ** (-snr / 10)
        got = rx.sigma_e2(channel=make_channel("awgn", snr_db=snr))
        assert got == pytest.approx(closed, rel=0.05), snr
    # cached per cell, and reproducible across instances (its own seeded generator)
    again = DiffusionReceiver(base, lambda: tiny_pipe, z_cal, ue_steps=4, es_steps=10,
                              guidance_scale=1.0)
    ch = make_channel("awgn", snr_db=0.0)
    assert rx.sigma_e2(channel=ch) == again.sigma_e2(channel=ch)


def test_dm_is_the_plain_decoder_without_error_and_runs_the_unet_with_it(tiny_pipe):
    from meg_lightning.generation import decode_latents

    def decode(z):
        return decode_latents(tiny_pipe.vae, z).float()

    z = _latents(4, seed=1)
    i_0 = decode(z)
    prompts = ["a cat", "a dog", "a fox", "the sea"]
    base = FeatureLatentScheme(decode)
    rx = DiffusionReceiver(base, lambda: tiny_pipe, _latents(64, seed=2), ue_steps=3, es_steps=10,
                           guidance_scale=2.0)
    assert rx.name == "feature+dm"
    kw = dict(i_0=i_0, generator=torch.Generator().manual_seed(0), prompts=prompts)
    plain = base(z, channel=make_channel("none"), **{k: v for k, v in kw.items() if k != "prompts"})
    out = rx(z, channel=make_channel("none"), **kw)
    assert torch.equal(out.images, plain.images) and torch.equal(out.z_hat, z)
    assert out.info["ue_unet_evals"].tolist() == [0.0] * 4
    noisy = rx(z, channel=make_channel("awgn", snr_db=0.0), i_0=i_0,
               generator=torch.Generator().manual_seed(0), prompts=prompts)
    evals = noisy.info["ue_unet_evals"]
    assert torch.all(evals > 0) and torch.all(evals <= 2 * 3)  # CFG: 2 evals per step, <= 3 steps
    assert float(noisy.info["dm_sigma_e2"][0]) > 0
    with pytest.raises(ValueError, match="prompt"):
        rx(z, channel=make_channel("none"), i_0=i_0, generator=None, prompts=None)


def test_prompt_bits_are_the_shorter_of_utf8_and_deflate_plus_the_seed():
    short = "a cat"
    assert prompt_bits(short) == 1 + 8 * len(short.encode()) + SEED_BITS  # deflate is longer
    long = "a small red triangle on a blue background, " * 20
    assert prompt_bits(long) < 1 + 8 * len(long.encode()) + SEED_BITS
    assert prompt_bits("é") == 1 + 8 * 2 + SEED_BITS  # UTF-8 bytes, not characters


def test_a_dictionary_of_training_words_shortens_unseen_prompts():
    from meg_lightning.schemes.prompt import prompt_dictionary
    from meg_lightning.mini.dataset import combinations

    train = [a.caption for a in combinations("train")]
    zdict = prompt_dictionary(train)
    assert len(zdict) <= 32768 and b"triangle" in zdict
    for p in [a.caption for a in combinations("heldout")][:10]:  # never in the training set
        assert p not in train
        assert prompt_bits(p, zdict) < 0.6 * prompt_bits(p)  # ~210 bits instead of ~480
    # a prompt of words outside the dictionary gains nothing and never costs more than raw
    assert prompt_bits("zyx wvu", zdict) == 1 + 8 * 7 + SEED_BITS


def test_prompt_scheme_cliff_on_awgn_and_all_or_nothing_on_fading():
    z = _latents(6, seed=3)
    i_0 = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    prompts = ["a small red triangle on a blue background, top left"] * 6
    symbols = 32
    thr = threshold_snr_db(prompt_bits(prompts[0]), symbols)
    s = PromptScheme(symbols, es_steps=25, guidance_scale=5.0)
    above = s(z, i_0, channel=make_channel("awgn", snr_db=thr + 0.1), generator=None,
              prompts=prompts)
    below = s(z, i_0, channel=make_channel("awgn", snr_db=thr - 0.1), generator=None,
              prompts=prompts)
    assert torch.equal(above.images, i_0) and torch.equal(above.z_hat, z)
    assert above.info["success"].tolist() == [1.0] * 6
    assert torch.all(below.images == FAILURE_VALUE) and torch.all(below.z_hat == 0)
    assert below.info["success"].tolist() == [0.0] * 6
    assert float(above.info["threshold_snr_db"][0]) == pytest.approx(thr)
    fading = PromptScheme(symbols)
    ray = make_channel("rayleigh", snr_db=thr + 3, num_blocks=2)
    a = fading(z, i_0, channel=ray, generator=torch.Generator().manual_seed(5), prompts=prompts)
    b = fading(z, i_0, channel=ray, generator=torch.Generator().manual_seed(5), prompts=prompts)
    assert torch.equal(a.images, b.images)
    for i, ok in enumerate(a.info["success"].tolist()):  # each image all or nothing
        assert torch.equal(a.images[i], i_0[i]) if ok else bool(torch.all(a.images[i] == 0.5))


def test_prompt_regenerated_at_the_ue_equals_the_cached_i0(make_cfg):
    """The UE's whole generation from (prompt, seed) reproduces the edge server's latent, hence
    I_0, bit for bit (cache built one prompt per batch, as the UE generates)."""
    from meg_lightning.data.cache import LatentCache
    from meg_lightning.generation import (decode_latents, generate_latents, load_pipeline,
                                          seed_for)

    cfg = make_cfg("model=tiny", "data.num_prompts=3", "data.gen_batch_size=1",
                   "generation.num_inference_steps=3")
    cache = LatentCache(cfg)
    cache.build(progress=False)
    z = cache.open().stack()
    pipe = load_pipeline(cfg)
    from meg_lightning.data.prompts import get_prompts

    prompts = get_prompts(cfg.data.prompts, 3, cfg.data.prompt_column)
    seeds = [seed_for(cfg.seed, i) for i in range(3)]

    def ue_generation(ps, ss):  # one image at a time, as on a UE
        return torch.cat([generate_latents(pipe, [p], [s], cfg.generation)
                          for p, s in zip(ps, ss)])

    def decode(zz):
        return decode_latents(pipe.vae, zz).float()

    i_0 = decode(z)
    s = PromptScheme(10_000, regenerate=ue_generation, decode_image=decode)
    out = s(z, i_0, channel=make_channel("awgn", snr_db=0.0), generator=None, prompts=prompts,
            seeds=seeds)
    assert out.info["success"].tolist() == [1.0] * 3
    assert torch.equal(out.z_hat, z)  # the UE's latent is the edge server's, bit for bit
    assert torch.equal(out.images, i_0)
    assert math.isfinite(float(out.info["payload_bits"][0]))


def test_sweep_runs_registered_generative_schemes_with_the_prompts(make_cfg, tiny_pipe):
    from meg_lightning.data.datamodule import TensorLatentDataModule
    from meg_lightning.evaluation.sweep import enumerate_cells, read_results, run_sweep

    cfg = make_cfg("eval.schemes=[feature,feature+dm,linear+dm,prompt]", "eval.snrs_db=[-10,10]",
                   "eval.channels=[awgn]", "eval.fcs=[0.5]", "eval.num_images=4",
                   "eval.batch_size=4", "eval.bootstrap=0", "eval.fid_features=pixels",
                   "eval.ue_steps=2", "eval.dm_calibration=16")
    dm = TensorLatentDataModule(_latents(40, seed=4), test_fraction=0.2)
    prompts = [f"prompt number {i}" for i in range(40)]
    res = run_sweep(cfg, datamodule=dm, vae=tiny_pipe.vae, pipeline=tiny_pipe, prompts=prompts,
                    progress=False)
    rows = {r["cell"]: r for r in read_results(res.csv_path)}
    assert set(rows) == {c.key for c in enumerate_cells(cfg)}
    assert "linear+dm_fc0.5_awgn_snr-10" in rows and "feature+dm_awgn_snr-10" in rows
    dm_row, plain = rows["feature+dm_awgn_snr-10"], rows["feature_awgn_snr-10"]
    assert dm_row["symbols"] == plain["symbols"] == 256
    assert 0 < dm_row["ue_unet_evals"] <= 2 * 2  # <= ue_steps, 2 evals each (tiny: CFG 7.5)
    assert dm_row["dm_sigma_e2"] == pytest.approx(10.0, rel=0.3)  # P_z 10^(1) with P_z ~ 1
    assert plain["ue_unet_evals"] == 0.0
    # prompt: ~200 bits in 128 symbols fit at 10 dB (1.73 bits/symbol), not at -10 dB
    assert rows["prompt_fc0.5_awgn_snr10"]["success"] == 1.0
    assert rows["prompt_fc0.5_awgn_snr10"]["psnr_capped"] == 4  # I_0 itself
    assert rows["prompt_fc0.5_awgn_snr-10"]["success"] == 0.0
    # "prompt number N(N)": 15-16 UTF-8 bytes, shorter with the training prompts' dictionary
    assert SEED_BITS < rows["prompt_fc0.5_awgn_snr10"]["payload_bits"] < 1 + 8 * 15 + SEED_BITS
    # every row has the compute columns; the UE's work orders the schemes as the theory says
    for r in rows.values():
        assert math.isfinite(r["ue_gflops"]) and math.isfinite(r["es_gflops"]), r["cell"]
    ue = {k: rows[k]["ue_gflops"] for k in ("feature_awgn_snr-10", "feature+dm_awgn_snr-10",
                                           "prompt_fc0.5_awgn_snr10")}
    assert 0 < ue["feature_awgn_snr-10"] < ue["feature+dm_awgn_snr-10"] \
        < ue["prompt_fc0.5_awgn_snr10"]
    assert rows["prompt_fc0.5_awgn_snr10"]["es_gflops"] == 0.0
