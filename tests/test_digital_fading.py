"""The digital baselines on fading channels: ``digital`` picks its MCS from thresholds measured on
the cell's fading channel (10% codeword error rate at the average SNR), ``digital-csit`` per image
from the gains it knows; AWGN is unchanged; a rate too small for any MCS is a one-line user error.

Synthetic Gaussian latents with a decaying spectrum stand in for the model's (``decode_image`` is
the identity). Codeword error rates are Monte-Carlo estimates over 240 codewords (one per image),
checked against 10% plus three standard errors (0.058).
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("sionna.phy")

from meg_lightning.channels import make as make_channel  # noqa: E402
from meg_lightning.codecs.base import code_length  # noqa: E402
from meg_lightning.errors import ConfigError  # noqa: E402
from meg_lightning.evaluation.tradeoff import digital_lines, wilson_interval  # noqa: E402
from meg_lightning.schemes import SCHEMES  # noqa: E402
from meg_lightning.schemes.digital import LatentDigitalScheme  # noqa: E402
from meg_lightning.schemes.digital_csit import LatentDigitalCSIT  # noqa: E402
from meg_lightning.schemes.ldpc import (  # noqa: E402
    FADING_CODEWORDS,
    FADING_RESOLUTION_DB,
    FADING_THRESHOLDS_DB,
    MCS_TABLE,
    MEASURED_THRESHOLDS_DB,
    TARGET_BLER,
    LdpcLink,
    codeword_error_rate,
    fading_threshold_db,
    measure_threshold_db,
)
from meg_lightning.schemes.quantizer import LatentQuantizer  # noqa: E402

SYMBOLS = code_length(0.5, 256)  # mini at fc 0.5: 128 real symbols = 64 QAM symbols
N_COMPLEX = SYMBOLS // 2
IDENT = lambda z: z  # noqa: E731
N = 240  # images (one codeword each) per Monte-Carlo check
TOL = 3 * math.sqrt(TARGET_BLER * (1 - TARGET_BLER) / N)  # three standard errors at 10%


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def latents(n: int, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(256, 256, generator=gen(999), dtype=torch.float64))
    lam = torch.exp(-torch.arange(256, dtype=torch.float64) / 20.0)
    x = torch.randn(n, 256, generator=gen(1000 + seed), dtype=torch.float64) * lam.sqrt()
    return (x @ q.T).float().reshape(n, 4, 8, 8)


@pytest.fixture(scope="module")
def quantizer() -> LatentQuantizer:
    return LatentQuantizer(latents(600))


def rayleigh(snr_db: float, blocks: int = 1):
    return make_channel("rayleigh", snr_db=snr_db, num_blocks=blocks)


def table_choice(table, snr_db: float) -> int:
    ok = [m for m, t in enumerate(table) if t is not None and t <= snr_db]
    return max(ok) if ok else next(m for m, t in enumerate(table) if t is not None)


# ----------------------------------------------------------------------------- the table


def test_fading_table_is_consistent():
    """Each shipped row rises with the MCS, lies above the AWGN thresholds of its budget (fading
    only costs SNR) and is what the scheme reads for that channel."""
    assert ("rayleigh", 1, N_COMPLEX) in FADING_THRESHOLDS_DB
    for (kind, groups, n), row in FADING_THRESHOLDS_DB.items():
        assert len(row) == len(MCS_TABLE)
        known = [t for t in row if t is not None]
        assert known == sorted(known), (kind, groups, n)
        for t, a in zip(row, MEASURED_THRESHOLDS_DB[n]):
            assert (t is None) == (a is None) and (t is None or t > a)
        ch = make_channel(kind, snr_db=0.0, num_blocks=groups)
        assert [fading_threshold_db(n, m, ch, measure=False) for m in range(len(MCS_TABLE))] == \
            list(row)


def test_fading_table_entries_agree_with_a_fresh_simulation():
    """Two entries against new draws (another seed): at the threshold the codeword error rate is
    <= 10% (+ three standard errors); 3 dB below it (one Rayleigh block: about twice the
    outage) it is above 10%."""
    row = FADING_THRESHOLDS_DB[("rayleigh", 1, N_COMPLEX)]
    for m in (1, 4):
        link = LdpcLink(N_COMPLEX, MCS_TABLE[m])
        at = codeword_error_rate(link, row[m], N, seed=7, channel=rayleigh(0.0))
        below = codeword_error_rate(link, row[m] - 3.0, N // 2, seed=7, channel=rayleigh(0.0))
        assert at <= TARGET_BLER + TOL, (m, at)
        assert below > TARGET_BLER, (m, below)


@pytest.mark.slow
def test_fading_table_entry_is_reproduced():
    """One entry re-measured as the script does, with another seed (about a minute)."""
    t = measure_threshold_db(N_COMPLEX, 2, channel=rayleigh(0.0), seed=3,
                             num_codewords=FADING_CODEWORDS, resolution_db=FADING_RESOLUTION_DB)
    assert abs(t - FADING_THRESHOLDS_DB[("rayleigh", 1, N_COMPLEX)][2]) <= 1.0


# ----------------------------------------------------------------------------- digital


@pytest.mark.parametrize("snr", [10.0, 20.0])
def test_digital_on_rayleigh_meets_the_target(quantizer, snr):
    """The MCS from the Rayleigh thresholds keeps the codeword error rate at <= 10%, where the
    AWGN thresholds' MCS (the choice at the same SNR on AWGN) is far above it."""
    z = latents(N, seed=2)
    s = LatentDigitalScheme(None, IDENT, SYMBOLS, quantizer=quantizer)
    m = s.choose_mcs_fading(rayleigh(snr))
    assert m == table_choice(FADING_THRESHOLDS_DB[("rayleigh", 1, N_COMPLEX)], snr)
    out = s(z, z, channel=rayleigh(snr), generator=gen(5))
    assert (out.info["mcs"] == m).all()
    bler = float(out.info["bler"].mean())
    assert bler <= TARGET_BLER + TOL, bler
    awgn_mcs = s.choose_mcs(snr)
    assert awgn_mcs > m
    forced = LatentDigitalScheme(None, IDENT, SYMBOLS, mcs=awgn_mcs, quantizer=quantizer)
    old = float(forced(z[:64], z[:64], channel=rayleigh(snr), generator=gen(5)).info["bler"].mean())
    assert old > 0.25, old


