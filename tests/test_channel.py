"""The channel layer against its conventions, the closed forms in `theory`, and sionna.

Statistical checks use fixed seeds and sample sizes chosen so that each tolerance is several
standard errors wide: deterministic, yet a real test of the statistics.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special, stats

from meg_lightning.channels import CHANNELS, Channel, PowerNormalize, kinds, noise_var_from_snr_db, theory
from meg_lightning.channels import build as build_channel
from meg_lightning.channels import make as make_channel
from meg_lightning.config import ChannelConfig, MegConfig
from meg_lightning.errors import ConfigError


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def db(x: float) -> float:
    return 10.0 * math.log10(x)


def split_blocks(y: torch.Tensor, num_blocks: int) -> torch.Tensor:
    return y.reshape(y.shape[0], num_blocks, -1)  # (B, nb, L)


def as_complex(x: torch.Tensor, num_blocks: int) -> torch.Tensor:
    """The complex symbols the layer transmits for an even-length, unit-power x."""
    B = x.shape[0]
    return torch.view_as_complex(x.reshape(B, num_blocks, -1, 2).contiguous())  # (B, nb, L)


# ----------------------------------------------------------------------------- power normalisation


def test_power_normalize_unit_power_and_scale():
    x = torch.randn(5, 3, 8, 8, generator=gen()) * torch.tensor([0.1, 1.0, 7.0, 300.0, 0.0]).view(5, 1, 1, 1)
    x_n, scale = PowerNormalize()(x)
    assert scale.shape == (5,)
    ms = x_n.pow(2).flatten(1).mean(1)
    torch.testing.assert_close(ms[:4], torch.ones(4))
    assert ms[4] == 0  # an all-zero sample stays zero instead of dividing by zero
    torch.testing.assert_close(x_n * scale.view(5, 1, 1, 1), x)


# ----------------------------------------------------------------------------- noise and fading statistics


def test_awgn_empirical_snr_matches_config():
    snr_db = 7.0
    x = torch.randn(64, 2 * 16384, generator=gen(1))
    ch = make_channel("awgn", snr_db=snr_db, normalize=False)
    out = ch(x, mode="eval", generator=gen(2))
    n = out["y"] - torch.view_as_complex(x.reshape(64, -1, 2))  # h = 1, p = 1
    sigma2_real, sigma2_imag = n.real.double().pow(2).mean(), n.imag.double().pow(2).mean()
    sigma2 = noise_var_from_snr_db(snr_db)
    # per real symbol: both parts carry sigma^2 (complex noise CN(0, 2 sigma^2))
    assert abs(db(1 / sigma2_real.item()) - snr_db) < 0.05
    assert abs(db(1 / sigma2_imag.item()) - snr_db) < 0.05
    signal = x.double().pow(2).mean().item()
    assert abs(db(signal / ((sigma2_real + sigma2_imag).item() / 2)) - snr_db) < 0.05
    torch.testing.assert_close(out["noise_var"], torch.full((64,), sigma2))
    torch.testing.assert_close(out["snr_db"], torch.full((64,), snr_db))
    assert torch.equal(out["h"], torch.ones(64, 1, dtype=torch.complex64))


def test_awgn_snr_is_relative_to_the_normalised_power():
    """With normalize=True a seed of any scale sees the configured SNR relative to its own power."""
    x = 40.0 * torch.randn(32, 2 * 8192, generator=gen(3)) + 5.0
    out = make_channel("awgn", snr_db=3.0)(x, mode="eval", generator=gen(4))
    err = (out["x_hat"] - x).double() / out["scale"].double().unsqueeze(1)  # back to unit power
    assert abs(db(1 / err.pow(2).mean().item()) - 3.0) < 0.05
    torch.testing.assert_close(out["scale"], x.pow(2).mean(1).sqrt())


def test_rayleigh_gain_and_received_snr():
    B, nb, L, snr_db = 8192, 16, 8, 12.0
    x = torch.randn(B, 2 * nb * L, generator=gen(5))
    out = make_channel("rayleigh", snr_db=snr_db, num_blocks=nb, normalize=False)(x, mode="eval", generator=gen(6))
    h = out["h"]
    assert h.shape == (B, nb) and h.is_complex()
    g = h.abs().double().pow(2)
    n_blocks = g.numel()  # 131072 independent draws: std of the mean of Exp(1) is 0.0028
    assert abs(g.mean().item() - 1.0) < 4 / math.sqrt(n_blocks)
    assert abs(h.real.double().pow(2).mean().item() - 0.5) < 0.01  # circular: 1/2 per part
    assert abs(h.imag.double().pow(2).mean().item() - 0.5) < 0.01
    assert abs(h.mean().abs().item()) < 0.01
    assert stats.kstest(g.flatten().numpy(), "expon").pvalue > 0.01  # |h|^2 ~ Exp(1)
    # received SNR: signal h c against the noise y - h c, both averaged over everything
    c = as_complex(x, nb)
    s = h.unsqueeze(-1) * c
    n = split_blocks(out["y"], nb) - s
    assert abs(db(s.abs().double().pow(2).mean().item() / n.abs().double().pow(2).mean().item())
               - snr_db) < 0.05
    # the noise itself does not fade: sigma^2 per real symbol
    assert abs(db(1 / n.real.double().pow(2).mean().item()) - snr_db) < 0.05


def test_blocks_are_consecutive_and_independent():
    """Every symbol of block b sees the same h_b (zf with no noise inverts it exactly)."""
    B, nb, L = 4, 4, 3
    x = torch.randn(B, 2 * nb * L, generator=gen(7), dtype=torch.float64)
    out = make_channel("rayleigh", snr_db=300.0, num_blocks=nb, normalize=False)(x, mode="eval", generator=gen(8))
    ratio = split_blocks(out["y"], nb) / as_complex(x, nb)
    torch.testing.assert_close(ratio, out["h"].unsqueeze(-1).expand(B, nb, L))
    assert (out["h"][:, 0] != out["h"][:, 1]).all()


def test_per_block_received_snr_with_allocation():
    """With power p_b the received SNR of block b is p_b |h_b|^2 SNR (eq. 29, amplitude sqrt(p_b))."""
    B, nb, L, snr_db = 4096, 4, 64, 5.0
    p = torch.tensor([0.25, 1.0, 2.5, 0.25])
    x = torch.randn(B, 2 * nb * L, generator=gen(9))
    out = make_channel("rayleigh", snr_db=snr_db, num_blocks=nb, normalize=False)(
        x, mode="eval", power=p.expand(B, nb), generator=gen(10))
    a = out["h"] * p.sqrt()
    n = split_blocks(out["y"], nb) - a.unsqueeze(-1) * as_complex(x, nb)
    sigma2 = noise_var_from_snr_db(snr_db)
    s = a.unsqueeze(-1) * as_complex(x, nb)
    g_mean = out["h"].abs().double().pow(2).mean(0)  # (nb,) the realised average gain per block
    for b in range(nb):
        # per block over 4096 * 64 complex uses: the noise variance is sigma^2 whatever the power
        assert abs(n[:, b].real.double().pow(2).mean().item() / sigma2 - 1) < 0.01
        measured = s[:, b].abs().double().pow(2).mean() / n[:, b].abs().double().pow(2).mean()
        expected = theory.received_snr(p[b].double(), g_mean[b], snr_db)
        assert abs(measured.item() / expected.item() - 1) < 0.01


# ----------------------------------------------------------------------------- equalisers vs theory


@pytest.mark.parametrize("equalizer", ["zf", "mmse", "none"])
def test_awgn_equaliser_mse_matches_theory(equalizer):
    B, nb, L, snr_db = 1024, 4, 256, 4.0
    p = torch.tensor([0.25, 1.0, 4.0, 0.0])
    x = torch.randn(B, 2 * nb * L, generator=gen(11))
    out = make_channel("awgn", snr_db=snr_db, num_blocks=nb, equalizer=equalizer, normalize=False)(
        x, mode="eval", power=p.expand(B, nb), generator=gen(12))
    err = (out["x_hat"] - x).reshape(B, nb, 2 * L).double().pow(2).mean(dim=(0, 2))  # per block
    sigma2 = noise_var_from_snr_db(snr_db)
    expected = torch.stack([torch.as_tensor(theory.mse(equalizer, sigma2, float(pb), 1.0)) for pb in p])
    # 1024 * 512 real symbols per block: relative std of the MSE estimate is well below 1%
    torch.testing.assert_close(err, expected.double(), rtol=0.02, atol=0)


def test_rayleigh_mmse_mse_matches_ergodic_closed_form():
    B, nb, L, snr_db = 16384, 8, 8, 10.0
    x = torch.randn(B, 2 * nb * L, generator=gen(13))
    out = make_channel("rayleigh", snr_db=snr_db, num_blocks=nb, equalizer="mmse", normalize=False)(
        x, mode="eval", generator=gen(14))
    sigma2 = noise_var_from_snr_db(snr_db)
    err = (out["x_hat"] - x).reshape(B, nb, 2 * L).double().pow(2).mean(-1)  # (B, nb)
    g = out["h"].abs().double().pow(2)
    # conditional on the drawn h: the exact per-block MSE sigma^2 / (g + sigma^2)
    assert abs(err.mean().item() / theory.mse_mmse(sigma2, 1.0, g).mean().item() - 1) < 0.01
    # ergodic over g ~ Exp(1): s e^s E1(s), s = sigma^2 (131072 blocks)
    ergodic = theory.ergodic_mse_mmse(sigma2)
    assert ergodic == pytest.approx(sigma2 * math.exp(sigma2) * special.exp1(sigma2), rel=1e-12)
    assert abs(err.mean().item() / ergodic - 1) < 0.03


def test_rayleigh_zf_mse_matches_conditional_closed_form():
    """ZF MSE is sigma^2 / (p g) per block; its Rayleigh average diverges, so weigh by p g."""
    B, nb, L, snr_db = 8192, 8, 8, 0.0
    p = torch.linspace(0.5, 2.0, nb)
    x = torch.randn(B, 2 * nb * L, generator=gen(15))
    out = make_channel("rayleigh", snr_db=snr_db, num_blocks=nb, equalizer="zf", normalize=False)(
        x, mode="eval", power=p.expand(B, nb), generator=gen(16))
    sigma2 = noise_var_from_snr_db(snr_db)
    err = (out["x_hat"] - x).reshape(B, nb, 2 * L).double().pow(2).mean(-1)  # (B, nb)
    pg = p.double() * out["h"].abs().double().pow(2)
    assert abs((err * pg).mean().item() / sigma2 - 1) < 0.01
    # the closed form gives the same per-block value it is compared with
    torch.testing.assert_close(theory.mse_zf(sigma2, p.double(), out["h"].abs().double().pow(2)), sigma2 / pg)
    assert theory.ergodic_mse_zf(sigma2) == math.inf


def test_zf_block_without_power_outputs_prior_mean():
    x = torch.randn(8, 16, generator=gen(17))
    p = torch.tensor([1.0, 0.0])
    out = make_channel("rayleigh", snr_db=10.0, num_blocks=2)(x, mode="eval", power=p, generator=gen(18))
    assert torch.isfinite(out["x_hat"]).all()
    assert (out["x_hat"][:, 8:] == 0).all()
    assert theory.mse_zf(0.1, 0.0, 1.0) == 1.0


# ----------------------------------------------------------------------------- gradients, modes, seeding


@pytest.mark.parametrize("kind,equalizer", [("awgn", "zf"), ("rayleigh", "mmse"), ("rayleigh", "zf"),
                                            ("none", "zf")])
def test_gradients_reach_the_input(kind, equalizer):
    x = torch.randn(3, 2, 6, dtype=torch.float64, generator=gen(19), requires_grad=True)
    ch = make_channel(kind, snr_db=5.0, num_blocks=2, equalizer=equalizer)
    # a fresh generator per call: gradcheck sees one fixed channel realisation
    assert torch.autograd.gradcheck(lambda t: ch(t, mode="eval", generator=gen(20))["x_hat"], (x,))
    ch(x, mode="train", generator=gen(20))["x_hat"].pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_per_sample_snr_tensor():
    snrs = torch.tensor([-5.0, 0.0, 10.0, 25.0])
    x = torch.randn(4, 2 * 65536, generator=gen(21))
    out = make_channel("awgn", snr_db=20.0)(x, mode="eval", snr_db=snrs, generator=gen(22))
    torch.testing.assert_close(out["snr_db"], snrs)
    torch.testing.assert_close(out["noise_var"], 10 ** (-snrs / 10))
    err = (out["x_hat"] - x) / out["scale"].unsqueeze(1)
    measured = -10 * torch.log10(err.double().pow(2).mean(1))
    assert (measured - snrs.double()).abs().max() < 0.05  # 131072 real symbols per sample
    # a python float, a 0-d tensor and a (1,) tensor broadcast to the batch
    for s in (10.0, torch.tensor(10.0), torch.tensor([10.0])):
        torch.testing.assert_close(make_channel("awgn")(x, mode="eval", snr_db=s)["snr_db"], torch.full((4,), 10.0))
    with pytest.raises(ValueError, match=r"snr_db tensor must be a scalar or have shape \(4,\)"):
        make_channel("awgn")(x, snr_db=torch.zeros(3), mode="eval")


@pytest.mark.parametrize("kind,equalizer", [("awgn", "zf"), ("rayleigh", "zf"), ("rayleigh", "mmse")])
def test_all_ones_power_equals_no_allocation(kind, equalizer):
    x = torch.randn(16, 64, generator=gen(23))
    ch = make_channel(kind, snr_db=8.0, num_blocks=4, equalizer=equalizer, train_snr_db=(0.0, 20.0))
    a = ch(x, mode="train", generator=gen(24))
    b = ch(x, mode="train", power=torch.ones(16, 4), generator=gen(24))
    for key in ("x_hat", "y", "h", "snr_db", "noise_var"):
        assert torch.equal(a[key], b[key]), key


def test_eval_with_seeded_generator_is_deterministic():
    x = torch.randn(8, 32, generator=gen(25))
    ch = make_channel("rayleigh", snr_db=10.0, num_blocks=4, train_snr_db=(0.0, 20.0))
    a, b = ch(x, mode="eval", generator=gen(26)), ch(x, mode="eval", generator=gen(26))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    c = ch(x, mode="eval", generator=gen(27))
    assert not torch.equal(a["x_hat"], c["x_hat"]) and not torch.equal(a["h"], c["h"])
    assert (a["snr_db"] == 10.0).all()  # eval ignores the training range


def test_train_mode_samples_snr_uniformly_in_db():
    x = torch.randn(20000, 4, generator=gen(28))
    ch = make_channel("awgn", snr_db=10.0, train_snr_db=[-5.0, 15.0])
    snr = ch(x, mode="train", generator=gen(29))["snr_db"]
    assert snr.min() >= -5.0 and snr.max() <= 15.0
    assert stats.kstest(((snr + 5) / 20).numpy(), "uniform").pvalue > 0.01
    assert (make_channel("awgn", snr_db=10.0)(x, mode="train")["snr_db"] == 10.0).all()  # no range: fixed
    # mode=None follows nn.Module.train() / .eval()
    assert ch.train()(x[:8], generator=gen(30))["snr_db"].unique().numel() == 8
    assert (ch.eval()(x[:8])["snr_db"] == 10.0).all()


def test_invalid_mode_raises():
    with pytest.raises(ValueError, match=r"^mode must be 'train' or 'eval', got 'test'$"):
        make_channel("awgn")(torch.randn(2, 4), mode="test")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), torch.tensor([1.0, float("nan")])])
def test_non_finite_snr_raises_config_error(bad):
    with pytest.raises(ConfigError, match="snr_db"):
        make_channel("awgn")(torch.randn(2, 4), mode="eval", snr_db=bad)


def test_invalid_construction_raises_config_error():
    with pytest.raises(ConfigError, match=r"channel\.snr_db=nan"):
        make_channel("awgn", snr_db=float("nan"))
    with pytest.raises(ConfigError, match=r"channel\.kind='rician': expected one of " + ", ".join(kinds())):
        make_channel("rician")
    with pytest.raises(ConfigError, match="channel.equalizer"):
        make_channel("awgn", equalizer="ml")
    with pytest.raises(ConfigError, match="channel.num_blocks"):
        make_channel("awgn", num_blocks=0)
    with pytest.raises(ConfigError, match="channel.train_snr_db"):
        make_channel("awgn", train_snr_db=(10.0, 0.0))


def test_blocks_must_divide_the_seed():
    ch = make_channel("rayleigh", num_blocks=3)
    with pytest.raises(ConfigError, match=r"channel\.num_blocks=3: expected a divisor of the 8 complex symbols"):
        ch(torch.randn(2, 16), mode="eval")
    assert ch(torch.randn(2, 18), mode="eval")["h"].shape == (2, 3)


def test_odd_length_is_padded_with_one_zero_symbol():
    x = torch.randn(3, 7, generator=gen(31))
    out = make_channel("awgn", snr_db=30.0)(x, mode="eval", generator=gen(32))
    assert out["x_hat"].shape == x.shape and out["y"].shape == (3, 4)
    torch.testing.assert_close(out["scale"], x.pow(2).mean(1).sqrt())  # the pad carries no power
    clean = make_channel("none", equalizer="none")(x, mode="eval", power=torch.ones(3, 1))
    assert (clean["y"][:, -1].imag == 0).all()  # the last use carries x[6] and the zero pad
    torch.testing.assert_close(clean["y"][:, -1].real, x[:, 6] / clean["scale"])


def test_noiseless_kind_is_exact():
    x = torch.randn(4, 3, 10, generator=gen(33))
    for equalizer in ("zf", "mmse", "none"):
        out = make_channel("none", equalizer=equalizer, num_blocks=5)(x, mode="train")
        assert torch.equal(out["x_hat"], x)
        assert (out["noise_var"] == 0).all() and torch.isinf(out["snr_db"]).all()
    out = make_channel("none", num_blocks=5)(x, mode="eval", power=torch.rand(4, 5, generator=gen(34)) + 0.1)
    assert torch.equal(out["x_hat"], x)


def test_low_precision_input():
    x = torch.randn(4, 64, generator=gen(35)).to(torch.bfloat16)
    out = make_channel("rayleigh", num_blocks=2, equalizer="mmse")(x, mode="eval", generator=gen(36))
    assert out["x_hat"].dtype == torch.bfloat16 and torch.isfinite(out["x_hat"].float()).all()


# ----------------------------------------------------------------------------- config


def test_build_from_config_and_the_registry():
    ch = build_channel(MegConfig().channel)
    d = ChannelConfig()
    assert (ch.kind, ch.snr_db, ch.train_snr_db, ch.num_blocks, ch.equalizer) == (
        d.kind, d.snr_db, d.train_snr_db, d.num_blocks, d.equalizer)
    ch = build_channel(ChannelConfig(kind="rayleigh", train_snr_db=[0.0, 20.0], num_blocks=8,
                                     equalizer="mmse"))
    assert (ch.kind, ch.train_snr_db, ch.num_blocks, ch.equalizer) == ("rayleigh", (0.0, 20.0), 8, "mmse")
    assert build_channel(MegConfig()).kind == d.kind  # a whole MegConfig works too
    # the section as a dict (a codec checkpoint's hyper-parameters) and another kind with overrides
    ch = build_channel({"kind": "awgn", "num_blocks": 2}, kind="rayleigh", snr_db=3.0)
    assert (type(ch), ch.num_blocks, ch.snr_db) == (CHANNELS["rayleigh"], 2, 3.0)
    # every model is a registered class of its own; the names come from the registry
    assert {"awgn", "rayleigh", "none"} <= set(kinds())
    assert all(CHANNELS[k].name == k and issubclass(CHANNELS[k], Channel) for k in kinds())
    with pytest.raises(ConfigError, match=r"channel.kind='rician': expected one of awgn, rayleigh"):
        build_channel(ChannelConfig(kind="rician"))
    # replace keeps the model and its settings, changing only the shared settings asked for
    ray = make_channel("rayleigh", snr_db=5.0, num_blocks=4, equalizer="mmse")
    zf = ray.replace(equalizer="zf", normalize=False)
    assert (type(zf), zf.num_blocks, zf.snr_db, zf.equalizer, zf.normalize) == (
        type(ray), 4, 5.0, "zf", False)


def test_csi_is_each_segments_snr_after_equalisation():
    """``csi_db`` = SNR + 10 log10(|h|^2 p) per block: what a receiver with CSI knows."""
    x = torch.randn(5, 32, generator=gen(50))
    p = torch.rand(5, 4, generator=gen(51)) + 0.1
    out = make_channel("rayleigh", snr_db=7.0, num_blocks=4)(x, mode="eval", power=p,
                                                            generator=gen(52))
    expected = 7.0 + 10 * torch.log10(out["h"].abs().pow(2) * p)
    torch.testing.assert_close(out["csi_db"], expected.float())
    awgn = make_channel("awgn", snr_db=-3.0, num_blocks=2)(x, mode="eval", generator=gen(53))
    torch.testing.assert_close(awgn["csi_db"], torch.full((5, 2), -3.0))


def test_gains_are_drawn_by_the_channel_only():
    """draw_gains is the channel's one source of gains: forward with the same generator state
    uses exactly the gains draw_gains returns, and the power gains are Exp(1) for Rayleigh."""
    ch = make_channel("rayleigh", snr_db=10.0, num_blocks=4)
    x = torch.randn(64, 32)
    h = ch.draw_gains(64, 16, gen(60), x)
    out = ch(x, mode="eval", generator=gen(60))
    torch.testing.assert_close(out["h"], h)
    assert make_channel("awgn", num_blocks=4).draw_gains(3, 16).eq(1).all()
    g = ch.draw_power_gains(20000, 16, gen(61))
    assert g.shape == (20000, 4) and abs(float(g.mean()) - 1) < 0.03
    assert stats.kstest(g.flatten().numpy(), "expon").pvalue > 0.01


# ----------------------------------------------------------------------------- theory


def test_theory_closed_forms():
    assert noise_var_from_snr_db(20.0) == pytest.approx(0.01)
    assert theory.snr_db_from_noise_var(0.01) == pytest.approx(20.0)
    assert theory.avg_snr_db(8.0, 8, 0.01) == pytest.approx(20.0)
    assert theory.relative_power(torch.full((8,), 1.0), 8.0, 8).eq(1).all()
    s = np.logspace(-6, 2.5, 300)
    ref = s * np.exp(s) * special.exp1(s)
    np.testing.assert_allclose(theory.ergodic_mse_mmse(s), ref, rtol=1e-10)
    t = theory.ergodic_mse_mmse(torch.tensor(s))  # the batched torch version agrees
    np.testing.assert_allclose(t.numpy(), ref, rtol=1e-10)
    np.testing.assert_allclose(theory.scaled_exp1(torch.tensor(s, dtype=torch.float32)).numpy(),
                               np.exp(s) * special.exp1(s), rtol=1e-5)
    assert theory.ergodic_mse_mmse(0.0) == 0.0 and theory.ergodic_mse_mmse(1.0, p=0.0) == 1.0
    # MMSE is never worse than ZF, and both vanish with the noise
    g = torch.tensor([0.01, 0.5, 3.0])
    assert (theory.mse_mmse(0.1, 1.0, g) < theory.mse_zf(0.1, 1.0, g)).all()
    assert theory.mse("none", 0.1, 4.0, 1.0) == pytest.approx(1.1)  # (2 - 1)^2 + 0.1


# ----------------------------------------------------------------------------- sionna reference


def test_noise_and_fading_conventions_agree_with_sionna():
    sionna_phy = pytest.importorskip("sionna.phy")
    from sionna.phy.channel import AWGN, RayleighBlockFading

    sionna_phy.config.seed = 1234
    B, nb, L, snr_db = 4096, 8, 16, 6.0
    sigma2 = noise_var_from_snr_db(snr_db)
    x = torch.randn(B, 2 * nb * L, generator=gen(37))
    c = as_complex(x, nb)

    # AWGN: sionna's `no` is per complex symbol, ours per real symbol -> no = 2 sigma^2
    n_ref = AWGN()(torch.zeros(B * nb * L, dtype=torch.complex64), 2 * sigma2)
    ours = make_channel("awgn", snr_db=snr_db, normalize=False)(x, mode="eval", generator=gen(38))
    n_ours = ours["y"].flatten() - c.flatten()
    for part in ("real", "imag"):
        v_ref = getattr(n_ref, part).double().pow(2).mean().item()
        v_ours = getattr(n_ours, part).double().pow(2).mean().item()
        assert abs(db(v_ref / v_ours)) < 0.05 and abs(db(1 / v_ours) - snr_db) < 0.05
    corr = (n_ours.real * n_ours.imag).double().mean().item()  # circular: parts uncorrelated
    assert abs(corr) < 5 * sigma2 / math.sqrt(n_ours.numel())

    # Rayleigh block fading: one coefficient per (sample, block), CN(0, 1)
    h_ref, _ = RayleighBlockFading(1, 1, 1, 1)(batch_size=B * nb, num_time_steps=L)
    assert h_ref.shape[-1] == L and torch.equal(h_ref[..., 0:1].expand_as(h_ref), h_ref)  # constant in block
    h_ref = h_ref[..., 0].reshape(B, nb)
    ray = make_channel("rayleigh", snr_db=snr_db, num_blocks=nb, equalizer="mmse", normalize=False)
    out = ray(x, mode="eval", generator=gen(39))
    g_ref, g_ours = h_ref.abs().pow(2).flatten().numpy(), out["h"].abs().pow(2).flatten().numpy()
    assert stats.ks_2samp(g_ref, g_ours).pvalue > 0.01
    assert abs(g_ref.mean() - g_ours.mean()) < 0.02
    for part in ("real", "imag"):
        assert abs(getattr(h_ref, part).pow(2).mean().item() - 0.5) < 0.01

    # the whole link built from sionna's blocks, equalised the same way, gives the same MSE
    y_ref = AWGN()(h_ref.unsqueeze(-1) * c, 2 * sigma2)
    c_hat_ref = h_ref.conj().unsqueeze(-1) * y_ref / (h_ref.abs().pow(2).unsqueeze(-1) + sigma2)
    mse_ref = torch.view_as_real(c_hat_ref - c).double().pow(2).mean().item()
    mse_ours = (out["x_hat"] - x).double().pow(2).mean().item()
    ergodic = theory.ergodic_mse_mmse(sigma2)
    assert abs(mse_ref / ergodic - 1) < 0.03 and abs(mse_ours / ergodic - 1) < 0.03


# ----------------------------------------------------------------------------- device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_theory_and_is_seeded():
    x = torch.randn(4096, 2 * 8 * 32, device="cuda")
    ch = make_channel("rayleigh", snr_db=10.0, num_blocks=8, equalizer="mmse", normalize=False)
    a = ch(x, mode="eval", generator=gen(40, "cuda"))
    b = ch(x, mode="eval", generator=gen(40, "cuda"))
    assert a["x_hat"].device.type == "cuda" and torch.equal(a["x_hat"], b["x_hat"])
    mse = (a["x_hat"] - x).double().pow(2).mean().item()
    assert abs(mse / theory.ergodic_mse_mmse(0.1) - 1) < 0.03
    c = ch(x, mode="eval", generator=gen(40))  # a CPU generator still works (draws are moved)
    assert c["x_hat"].device.type == "cuda"


def test_given_fading_is_used_exactly():
    """A pre-drawn h (the power-control env's) replaces the channel's own draw."""
    ch = make_channel("rayleigh", snr_db=10.0, num_blocks=4, equalizer="zf")
    x = torch.randn(3, 16)
    h = torch.complex(torch.randn(3, 4), torch.randn(3, 4))
    out = ch(x, mode="eval", h=h, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["h"], h)
    noiseless = make_channel("rayleigh", snr_db=300.0, num_blocks=4, equalizer="zf")
    torch.testing.assert_close(noiseless(x, mode="eval", h=h)["x_hat"], x, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="shape"):
        ch(x, mode="eval", h=h[:, :2])
    with pytest.raises(ValueError, match=r"shape \(3, 1\)"):  # AWGN: one gain group per seed
        make_channel("awgn")(x, mode="eval", h=h)
