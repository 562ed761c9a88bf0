"""The TR 38.901 TDL channel over OFDM (``channel.kind=tdl``) against Sionna's profiles and theory.

Statistical checks use fixed seeds; each tolerance is several standard errors of its estimate,
and each test asserts that standard error, so that the tolerance is justified by the sample size
and the check stays sharp: deterministic, yet a real test of the statistics.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import constants, special
from sionna.phy.channel.tr38901 import TDL

from meg_lightning.channels import build, kinds, make, noise_var_from_snr_db, theory
from meg_lightning.channels.tdl import MODELS, TDLSettings
from meg_lightning.codecs.train import main as train_codec
from meg_lightning.compose import load_config
from meg_lightning.data.datamodule import TensorLatentDataModule
from meg_lightning.errors import ConfigError
from meg_lightning.evaluation.sweep import run_sweep

LATENT = (4, 8, 8)  # the tiny preset's latent shape


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def db(x: float) -> float:
    return 10.0 * math.log10(x)


def tdl(**settings) -> torch.nn.Module:
    return make("tdl", settings=TDLSettings(**settings))


def profile(model: str, delay_spread_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Sionna's power delay profile of a TDL model: (powers summing to 1, delays in s)."""
    ref = TDL(model, delay_spread_s, 3.5e9, precision="double", device="cpu")
    p = ref.mean_powers.numpy()
    return p / p.sum(), ref.delays.numpy()


def rms_delay_spread(p: np.ndarray, tau: np.ndarray) -> float:
    mean = np.sum(p * tau)
    return float(np.sqrt(np.sum(p * tau ** 2) - mean ** 2))


def freq_corr_theory(p: np.ndarray, tau: np.ndarray, spacing_hz: float, lags: int) -> np.ndarray:
    """E[H(f + k df) H*(f)] / E|H|^2 = sum_m P_m exp(-j 2 pi k df tau_m), k = 0..lags-1."""
    k = np.arange(lags)[:, None]
    return np.sum(p[None] * np.exp(-2j * np.pi * k * spacing_hz * tau[None]), axis=1)


def ratio(a: np.ndarray, b: np.ndarray) -> tuple[complex, float]:
    """``mean(a) / mean(b)`` over independent draws and its standard error (delta method)."""
    r = a.mean() / b.mean()
    return r, float(np.sqrt(np.mean(np.abs(a - r * b) ** 2) / len(a)) / abs(b.mean()))


def lag_products(h: torch.Tensor, lags: int) -> np.ndarray:
    """Per draw, the mean of H(n + k) H*(n) over n: (B, lags) complex, from h (B, N)."""
    h = h.to(torch.complex128)
    N = h.shape[1]
    return np.stack([(h[:, k:] * h[:, :N - k].conj()).mean(1).numpy() for k in range(lags)], 1)


# ----------------------------------------------------------------------------- registry and config


def test_registered_and_built_from_config():
    assert "tdl" in kinds()
    assert kinds().index("rayleigh") < kinds().index("tdl") < kinds().index("none")
    cfg = load_config(["channel.kind=tdl", "channel.tdl.model=C", "channel.num_blocks=4"])
    ch = build(cfg)
    assert ch.kind == "tdl" and ch.fading and ch.settings.model == "C" and ch.num_blocks == 4
    assert ch.groups(96) == 96 and ch.segments(96) == 96  # one gain per resource element
    assert set(MODELS) == {"A", "B", "C", "D", "E"}


