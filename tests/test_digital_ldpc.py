"""The latent digital baselines: KLT quantiser, Sionna 5G LDPC + QAM link, MCS choice, capacity ideal.

Synthetic Gaussian latents with a decaying spectrum stand in for the model's (no model needed);
``decode_image`` is the identity. Statistical checks use fixed seeds and margins of several
standard errors (BLER over 64-128 codewords, 3 dB away from the measured thresholds).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("sionna.phy")

from meg_lightning.codecs.klt import _reverse_water_fill  # noqa: E402
from meg_lightning.codecs.base import code_length  # noqa: E402
from meg_lightning.schemes.ldpc import (  # noqa: E402
    MCS_TABLE, MEASURED_THRESHOLDS_DB, LdpcLink, code_layout, measure_threshold_db)
from meg_lightning.schemes.quantizer import (  # noqa: E402
    LatentQuantizer, gaussian_uniform_quantizer_table)
from meg_lightning.schemes.digital import (  # noqa: E402
    CapacityDigitalScheme, LatentDigitalScheme)
from meg_lightning.channels import make as make_channel  # noqa: E402
from meg_lightning.schemes.base import SchemeOutput  # noqa: E402


def link(snr_db, kind="awgn", num_blocks=1):
    """The cell's channel at ``snr_db`` (None: the noiseless channel)."""
    if snr_db is None:
        return make_channel("none")
    return make_channel(kind, snr_db=snr_db, num_blocks=num_blocks)

SYMBOLS = code_length(0.5, 256)  # 128 real symbols = 64 QAM symbols: mini latents at fc 0.5
IDENT = lambda z: z  # noqa: E731  (the "image" is the latent itself)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def latents(n: int, shape=(4, 8, 8), decay: float = 20.0, seed: int = 0) -> torch.Tensor:
    """(n, *shape) Gaussian latents with KLT variances exp(-i / decay) in a random basis."""
    d = math.prod(shape)
    g = gen(1000 + seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen(999), dtype=torch.float64))
    lam = torch.exp(-torch.arange(d, dtype=torch.float64) / decay)
    return ((torch.randn(n, d, generator=g, dtype=torch.float64) * lam.sqrt()) @ q.T).float().reshape(n, *shape)


@pytest.fixture(scope="module")
def z_train() -> torch.Tensor:
    return latents(1500, seed=0)


@pytest.fixture(scope="module")
def quantizer(z_train) -> LatentQuantizer:
    return LatentQuantizer(z_train)


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).double().pow(2).mean().item()


# ----------------------------------------------------------------------------- quantiser


def test_gaussian_uniform_quantizer_table_matches_max_1960():
    steps, d = gaussian_uniform_quantizer_table()
    assert d[0] == 1.0 and abs(d[1] - (1 - 2 / math.pi)) < 1e-6 and abs(steps[1] - 1.596) < 1e-3
    assert abs(d[2] - 0.1188) < 2e-4 and abs(steps[2] - 0.9957) < 1e-3
    assert np.all(np.diff(d) < 0) and np.all(np.diff(np.diff(d)) > 0)  # decreasing, convex


def test_quantiser_distortion_decreases_with_bits_and_meets_high_rate_theory():
    shape, d = (4, 4, 4), 64
    z = latents(6000, shape, decay=8.0, seed=1)
    q = LatentQuantizer(z[:4000])
    test = z[4000:]
    budgets = [0, 8, 32, 64, 128, 192, 256, 320]
    m = [mse(q.reconstruct(test, b), test) for b in budgets]
    assert all(a > b for a, b in zip(m, m[1:])), m
    lam = torch.exp(-torch.arange(d, dtype=torch.float64) / 8.0).numpy()
    for b, mb in zip(budgets, m):
        # the modelled MSE sum_i lambda_i d(b_i) (exact for Gaussian components) holds on fresh data
        assert abs(mb / q.expected_mse(b) - 1) < 0.12, (b, mb, q.expected_mse(b))
        # never below the Gaussian rate-distortion bound (reverse water-filling), and at 5 bits
        # per component within the uniform scalar quantiser's high-rate loss: d(5) 4^5 = 3.6
        # times Shannon's 4^-5, and 4.5 with the bit allocation's integer rounding
        rd = _reverse_water_fill(lam, b / d)
        assert mb >= 0.95 * rd
        if b == 320:
            assert mb <= 4.5 * rd, (mb, rd)
    assert m[0] == pytest.approx(lam.mean(), rel=0.06)  # 0 bits: the mean