def test_digital_below_every_fading_threshold_sends_the_most_robust_mcs(quantizer):
    s = LatentDigitalScheme(None, IDENT, SYMBOLS, quantizer=quantizer)
    assert s.choose_mcs_fading(rayleigh(0.0)) == s.feasible[0]
    assert LatentDigitalScheme(None, IDENT, SYMBOLS, mcs=5,
                               quantizer=quantizer).choose_mcs_fading(rayleigh(0.0)) == 5


def test_digital_on_awgn_is_unchanged(quantizer, monkeypatch):
    """AWGN never reads a fading threshold; the choice is the AWGN table's rule and the output is
    bit-identical to that MCS forced."""
    import meg_lightning.schemes.digital as digital

    def boom(*a, **k):
        raise AssertionError("a fading threshold was read on AWGN")

    monkeypatch.setattr(digital, "fading_threshold_db", boom)
    z = latents(16, seed=3)
    s = LatentDigitalScheme(None, IDENT, SYMBOLS, quantizer=quantizer)
    for snr in (-5.0, 3.0, 12.0, 25.0):
        m = table_choice(MEASURED_THRESHOLDS_DB[N_COMPLEX], snr)
        assert s.choose_mcs(snr) == m
        a = s(z, z, channel=make_channel("awgn", snr_db=snr), generator=gen(4))
        f = LatentDigitalScheme(None, IDENT, SYMBOLS, mcs=m, quantizer=quantizer)(
            z, z, channel=make_channel("awgn", snr_db=snr), generator=gen(4))
        assert torch.equal(a.z_hat, f.z_hat) and (a.info["mcs"] == m).all()


def test_unknown_fading_channel_is_measured_once_and_cached(quantizer, monkeypatch):
    """A (channel, budget) not in the table: only the MCSs the bisection visits are measured."""
    import meg_lightning.schemes.ldpc as ldpc

    calls = []
    monkeypatch.setattr(ldpc, "_FADING_CACHE", {})
    monkeypatch.setattr(ldpc, "measure_threshold_db",
                        lambda n, m, **k: calls.append((n, m, k["channel"].num_blocks)) or 2.0 * m)
    s = LatentDigitalScheme(None, IDENT, SYMBOLS, quantizer=quantizer)
    ch = rayleigh(9.0, blocks=3)
    assert s.choose_mcs_fading(ch) == 4  # thresholds 0, 2, ..., 18 dB: the highest <= 9 dB
    assert len(calls) <= math.ceil(math.log2(len(s.feasible))) + 1
    n = len(calls)
    s.choose_mcs_fading(rayleigh(9.0, blocks=3))
    assert len(calls) == n


# ----------------------------------------------------------------------------- digital-csit


def test_digital_csit_is_registered_in_the_digital_family():
    cls = SCHEMES["digital-csit"]
    assert cls is LatentDigitalCSIT and issubclass(cls, LatentDigitalScheme)
    for prop in ("digital", "channel_code", "uses_fc", "yields_latent", "analog"):
        assert getattr(cls, prop) == getattr(SCHEMES["digital"], prop)


