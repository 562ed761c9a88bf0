"""Latent-space references: feature transmission, the optimal linear code and the Gaussian OPTA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meg_lightning.channels import make as make_channel
from meg_lightning.codecs import CodecModule, LinearCode, opta_mse
from meg_lightning.errors import ConfigError
from meg_lightning.schemes.feature import FeatureLatentScheme

SHAPE = (4, 4, 4)
N = 64  # |z|
SNRS = [-10.0, 0.0, 10.0, 20.0]


@pytest.fixture(scope="module")
def source():
    """Correlated Gaussian latents with a known spectrum lambda_i = 2^(-i/6) and mean 0.3."""
    g = torch.Generator().manual_seed(0)
    lam = 2.0 ** (-torch.arange(N, dtype=torch.float64) / 6)
    q, _ = torch.linalg.qr(torch.randn(N, N, dtype=torch.float64, generator=g))
    mix = q * lam.sqrt()  # (N, N): z = mix @ w + 0.3, cov = q diag(lam) q^T

    def sample(n):
        return ((torch.randn(n, N, dtype=torch.float64, generator=g) @ mix.T) + 0.3).float()

    return {"lam": lam.numpy(), "cov": mix @ mix.T, "train": sample(40_000).reshape(-1, *SHAPE),
            "test": sample(40_000).reshape(-1, *SHAPE)}


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).pow(2).mean())


# -- OPTA ------------------------------------------------------------------------------------------
def test_opta_white_source_closed_form():
    # iid N(0, v): D = v 2^(-2R) = v (1 + SNR)^(-rho)
    for rho in (0.25, 0.5, 1.0):
        for snr in SNRS:
            expect = 2.0 * (1 + 10 ** (snr / 10)) ** (-rho)
            assert opta_mse(np.full(N, 2.0), rho, snr) == pytest.approx(expect, rel=1e-12)


def test_opta_is_monotone_and_vectorised(source):
    d = opta_mse(source["lam"], 0.5, np.array(SNRS))
    assert d.shape == (4,) and np.all(np.diff(d) < 0)
    assert opta_mse(source["lam"], 0.25, 10.0) > opta_mse(source["lam"], 0.5, 10.0)
    assert opta_mse(source["lam"], 0.5, -200.0) == pytest.approx(source["lam"].mean(), rel=1e-6)
    with pytest.raises(ConfigError, match="rate_ratio"):
        opta_mse(source["lam"], 1.5, 10.0)


# -- linear code -----------------------------------------------------------------------------------
@pytest.mark.parametrize("snr", SNRS)
def test_linear_code_matches_its_closed_form_and_respects_opta(source, snr):
    code = LinearCode.fit(source["train"], 0.5,
                          channel=make_channel("awgn", equalizer="zf", normalize=False))
    out = code(source["test"], snr, generator=torch.Generator().manual_seed(1))
    assert out["x"].shape == (40_000, 32)
    assert float(out["x"].pow(2).mean()) == pytest.approx(1.0, rel=0.02)  # unit average power
    assert code.power_loading(snr).sum() == pytest.approx(code.k)
    empirical = mse(out["z_hat"], source["test"])
    assert empirical == pytest.approx(code.expected_mse(snr), rel=0.02)
    assert empirical >= opta_mse(source["lam"], 0.5, snr)


def test_linear_code_from_moments_and_rayleigh(source):
    code = LinearCode.from_moments(torch.full((N,), 0.3), source["cov"], SHAPE, 0.5)
    fitted = LinearCode.fit(source["train"], 0.5)
    assert code.expected_mse(10.0) == pytest.approx(fitted.expected_mse(10.0), rel=0.02)
    # Block fading with zero-forcing + LMMSE: worse than AWGN at the same average SNR, still honest
    code.channel = make_channel("rayleigh", num_blocks=4, equalizer="zf", normalize=False)
    z = source["test"][:10_000]
    faded = mse(code(z, 10.0, generator=torch.Generator().manual_seed(2))["z_hat"], z)
    assert code.expected_mse(10.0) < faded < float(source["lam"].mean())
    code.channel = make_channel("rayleigh", equalizer="mmse", normalize=False)
    with pytest.raises(ConfigError, match="channel.equalizer"):
        code(z, 10.0)


# -- feature transmission --------------------------------------------------------------------------
def test_feature_scheme_near_lossless_at_high_snr_and_noise_level(source):
    z = source["test"][:2000]
    scheme = FeatureLatentScheme(decode_image=lambda zz: zz)
    z_hat, symbols = scheme.transmit(z, channel=make_channel("awgn", snr_db=60.0),
                                     generator=torch.Generator().manual_seed(3))
    assert z_hat.shape == z.shape and symbols == N
    nmse = (z_hat - z).pow(2).sum() / z.pow(2).sum()
    assert nmse < 2e-6
    # per-sample normalisation: the error is sigma^2 * mean(z^2) on average
    z_hat, _ = scheme.transmit(z, channel=make_channel("awgn", snr_db=10.0),
                               generator=torch.Generator().manual_seed(4))
    assert mse(z_hat, z) == pytest.approx(0.1 * float(z.pow(2).mean()), rel=0.05)


# -- a trained codec against the bound -------------------------------------------------------------
def test_trained_codec_never_beats_opta(source):
    torch.manual_seed(0)
    model = CodecModule(SHAPE, codec={"fc": 0.5, "arch": "mlp", "mlp": {"hidden": 128}},
                        channel={"snr_db": 10.0})
    opt = model.configure_optimizers()
    opt.param_groups[0]["lr"] = 3e-3
    train = source["train"]
    g = torch.Generator().manual_seed(5)
    for step in range(400):
        z = train[torch.randint(0, len(train), (256,), generator=g)]
        loss = torch.nn.functional.mse_loss(model(z, mode="train", generator=g)["z_hat"], z)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    z = source["test"][:20_000]
    with torch.no_grad():
        for snr in SNRS:
            got = mse(model(z, snr_db=snr, generator=torch.Generator().manual_seed(6))["z_hat"], z)
            bound = opta_mse(source["lam"], 0.5, snr)
            assert got >= bound, (snr, got, bound)
        # training worked: at the training SNR it beats sending nothing by far
        got10 = mse(model(z, snr_db=10.0)["z_hat"], z)
    assert got10 < 0.5 * float(source["lam"].mean())
    assert math.isfinite(got10)