def test_quantiser_round_trip_is_exact_and_deterministic(quantizer, z_train):
    z = latents(16, seed=2)
    for B in (0, 1, 37, 300):
        bits = quantizer.quantise(z, B)
        assert bits.shape == (16, B) and bits.dtype == torch.float32
        assert set(bits.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(bits, quantizer.quantise(z, B))
        assert torch.equal(quantizer.dequantise(bits, B), quantizer.reconstruct(z, B))
        assert int(quantizer.allocation(B).sum()) == B
    mean = quantizer.mean_latent(16)
    torch.testing.assert_close(quantizer.reconstruct(z, 0), mean)  # 0 bits: every component the mean
    bits = quantizer.quantise(z, 300)
    torch.testing.assert_close(quantizer.dequantise(bits, 300, erased=torch.ones_like(bits).bool()), mean)
    # a refit on the same data gives the same code
    assert torch.equal(LatentQuantizer(z_train).quantise(z, 300), bits)


# ----------------------------------------------------------------------------- the LDPC link


def test_noiseless_and_very_high_snr_give_exactly_the_quantised_latent(z_train, quantizer):
    z = latents(32, seed=3)
    s = LatentDigitalScheme(z_train, IDENT, SYMBOLS, quantizer=quantizer)
    for snr in (None, 40.0):
        out = s(z, z, channel=link(snr), generator=gen(0))
        assert isinstance(out, SchemeOutput) and out.z_hat.shape == z.shape
        assert int(out.info["mcs"][0]) == len(MCS_TABLE) - 1  # the highest-rate MCS
        K = int(out.info["payload_bits"][0])
        assert K == 320  # 64QAM 5/6 on 64 QAM symbols: round(5/6 * 384)
        assert torch.equal(out.z_hat, quantizer.reconstruct(z, K))
        assert torch.equal(out.images, out.z_hat)
        assert (out.info["bler"] == 0).all() and (out.info["success"] == 1).all()
        for key in ("bler", "mcs", "payload_bits", "success"):
            assert out.info[key].shape == (32,)


def test_awgn_noise_follows_the_project_convention():
    """Unit power per real symbol (sqrt(2) qam) and noise 10^(-SNR/10) per real symbol."""
    ldpc = LdpcLink(64, MCS_TABLE[4])
    x = ldpc.encode(torch.randint(0, 2, (256, ldpc.info_bits), generator=gen(4)).float())
    assert abs(torch.view_as_real(x * math.sqrt(2)).pow(2).mean().item() - 1) < 0.05
    y, no = ldpc.channel(x, channel=link(6.0), generator=gen(5))
    n_real = torch.view_as_real((y - x) * math.sqrt(2))  # noise on the unit-power real symbols
    assert abs(10 * math.log10(1 / n_real.pow(2).mean().item()) - 6.0) < 0.1
    torch.testing.assert_close(no, torch.full_like(no, 10 ** -0.6))
    # Rayleigh: uneven blocks from block_sizes (22, 21, 21), noise sigma^2 / |h_b|^2 per block
    _, no = ldpc.channel(x, channel=link(6.0, "rayleigh", 3), generator=gen(6))
    for a, b in ((0, 22), (22, 43), (43, 64)):
        assert torch.equal(no[:, a:b], no[:, a:a + 1].expand(-1, b - a))
    assert not torch.equal(no[:, 21], no[:, 22])


def test_cliff_with_a_forced_mcs_and_monotone_mcs_choice(z_train, quantizer):
    table = MEASURED_THRESHOLDS_DB[SYMBOLS // 2]
    mcs = 4  # 16QAM 1/2
    t = table[mcs]
    s = LatentDigitalScheme(z_train, IDENT, SYMBOLS, mcs=mcs, quantizer=quantizer)
    z = latents(96, seed=4)
    below = s(z, z, channel=link(t - 3.0), generator=gen(7)).info
    above = s(z, z, channel=link(t + 3.0), generator=gen(8)).info
    assert below["bler"].mean() > 0.85 and below["success"].mean() < 0.15
    assert above["bler"].mean() < 0.03 and above["success"].mean() > 0.97
    assert (below["mcs"] == mcs).all() and (above["mcs"] == mcs).all()
    # the thresholds rise with the spectral efficiency, and so does the automatic choice
    known = [v for v in table if v is not None]
    assert known == sorted(known)
    auto = LatentDigitalScheme(z_train, IDENT, SYMBOLS, quantizer=quantizer)
    snrs = np.arange(-15.0, 35.0, 0.25)
    chosen = [auto.choose_mcs(float(x)) for x in snrs]
    assert all(a <= b for a, b in zip(chosen, chosen[1:]))
    assert chosen[0] == 0 and chosen[-1] == len(MCS_TABLE) - 1
    for x, c in zip(snrs, chosen):
        ok = [m for m, v in enumerate(table) if v is not None and v <= x]
        assert c == (max(ok) if ok else 0)


def test_symbol_budget_is_respected(z_train, quantizer):
    z = latents(4, seed=5)
    for symbols in (6, 26, 63, 64, 128, 192):
        s = LatentDigitalScheme(z_train, IDENT, symbols, quantizer=quantizer)
        out = s(z, z, channel=link(None), generator=gen(0))
        assert out.symbols == 2 * (symbols // 2) <= symbols
        code = s.link(int(out.info["mcs"][0]))
        assert code.coded_bits == (symbols // 2) * code.mcs.bits_per_symbol
    # 26 real symbols = 13 QAM symbols: the QPSK rates are too short for a 5G codeword (k < 12)
    assert LatentDigitalScheme(z_train, IDENT, 26, quantizer=quantizer).feasible[0] == 2
    with pytest.raises(ValueError, match="no MCS fits"):
        LatentDigitalScheme(z_train, IDENT, 5, quantizer=quantizer)  # 2 QAM symbols
    with pytest.raises(ValueError, match="does not fit"):
        LatentDigitalScheme(z_train, IDENT, 26, mcs=0, quantizer=quantizer)
    # paper scale (|z| = 16384, fc 0.5: 4096 QAM symbols): split into codewords with k <= 8448
    for m in MCS_TABLE:
        layout = code_layout(4096, m)
        assert sum(s for s, _, _ in layout) == 4096 and all(k <= 8448 for _, _, k in layout)
        assert all(0.2 <= k / n <= 0.95 for _, n, k in layout)


def test_capacity_is_never_worse_than_ldpc_on_awgn(z_train, quantizer):
    z = latents(256, seed=6)
    dig = LatentDigitalScheme(z_train, IDENT, SYMBOLS, quantizer=quantizer)
    cap = CapacityDigitalScheme(z_train, IDENT, SYMBOLS, quantizer=quantizer)
    for snr in (-8.0, 0.0, 9.0, 20.0):
        d = dig(z, z, channel=link(snr), generator=gen(9))
        c = cap(z, z, channel=link(snr), generator=gen(9))
        if snr >= MEASURED_THRESHOLDS_DB[SYMBOLS // 2][0]:  # below, LDPC sends QPSK 1/5 and fails
            assert c.info["payload_bits"][0] >= d.info["payload_bits"][0]
        assert (c.info["success"] == 1).all()
        assert mse(c.z_hat, z) <= mse(d.z_hat, z), snr
        assert c.symbols == SYMBOLS
    assert cap.rate_bits(link(None)) == quantizer.capacity_bits


def test_rayleigh_is_deterministic_and_worse_than_awgn(z_train, quantizer):
    z = latents(128, seed=7)
    mcs = 2  # QPSK 1/2
    snr = MEASURED_THRESHOLDS_DB[SYMBOLS // 2][mcs] + 2.0
    ray = LatentDigitalScheme(z_train, IDENT, SYMBOLS, mcs=mcs, quantizer=quantizer)
    awgn = LatentDigitalScheme(z_train, IDENT, SYMBOLS, mcs=mcs, quantizer=quantizer)
    a = ray(z, z, channel=link(snr, "rayleigh", 4), generator=gen(10))
    b = ray(z, z, channel=link(snr, "rayleigh", 4), generator=gen(10))
    assert torch.equal(a.z_hat, b.z_hat)
    assert all(torch.equal(a.info[k], b.info[k]) for k in a.info)
    w = awgn(z, z, channel=link(snr), generator=gen(10))
    assert a.info["bler"].mean() > w.info["bler"].mean() + 0.1
    assert mse(a.z_hat, z) > mse(w.z_hat, z)
    # failed codewords are erased: those latents are exactly the mean
    failed = a.info["success"] == 0
    assert failed.any()
    torch.testing.assert_close(a.z_hat[failed], quantizer.mean_latent(int(failed.sum())))
    # the capacity ideal on block fading: outages, none on AWGN; reproducible
    cr = CapacityDigitalScheme(z_train, IDENT, SYMBOLS, rayleigh_rate="awgn", quantizer=quantizer)
    faded = link(5.0, "rayleigh", 4)
    c1, c2 = cr(z, z, channel=faded, generator=gen(11)), cr(z, z, channel=faded, generator=gen(11))
    assert torch.equal(c1.z_hat, c2.z_hat) and 0 < c1.info["success"].mean() < 1
    opt = CapacityDigitalScheme(z_train, IDENT, SYMBOLS, quantizer=quantizer)
    assert opt.rate_bits(faded) < cr.rate_bits(faded)  # backs off from the AWGN rate


def test_crc_detects_failures_and_costs_its_bits(z_train, quantizer):
    z = latents(64, seed=8)
    s = LatentDigitalScheme(z_train, IDENT, SYMBOLS, mcs=4, crc="CRC11", quantizer=quantizer)
    plain = LatentDigitalScheme(z_train, IDENT, SYMBOLS, mcs=4, quantizer=quantizer)
    out = s(z, z, channel=link(MEASURED_THRESHOLDS_DB[SYMBOLS // 2][4] - 1.0), generator=gen(12))
    assert out.info["payload_bits"][0] == plain.link(4).info_bits - 11
    failed = out.info["success"] == 0
    assert 0 < failed.sum() < 64
    torch.testing.assert_close(out.z_hat[failed], quantizer.mean_latent(int(failed.sum())))


@pytest.mark.slow
def test_measured_threshold_is_reproduced():
    """One entry of MEASURED_THRESHOLDS_DB re-measured (about a minute on one core)."""
    t = measure_threshold_db(SYMBOLS // 2, 4)
    assert abs(t - MEASURED_THRESHOLDS_DB[SYMBOLS // 2][4]) <= 0.1 + 1e-9