def test_digital_csit_meets_the_target_and_carries_more(quantizer):
    z = latents(N, seed=6)
    csit = LatentDigitalCSIT(None, IDENT, SYMBOLS, quantizer=quantizer)
    out = csit(z, z, channel=rayleigh(20.0), generator=gen(9))
    assert float(out.info["bler"].mean()) <= TARGET_BLER + TOL
    assert len(set(out.info["mcs"].tolist())) > 2  # the MCS follows each image's fade
    again = csit(z[:16], z[:16], channel=rayleigh(20.0), generator=gen(9))
    first = csit(z[:16], z[:16], channel=rayleigh(20.0), generator=gen(9))
    assert torch.equal(first.z_hat, again.z_hat)
    plain = LatentDigitalScheme(None, IDENT, SYMBOLS, quantizer=quantizer)
    assert out.info["payload_bits"].mean() > plain.link(plain.choose_mcs_fading(
        rayleigh(20.0))).info_bits
    # on AWGN the SNR is all the state there is: exactly digital
    a = csit(z[:16], z[:16], channel=make_channel("awgn", snr_db=12.0), generator=gen(3))
    b = plain(z[:16], z[:16], channel=make_channel("awgn", snr_db=12.0), generator=gen(3))
    assert torch.equal(a.z_hat, b.z_hat)


def test_digital_csit_choice_is_the_instantaneous_snr_rule(quantizer):
    csit = LatentDigitalCSIT(None, IDENT, SYMBOLS, quantizer=quantizer)
    table = MEASURED_THRESHOLDS_DB[N_COMPLEX]
    g = torch.tensor([[1e-4], [0.1], [1.0], [3.0]], dtype=torch.float64)
    chosen = csit.choose_mcs_csit(g.numpy(), 10.0)
    for gain, m in zip(g[:, 0].tolist(), chosen):
        assert m == table_choice(table, 10.0 + 10 * math.log10(gain))


# ----------------------------------------------------------------------------- a rate too small


def test_a_rate_no_mcs_fits_is_a_one_line_exit_2(make_cfg, tiny_pipe, monkeypatch, capsys,
                                                 tmp_path):
    from meg_lightning.cli import run
    from meg_lightning.data.datamodule import TensorLatentDataModule
    import meg_lightning.evaluation.sweep as sweep

    monkeypatch.setattr(sweep, "_default_datamodule",
                        lambda cfg: TensorLatentDataModule(torch.randn(30, 4, 8, 8),
                                                           test_fraction=0.2))
    monkeypatch.setattr(sweep, "_default_vae", lambda cfg, device: tiny_pipe.vae)
    out = tmp_path / "runs"
    args = [f"out_dir={out}", "model=tiny", "logger=none", "generation.device=cpu",
            "eval.schemes=[linear,digital]", "eval.fcs=[0.5]", "eval.scheme_fcs={digital: [0.01]}",
            "eval.snrs_db=[10]", "eval.channels=[rayleigh]", "eval.num_images=4"]
    assert run(["eval", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "eval.scheme_fcs.digital=0.01" in err and "LDPC" in err, err
    assert not out.exists()  # checked before anything is written
    with pytest.raises(ConfigError, match="eval.fcs"):
        class Ctx:  # the rate from eval.fcs
            cfg = make_cfg("eval.fcs=[0.01]")
            numel = 256
            z_train = staticmethod(lambda: latents(8))
            decode_image = staticmethod(IDENT)

        LatentDigitalCSIT.build(Ctx, 0.01)


# ----------------------------------------------------------------------------- the report


def test_report_shows_the_outage_against_the_target():
    lo, hi = wilson_interval(0.1, 128)
    assert lo < 0.1 < hi and hi - lo < 0.12
    base = dict(channel="rayleigh", fc=0.5, symbols=128, n_images=128, success=0.9,
                psnr_db=20.0, latent_mse=0.1, payload_bits=50)
    rows = [dict(base, scheme="digital", snr_db=20.0, mcs=5, bler=0.06),
            dict(base, scheme="digital", snr_db=10.0, mcs=1, bler=0.12),
            dict(base, scheme="digital", snr_db=0.0, mcs=0, bler=0.31),
            dict(base, scheme="digital-csit", snr_db=0.0, mcs=2.4, bler=0.3),
            dict(base, scheme="linear", snr_db=0.0)]
    text = "\n".join(digital_lines(rows))
    assert "16QAM 2/3" in text and "mean index 2.4" in text and "linear" not in text
    assert "| yes |" in text and "yes (within the interval)" in text
    assert "no: no MCS meets it here" in text
    assert "`digital` fc=0.5 on rayleigh is above the 10% target at 0 dB." in text
    assert "`digital-csit` fc=0.5 on rayleigh is above the 10% target at 0 dB." in text
