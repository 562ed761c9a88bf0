"""NOMA through the channel layer (issue 26): superposed seeds on each user's own channel, the
weak user's receiver, the strong user's LMMSE / re-encoding SIC, digital codeword SIC."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_refused

from meg_lightning.channels import make as make_channel
from meg_lightning.codecs import LinearCode
from meg_lightning.codecs.base import code_length
from meg_lightning.multiuser.access import noma_links
from meg_lightning.multiuser.noma import (
    KEYS,
    DigitalNomaUser,
    NomaLink,
    NomaUser,
    design_snr_db,
    scramble,
    seed_of,
    supports,
)
from meg_lightning.schemes.base import LatentTransmission
from meg_lightning.schemes.digital import LatentDigitalScheme
from meg_lightning.schemes.digital_csit import LatentDigitalCSIT
from meg_lightning.schemes.feature import FeatureLatentScheme
from meg_lightning.schemes.linear import LinearScheme

LATENT = (4, 8, 8)  # the tiny preset's latent shape, |z| = 256


def _identity(z):
    return z


@pytest.fixture(scope="module")
def world():
    torch.manual_seed(0)
    z_train = torch.randn(300, *LATENT)
    z = torch.randn(8, *LATENT)
    return z_train, z, z.new_zeros(8, 3, 4, 4)


def _unit(x):
    return x / x.pow(2).mean(1, keepdim=True).sqrt()


@pytest.mark.parametrize("kind", ["awgn", "rayleigh"])
def test_weak_users_measured_sinr_matches_theory_and_lmmse_sic_removes_nothing(kind):
    """Weak user: (x_hat - x)^2 has mean 1 / SINR, SINR = p_w g / (p_s g + sigma^2), per fading
    block (pooled over blocks of similar gain); the strong user's LMMSE SIC leaves exactly the
    SINR of treating the weak seed as noise, p_s g / (p_w g + sigma^2)."""
    B, k, snr, p_w = 3000, 64, 5.0, 0.8
    p_s, s2 = 1 - p_w, 10 ** (-snr / 10)
    g = torch.Generator().manual_seed(0)
    x_w, x_s = _unit(torch.randn(B, k, generator=g)), _unit(torch.randn(B, k, generator=g))
    ch = make_channel(kind, snr_db=snr)
    for p_t, p_o, x, other, receiver in ((p_w, p_s, x_w, x_s, "noise"),
                                         (p_s, p_w, x_s, x_w, "lmmse")):
        out = NomaLink(ch, p_t, p_o, other, told=1.0, snr_db=0.0, receiver=receiver)(
            x, mode="eval", generator=torch.Generator().manual_seed(1))
        gain = out["h"].abs().pow(2).double()  # (B, 1): one block per seed
        sinr = p_t * gain / (p_o * gain + s2)
        err = (out["x_hat"] - x).double().pow(2) * sinr  # unit mean for every block
        # reported SINR per block = the theory
        assert torch.allclose(10 ** (out["csi_db"].double() / 10), sinr, rtol=1e-5)
        bins = [torch.ones(B, dtype=torch.bool)] if kind == "awgn" else [
            (gain[:, 0] >= lo) & (gain[:, 0] < hi)
            for lo, hi in ((0, 0.3), (0.3, 1.0), (1.0, math.inf))]
        for b in bins:
            n = int(b.sum()) * k
            # mean of n chi-square(1)-like terms: std <= sqrt(2 / n); 5 sigma
            assert abs(float(err[b].mean()) - 1) < 5 * math.sqrt(2 / n), (kind, receiver)
    noise = NomaLink(ch, p_s, p_w, x_w, told=1.0, snr_db=0.0, receiver="noise")(
        x_s, mode="eval", generator=torch.Generator().manual_seed(1))["x_hat"]
    lmmse = NomaLink(ch, p_s, p_w, x_w, told=1.0, snr_db=0.0, receiver="lmmse")(
        x_s, mode="eval", generator=torch.Generator().manual_seed(1))["x_hat"]
    assert torch.allclose(noise, lmmse, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["awgn", "rayleigh"])
def test_noma_with_all_power_to_one_user_equals_that_user_alone(world, kind):
    """p = 1 for one user of the pair: its NOMA link is its single-user link (same draws, same
    z_hat), for an analog and the digital scheme, on AWGN and on Rayleigh fading."""
    z_train, z, i_0 = world
    schemes = [FeatureLatentScheme(_identity),
               LinearScheme(LinearCode.fit(z_train, 0.5), _identity, fc=0.5),
               LatentDigitalScheme(z_train, _identity, code_length(0.5, 256), fc=0.5)]
    for scheme in schemes:
        for weak_power, who in ((1.0, 1), (0.0, 0)):
            links = noma_links([15.0, 5.0], weak_power=weak_power)
            cls = DigitalNomaUser if scheme.digital else NomaUser
            user = cls(scheme, links[who], scheme, links[1 - who], z, i_0)
            ch = make_channel(kind, snr_db=links[who].avg_snr_db)
            alone = scheme(z, i_0, channel=ch, generator=torch.Generator().manual_seed(4))
            noma = user(z, i_0, channel=ch, generator=torch.Generator().manual_seed(4))
            assert torch.equal(alone.z_hat, noma.z_hat), (type(scheme).__name__, weak_power)
            assert user.snr_db == links[who].avg_snr_db


@pytest.mark.parametrize("kind", ["awgn", "rayleigh"])
def test_digital_sic_with_a_decoded_weak_codeword_is_the_interference_free_link(world, kind):
    """The strong user decodes the weak codeword, re-encodes and subtracts it: where it decoded,
    the strong user's result is exactly its link alone at p_s (same noise seed, same bits and
    z_hat); where it failed, the image is counted and decoded with the weak codeword as noise."""
    z_train, z, i_0 = world
    scheme = LatentDigitalScheme(z_train, _identity, code_length(0.5, 256), fc=0.5)
    snr = 22.0 if kind == "awgn" else 20.0
    strong, weak = noma_links([snr, snr - 8], weak_power=0.8)
    user = DigitalNomaUser(scheme, strong, scheme, weak, z, i_0)
    assert user.cancels and user.snr_db == design_snr_db(strong, True)
    out = user(z, i_0, channel=make_channel(kind, snr_db=strong.avg_snr_db),
               generator=torch.Generator().manual_seed(7))
    free = scheme(z, i_0, channel=make_channel(kind, snr_db=strong.avg_snr_db + 10 * math.log10(
        strong.power)), generator=torch.Generator().manual_seed(7))
    ok = out.info["sic_failed"] == 0
    if kind == "awgn":
        assert bool(ok.all())
    assert int(ok.sum()) >= 2
    assert torch.equal(out.z_hat[ok], free.z_hat[ok])
    assert torch.equal(out.info["bler"][ok], free.info["bler"][ok])
    # at a low SNR the weak codeword fails at the strong user: counted, nothing subtracted
    strong, weak = noma_links([-6.0, -12.0], weak_power=0.8)
    low = DigitalNomaUser(scheme, strong, scheme, weak, z, i_0)(
        z, i_0, channel=make_channel(kind, snr_db=-6.0), generator=torch.Generator().manual_seed(7))
    assert float(low.info["sic_failed"].mean()) > 0.5


class SignCode(LatentTransmission):
    """A code with structure a decoder can use: x = sign(z) (one real symbol per entry), the
    decoder z_hat = sign(x_hat); re-encoding a correct decision gives the sent seed exactly."""

    analog = uses_fc = True
    fc = 1.0

    def __init__(self):
        self.decode_image = _identity

    @torch.no_grad()
    def transmit(self, z, *, channel, generator):
        x = torch.sign(z).flatten(1)  # (B, |z|)
        x_hat = channel(x, mode="eval", generator=generator)["x_hat"]
        return torch.sign(x_hat).reshape(z.shape), x.shape[1]


def test_structured_sic_cancels_what_lmmse_sic_cannot(world):
    """Strong user at 30 dB (linear code), weak user at 20 dB with a structured code, p_w = 0.95:
    the LMMSE SIC leaves the strong user at SINR p_s / p_w = 0.05; decoding the weak seed (SINR
    about 19 for its signs, a few wrong where the linear seed peaks), re-encoding and subtracting
    it leaves nearly the interference-free link."""
    z_train, z, i_0 = world
    own = LinearScheme(LinearCode.fit(z_train, 1.0), _identity, fc=1.0, power="seed")
    strong, weak = noma_links([30.0, 20.0], weak_power=0.95)
    mse = {}
    for sic in ("lmmse", "reencode"):
        user = NomaUser(own, strong, SignCode(), weak, z, i_0, sic=sic)
        assert user.cancels == (sic == "reencode")
        out = user(z, i_0, channel=make_channel("awgn", snr_db=30.0),
                   generator=torch.Generator().manual_seed(2))
        mse[sic] = float((out.z_hat - z).pow(2).mean())
    free = own(z, i_0, channel=make_channel("awgn", snr_db=30.0 + 10 * math.log10(strong.power)),
               generator=torch.Generator().manual_seed(2))
    mse["free"] = float((free.z_hat - z).pow(2).mean())
    assert mse["reencode"] < 3 * mse["free"] and mse["reencode"] < mse["lmmse"] / 10, mse


def test_per_user_transmit_powers_never_exceed_the_budget(world):
    """Every recorded seed has unit power per sample, so user u sends p_u <= 1 and a pair
    p_w + p_s = 1, for every power split; the digital codewords have unit energy per symbol."""
    z_train, z, i_0 = world
    ch = make_channel("rayleigh", snr_db=10.0)
    for scheme in (FeatureLatentScheme(_identity),
                   LinearScheme(LinearCode.fit(z_train, 0.5), _identity, fc=0.5,
                                power="seed")):
        raw, scale = seed_of(scheme, z, i_0, ch, 10.0)
        assert torch.allclose((raw / scale.unsqueeze(1)).pow(2).mean(1), torch.ones(len(z)),
                              atol=1e-5)
    for weak_power in (0.0, 0.3, 0.8, 1.0):
        links = noma_links([12.0, 2.0], weak_power=weak_power)
        assert all(0 <= link.power <= 1 for link in links)
        assert sum(link.power for link in links) == pytest.approx(1.0)
    # the scramblers are orthogonal: the same power on the channel, undone exactly
    x = torch.randn(5, 130)
    for groups in (1, 5, 65):
        for key in KEYS.values():
            s = scramble(x, key, groups)
            assert torch.allclose(s.pow(2).sum(1), x.pow(2).sum(1), rtol=1e-5)
            assert torch.allclose(scramble(s, key, groups, inverse=True), x, atol=1e-5)
    digital = LatentDigitalScheme(z_train, _identity, code_length(0.5, 256), fc=0.5)
    link = digital.link(digital.choose_mcs(10.0))
    x = link.encode(digital.quantizer.quantise(z, link.info_bits))
    assert float(x.abs().pow(2).mean()) == pytest.approx(1.0, abs=0.15)
    assert supports(LatentDigitalScheme) and supports(LinearScheme)
    assert not supports(LatentDigitalCSIT)


def _cfg(tmp_path, *extra):
    from meg_lightning.cli import compose_for

    base = [f"data.cache_dir={tmp_path / 'cache'}", f"out_dir={tmp_path / 'runs'}",
            "logger=none", "generation.device=cpu"]
    return compose_for("eval-multiuser", base + list(extra))


def test_sweep_runs_digital_and_fading_noma_and_p1_is_the_single_user_cell(tmp_path, tiny_pipe):
    """The sweep runs digital under NOMA on Rayleigh fading; with all power to the weak user its
    row is the single-user cell at its average SNR with its seed."""
    from meg_lightning.data.datamodule import TensorLatentDataModule
    from meg_lightning.evaluation.cell_metrics import run_cell
    from meg_lightning.evaluation.cells import Cell
    from meg_lightning.evaluation.inputs import default_channel
    from meg_lightning.generation import decode_latents
    from meg_lightning.metrics import extract_features, make_feature_extractor
    from meg_lightning.multiuser.sweep import run_multiuser, user_seed

    def decode(zz):
        return decode_latents(tiny_pipe.vae, zz)

    dm = TensorLatentDataModule(torch.randn(300, *LATENT), test_fraction=0.05)
    common = ["eval.snrs_db=[10]", "eval.channels=[rayleigh]", "eval.fcs=[0.5]",
              "eval.num_images=4", "eval.batch_size=2", "eval.fid_features=pixels",
              "data.num_prompts=300", "users.ks=[2]", "users.accesses=[noma]"]
    cfg = _cfg(tmp_path, "eval.schemes=[digital,linear]", *common)
    rows, _ = run_multiuser(cfg, datamodule=dm, decode_image=decode, progress=False)
    got = {(r["scheme"], r["role"]) for r in rows}
    assert got == {("digital", "strong"), ("digital", "weak"), ("linear", "strong"),
                   ("linear", "weak")}
    assert all(math.isfinite(r["psnr_db"]) for r in rows)
    by = {(r["scheme"], r["role"]): r for r in rows}
    assert by[("digital", "strong")]["link_snr_db"] == pytest.approx(15 + 10 * math.log10(0.2))

    cfg = _cfg(tmp_path, "eval.schemes=[feature]", "users.noma_power=1.0", *common)
    rows, _ = run_multiuser(cfg, datamodule=dm, decode_image=decode, progress=False)
    weak = next(r for r in rows if r["role"] == "weak")
    assert next(r for r in rows if r["role"] == "strong")["note"] == "no power"
    dm.setup("test")
    z = torch.stack([dm.dataset("test")[i]["z"] for i in range(4)])
    i_0 = decode(z)
    extractor = make_feature_extractor("pixels")
    cell = Cell("feature", "rayleigh", 10.0, None)
    m, _ = run_cell(cell, FeatureLatentScheme(decode), default_channel(cfg, "rayleigh", 5.0), z,
                    i_0, extract_features(extractor, i_0), extractor=extractor, batch_size=2,
                    seed=user_seed(cfg.seed, cell, weak["user"]), bootstrap=0, device="cpu")
    assert weak["psnr_db"] == m["psnr_db"] and weak["avg_snr_db"] == 5.0


@pytest.mark.parametrize("override, needle", [
    ("eval.channels=[none]", "users.accesses"),
    ("channel.equalizer=none", "channel.equalizer"),
    ("users.sic=perfect", "users.sic"),
])
def test_noma_on_a_refused_channel_one_line_exit_2(tmp_path, capsys, override, needle):
    assert_refused(capsys, ["eval-multiuser", f"out_dir={tmp_path / 'runs'}", "logger=none",
                            override], needle, tmp_path / "runs")