@pytest.mark.parametrize("override,key", [
    ("channel.tdl.model=Z", "channel.tdl.model"),
    ("channel.tdl.delay_spread_ns=-30", "channel.tdl.delay_spread_ns"),
    ("channel.tdl.num_subcarriers=0", "channel.tdl.num_subcarriers"),
    ("channel.tdl.speed_mps=-1", "channel.tdl.speed_mps"),
    ("channel.tdl.cyclic_prefix=-2", "channel.tdl.cyclic_prefix"),
    ("channel.tdl.subcarrier_spacing_hz=0", "channel.tdl.subcarrier_spacing_hz"),
])
def test_bad_settings_are_one_line_config_errors(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(["channel.kind=tdl", override])
    assert e.value.key == key and "\n" not in str(e.value) and str(e.value).startswith(key)


def test_power_blocks_must_divide_the_seed():
    ch = make("tdl", num_blocks=3)
    with pytest.raises(ConfigError, match="channel.num_blocks"):
        ch(torch.randn(2, 128))  # 64 complex symbols in 3 blocks


# ----------------------------------------------------------------------------- gains


def test_average_power_gain_is_one():
    """E|H|^2 = 1 per resource element for every profile: the profile's own unit power, no
    normalisation. A fast UE over many OFDM symbols lets each draw average over time as well."""
    B, N, symbols = 1000, 32, 16
    pooled = []
    for i, model in enumerate(MODELS):
        h = tdl(model=model, delay_spread_ns=1000.0, num_subcarriers=N, speed_mps=300.0
                ).draw_gains(B, N * symbols, gen(30 + i))
        assert h.shape == (B, N * symbols) and h.dtype == torch.complex64
        per_draw = h.abs().pow(2).double().mean(1)  # independent across draws
        mean, se = per_draw.mean().item(), per_draw.std().item() / math.sqrt(B)
        assert se < 0.0125  # sharp: 4 standard errors < 5 %
        assert abs(mean - 1) < 4 * se, (model, mean, se)
        pooled.append(per_draw)
    pooled = torch.cat(pooled)  # independent draws (a seed per model)
    se = pooled.std().item() / math.sqrt(pooled.numel())
    assert abs(pooled.mean().item() - 1) < 4 * se and se < 0.006  # within 2.4 % over all five


def test_normalize_channel_gives_every_draw_unit_grid_power():
    h = tdl(normalize_channel=True, num_subcarriers=32, speed_mps=30.0).draw_gains(64, 96, gen(2))
    torch.testing.assert_close(h.abs().pow(2).mean(1), torch.ones(64), rtol=1e-4, atol=1e-4)
    raw = tdl(num_subcarriers=32, speed_mps=30.0).draw_gains(64, 96, gen(2))
    assert raw.abs().pow(2).mean(1).std() > 0.1  # without it the grid power itself fades


@pytest.mark.parametrize("model", ["A", "C"])
def test_realised_delay_spread_is_the_configured_one(model):
    """The frequency correlation of H is the profile's characteristic function; fitting the
    delay scale of the (normalised) profile to it gives the RMS delay spread the draws realise,
    which must be the configured one (TR 38.901 profiles are normalised to RMS 1)."""
    ds, df, N, symbols, B = 300e-9, 30e3, 64, 8, 800
    # a fast UE (f_D = 11 kHz): the OFDM symbols of a draw see nearly independent tap gains
    h = tdl(model=model, delay_spread_ns=ds * 1e9, subcarrier_spacing_hz=df, num_subcarriers=N,
            speed_mps=120.0, carrier_frequency_hz=28e9).draw_gains(B, N * symbols, gen(3))
    c = lag_products(h.reshape(B * symbols, N), N).reshape(B, symbols, N).mean(1)  # (B, N)
    p, tau = profile(model, ds)
    assert rms_delay_spread(p, tau) == pytest.approx(ds, rel=1e-3)
    scales = np.linspace(0.5, 2.0, 601)
    curves = np.stack([freq_corr_theory(p, s * tau, df, N) for s in scales])  # (S, N)

    def fitted(weights: np.ndarray) -> np.ndarray:  # (R, B) draw weights -> (R,) fitted RMS
        sums = weights @ c  # (R, N)
        rho = sums / sums[:, :1].real
        err = np.sum(np.abs(rho[:, None, :] - curves[None]) ** 2, axis=2)  # (R, S)
        return scales[np.argmin(err, axis=1)] * rms_delay_spread(p, tau)

    realised = float(fitted(np.ones((1, B)))[0])
    boot = fitted(np.random.default_rng(0).multinomial(B, np.full(B, 1 / B), size=200))
    se = float(boot.std())
    assert se < 0.0125 * ds  # sharp: 4 standard errors < 5 %
    assert abs(realised / ds - 1) < max(4 * se / ds, 0.01), (realised, se)
    rho = c.mean(0) / c[:, 0].mean().real
    assert np.abs(rho - freq_corr_theory(p, tau, df, N)).max() < 0.08


def test_larger_delay_spread_decorrelates_adjacent_subcarriers_more():
    df, N, B = 120e3, 32, 800
    rho = {}
    for ds in (100e-9, 1000e-9):
        h = tdl(model="A", delay_spread_ns=ds * 1e9, subcarrier_spacing_hz=df,
                num_subcarriers=N).draw_gains(B, N, gen(4))
        c = lag_products(h, 2)
        r, se = ratio(c[:, 1], c[:, 0].real)
        rho[ds] = abs(r)
        expected = abs(freq_corr_theory(*profile("A", ds), df, 2)[1])
        assert se < 0.01 and abs(rho[ds] - expected) < 4 * se, (ds, rho[ds], expected, se)
    assert rho[1000e-9] < rho[100e-9] - 0.1  # 0.82 against 0.997 (theory)


def test_static_channel_is_constant_over_ofdm_symbols():
    N, symbols = 16, 6
    h = tdl(num_subcarriers=N, speed_mps=0.0).draw_gains(32, N * symbols, gen(5))
    grid = h.reshape(32, symbols, N)
    assert torch.equal(grid, grid[:, :1].expand_as(grid))
    assert not torch.equal(grid[:, 0, 0], grid[:, 0, 1])  # but not flat in frequency


def test_doppler_time_correlation_is_clarkes_bessel_j0():
    """A moving UE: the gain of a subcarrier decorrelates over OFDM symbols as J0(2 pi f_D t)
    (sum of sinusoids with uniform angles of arrival), f_D = v f_c / c."""
    N, symbols, B, v, fc, df, cp = 16, 8, 2400, 100.0, 3.5e9, 15e3, 4
    ch = tdl(model="A", num_subcarriers=N, speed_mps=v, carrier_frequency_hz=fc,
             subcarrier_spacing_hz=df, cyclic_prefix=cp)
    h = ch.draw_gains(B, N * symbols, gen(6)).reshape(B, symbols, N).to(torch.complex128)
    T = ch.settings.symbol_duration_s
    assert T == pytest.approx((1 + cp / N) / df)
    f_d = v * fc / constants.c
    power = h.abs().pow(2).mean((1, 2)).numpy()
    for lag in range(1, 5):
        prod = (h[:, lag:] * h[:, :symbols - lag].conj()).real.mean((1, 2)).numpy()
        r, se = ratio(prod, power)
        expected = special.j0(2 * math.pi * f_d * lag * T)  # 0.91, 0.66, 0.32, -0.02
        assert se < 0.015 and abs(r - expected) < 4 * se, (lag, r, expected, se)
    assert abs(r) < 0.06  # decorrelated after 4 symbols at 100 m/s


# ----------------------------------------------------------------------------- the link


@pytest.mark.parametrize("snr_db", [0.0, 10.0])
def test_empirical_snr_is_the_configured_snr(snr_db):
    B, n_c = 640, 1024
    # FR2, a fast UE: 64 OFDM symbols of 16 subcarriers span several Doppler periods, so each
    # draw's mean |h|^2 is close to E|h|^2 and 640 draws pin the SNR down to 0.05 dB
    settings = TDLSettings(model="A", delay_spread_ns=300.0, carrier_frequency_hz=28e9,
                           speed_mps=60.0, subcarrier_spacing_hz=60e3, num_subcarriers=16)
    ch = make("tdl", snr_db=snr_db, num_blocks=4, equalizer="zf", normalize=False,
              settings=settings)
    x = torch.randn(B, 2 * n_c, generator=gen(7))
    out = ch(x, mode="eval", generator=gen(8))
    c = torch.view_as_complex(x.reshape(B, n_c, 2))
    signal = (out["h"] * c).abs().pow(2).double().mean(1)  # per draw
    noise = (out["y"] - out["h"] * c).abs().pow(2).double().mean(1)
    measured = db(signal.mean().item() / noise.mean().item())
    # delta method: the relative standard errors of both means add in quadrature
    se = 10 / math.log(10) * math.sqrt((signal.std() / signal.mean()).item() ** 2 / B
                                       + (noise.std() / noise.mean()).item() ** 2 / B)
    assert se < 0.05  # 0.2 dB is >= 4 standard errors
    assert abs(measured - snr_db) < 0.2, (measured, se)
    assert abs(db(noise.mean().item() / 2) - db(noise_var_from_snr_db(snr_db))) < 0.02


def test_zero_forcing_at_very_high_snr_returns_x():
    x = torch.randn(16, 2 * 192, generator=gen(9))
    out = make("tdl", snr_db=150.0, num_blocks=3, equalizer="zf")(x, mode="eval", generator=gen(10))
    torch.testing.assert_close(out["x_hat"], x, atol=1e-3, rtol=1e-3)


def test_mmse_is_never_worse_than_zf_and_matches_its_closed_form():
    B, n_c, snr_db = 64, 256, 5.0
    x = torch.randn(B, 2 * n_c, generator=gen(11))
    mse, h = {}, None
    for eq in ("zf", "mmse"):
        ch = make("tdl", snr_db=snr_db, equalizer=eq, normalize=False,
                  settings=TDLSettings(model="C", delay_spread_ns=300.0))
        out = ch(x, mode="eval", generator=gen(12))  # the same gains and noise for both
        mse[eq] = (out["x_hat"] - x).double().pow(2).mean().item()
        h = out["h"] if h is None else h
        assert torch.equal(out["h"], h)
    assert mse["mmse"] <= mse["zf"]
    # per resource element: sigma^2 / (|h|^2 + sigma^2), averaged over the realised gains
    expected = theory.mse_mmse(noise_var_from_snr_db(snr_db), 1.0, h.abs().pow(2).double()).mean()
    assert abs(mse["mmse"] / expected.item() - 1) < 0.03


# ----------------------------------------------------------------------------- randomness


def test_gains_come_from_the_generator():
    ch = tdl(model="B", speed_mps=30.0, num_subcarriers=32)
    a, b = ch.draw_gains(8, 100, gen(13)), ch.draw_gains(8, 100, gen(13))
    assert torch.equal(a, b)
    assert not torch.equal(a, ch.draw_gains(8, 100, gen(14)))
    g = gen(13)
    first, second = ch.draw_gains(8, 100, g), ch.draw_gains(8, 100, g)
    assert torch.equal(first, a) and not torch.equal(first, second)  # the generator advances
    x = torch.randn(8, 200)
    one, two = ch(x, mode="eval", generator=gen(15)), ch(x, mode="eval", generator=gen(15))
    assert torch.equal(one["x_hat"], two["x_hat"]) and torch.equal(one["h"], two["h"])
    # a fresh channel (a new cache of Sionna objects) draws the same gains
    fresh = tdl(model="B", speed_mps=30.0, num_subcarriers=32)
    assert torch.equal(fresh.draw_gains(8, 100, gen(13)), a)


def test_drawing_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    tdl(model="D").draw_gains(4, 64, gen(16))
    assert torch.equal(torch.rand(4), expected)


def test_power_gains_and_float64():
    ch = tdl(model="E")
    g = ch.draw_power_gains(16, 80, gen(17))
    assert g.shape == (16, 80) and g.dtype == torch.float64 and bool((g >= 0).all())
    h = ch.draw_gains(16, 80, gen(17), torch.empty(0, dtype=torch.float64))
    assert h.dtype == torch.complex128
    torch.testing.assert_close(g, h.abs().pow(2))


# ----------------------------------------------------------------------------- end to end


def test_codec_trains_and_evaluates_over_tdl(make_cfg, tiny_pipe):
    """`meg train-codec` then `meg eval` with channel.kind=tdl, in process on tiny latents: the
    codec trains through the OFDM link (two power blocks of 32 resource elements) and the sweep
    runs the learned and the linear code over it."""
    cfg = make_cfg("channel.kind=tdl", "channel.num_blocks=2", "channel.tdl.model=C",
                   "codec.arch=mlp", "codec.fc=0.5", "codec.val_snrs_db=[0,10]",
                   "trainer.max_epochs=1", "trainer.accelerator=cpu",
                   "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                   "eval.schemes=[meg,linear]", "eval.channels=[tdl]", "eval.snrs_db=[0,10]",
                   "eval.fcs=[0.5]", "eval.num_images=4", "eval.batch_size=4",
                   "eval.bootstrap=0", "eval.fid_features=pixels")
    z = torch.randn(40, *LATENT, generator=gen(20))
    dm = TensorLatentDataModule(z, batch_size=8, val_fraction=0.2, test_fraction=0.2)
    assert train_codec(cfg, datamodule=dm).is_file()
    res = run_sweep(cfg, datamodule=dm, vae=tiny_pipe.vae, progress=False)
    rows = {r["cell"]: r for r in res.rows}
    assert set(rows) == {f"{s}_fc0.5_tdl_snr{snr}" for s in ("meg", "linear") for snr in (0, 10)}
    assert all(r["channel"] == "tdl" and r["symbols"] == 128 and math.isfinite(r["latent_mse"])
               for r in rows.values())
    linear = [rows[f"linear_fc0.5_tdl_snr{snr}"]["latent_mse"] for snr in (0, 10)]
    assert linear[1] < linear[0]


def test_the_sweep_hash_follows_the_swept_models_own_settings(make_cfg):
    """A finished sweep is reused only for the same TDL settings; a sweep without tdl ignores them."""
    from meg_lightning.evaluation.cells import sweep_hash

    tdl = ["eval.channels=[awgn,tdl]"]
    assert sweep_hash(make_cfg(*tdl)) != sweep_hash(make_cfg(*tdl, "channel.tdl.model=C"))
    assert sweep_hash(make_cfg(*tdl)) != sweep_hash(make_cfg(*tdl, "channel.tdl.delay_spread_ns=30"))
    plain = ["eval.channels=[awgn,rayleigh]"]
    assert sweep_hash(make_cfg(*plain)) == sweep_hash(make_cfg(*plain, "channel.tdl.model=C"))
    only = ["eval.channels=[awgn]", "eval.scheme_channels={feature: [tdl]}"]
    assert sweep_hash(make_cfg(*only)) != sweep_hash(make_cfg(*only, "channel.tdl.model=C"))
