"""Multi-user access (issue 26, first slice): TDMA, NOMA, the users-served sweep, users.* errors."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_refused

from meg_lightning.channels import make as make_channel
from meg_lightning.evaluation.cells import Cell, cell_seed
from meg_lightning.multiuser.access import (
    Slot,
    UserLink,
    frame_energy,
    jain_index,
    noma_links,
    pairs,
    plan_frame,
    tdma_links,
    user_snrs,
)
from meg_lightning.schemes.feature import FeatureLatentScheme
from meg_lightning.schemes.linear import LinearScheme

LATENT = (4, 8, 8)  # the tiny preset's latent shape


def _cfg(tmp_path, *extra):
    from meg_lightning.cli import compose_for

    base = [f"data.cache_dir={tmp_path / 'cache'}", f"out_dir={tmp_path / 'runs'}",
            "logger=none", "generation.device=cpu"]
    return compose_for("eval-multiuser", base + list(extra))


def test_jain_index_on_known_vectors():
    assert jain_index([1, 1, 1, 1]) == pytest.approx(1.0)
    assert jain_index([1, 0, 0, 0]) == pytest.approx(0.25)
    assert jain_index([1, 2, 3]) == pytest.approx(36 / (3 * 14))
    assert jain_index([3.0]) == pytest.approx(1.0)
    assert math.isnan(jain_index([])) and math.isnan(jain_index([0, 0]))


def test_user_snrs_pairs_and_links():
    assert user_snrs(10.0, 1, spread_db=10) == [10.0]
    assert user_snrs(10.0, 3, spread_db=10) == [15.0, 10.0, 5.0]
    assert user_snrs(0.0, 2, snrs_db=[3, -1]) == [3.0, -1.0]
    assert pairs([15.0, 12.0, 8.0, 5.0]) == [(0, 3), (1, 2)]
    assert pairs([1.0, 9.0, 5.0]) == [(1, 0), (2,)]
    links = noma_links([15.0, 5.0], weak_power=0.8)
    assert (links[0].role, links[0].power, links[1].role, links[1].power) == \
        ("strong", pytest.approx(0.2), "weak", 0.8)
    # weak: p_w g / (p_s g + sigma^2), g = 1
    s2 = 10 ** (-0.5)
    assert links[1].snr_db == pytest.approx(10 * math.log10(0.8 / (0.2 + s2)))
    # TDMA and one NOMA user alone keep the single-user link exactly
    assert tdma_links([7.25])[0] == UserLink(0, 7.25, 1.0)
    assert plan_frame("noma", [7.25])[0].snr_db == 7.25


@pytest.mark.parametrize("access", ["tdma", "noma"])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 7, 16])
def test_per_user_powers_never_exceed_the_frame_budget(access, k):
    for weak in (0.0, 0.5, 0.8, 1.0):
        links = plan_frame(access, user_snrs(5.0, k, spread_db=12), weak_power=weak)
        assert len(links) == k
        assert all(0 <= link.power <= 1 and 0 < link.share <= 1 for link in links)
        assert frame_energy(links) <= 1 + 1e-9
        assert frame_energy(links) == pytest.approx(1.0)
    shares = [0.5, 0.3, 0.2]
    assert frame_energy(tdma_links([0, 0, 0], shares)) == pytest.approx(1.0)


def test_noma_with_all_power_to_one_user_equals_that_user_alone():
    """p_w = 1: the weak user's link is its single-user link (same SNR, same draws -> same
    z_hat); the strong user gets no power."""
    weak, strong = noma_links([20.0, 0.0], weak_power=1.0)[::-1]
    assert weak.role == "weak" and weak.snr_db == 0.0 and strong.power == 0.0
    assert strong.snr_db == -math.inf
    z = torch.randn(6, *LATENT)
    scheme = FeatureLatentScheme(lambda zz: zz)
    alone = scheme.transmit(z, channel=make_channel("awgn", snr_db=0.0),
                            generator=torch.Generator().manual_seed(3))[0]
    noma = scheme.transmit(z, channel=make_channel("awgn", snr_db=weak.snr_db),
                           generator=torch.Generator().manual_seed(3))[0]
    assert torch.equal(alone, noma)


def test_slot_sends_the_first_symbols_and_zero_fills():
    ch = make_channel("awgn", snr_db=200.0)
    x = torch.randn(3, 10)
    out = Slot(ch, 4)(x, mode="eval", generator=torch.Generator().manual_seed(0))["x_hat"]
    assert torch.allclose(out[:, :4], x[:, :4], atol=1e-6) and (out[:, 4:] == 0).all()
    assert Slot(ch, 4).snr_db == 200.0  # everything else is the channel's


def _world(tmp_path, tiny_pipe, *extra):
    from meg_lightning.data.datamodule import TensorLatentDataModule
    from meg_lightning.generation import decode_latents

    cfg = _cfg(tmp_path, "eval.schemes=[feature,linear]", "eval.snrs_db=[10]",
               "eval.channels=[awgn]", "eval.fcs=[0.5]", "eval.num_images=4",
               "eval.batch_size=2", "eval.fid_features=pixels", "data.num_prompts=300",
               "users.ks=[1,2]", "users.psnr_target_db=5", *extra)
    dm = TensorLatentDataModule(torch.randn(300, *LATENT), test_fraction=0.05)

    def decode(z):
        return decode_latents(tiny_pipe.vae, z)

    return cfg, dm, decode


def test_k1_reproduces_the_single_user_cell_and_tdma_equals_the_reduced_budget(
        tmp_path, tiny_pipe):
    """K = 1: the single-user cell's seed and link -> identical z_hat and PSNR; TDMA with equal
    shares (K = 2): each user is the single-user scheme at fc / K."""
    from meg_lightning.evaluation.cell_metrics import run_cell
    from meg_lightning.evaluation.inputs import default_channel
    from meg_lightning.metrics import extract_features, make_feature_extractor
    from meg_lightning.multiuser.sweep import run_multiuser, user_outputs, user_seed

    cfg, dm, decode = _world(tmp_path, tiny_pipe)
    rows, served = run_multiuser(cfg, datamodule=dm, decode_image=decode, progress=False)
    dm.setup("test")
    z = torch.stack([dm.dataset("test")[i]["z"] for i in range(4)])
    i_0 = decode(z)
    extractor = make_feature_extractor("pixels")
    feats = extract_features(extractor, i_0)
    z_train = torch.stack([dm.dataset("train")[i]["z"] for i in range(len(dm.dataset("train")))])
    from meg_lightning.codecs import LinearCode

    def single(scheme, cell, seed):
        ch = default_channel(cfg, cell.channel, cell.snr_db)
        m, _ = run_cell(cell, scheme, ch, z, i_0, feats, extractor=extractor, batch_size=2,
                        seed=seed, bootstrap=0, device="cpu")
        return m, user_outputs(scheme, ch, z, i_0, seed=seed, batch_size=2)

    by = {(r["scheme"], r["access"], r["k"], r["user"]): r for r in rows}
    cell = Cell("linear", "awgn", 10.0, 0.5)
    lin = LinearScheme(LinearCode.fit(z_train, 0.5), decode, fc=0.5)
    m, outs = single(lin, cell, cell_seed(cfg.seed, cell.key))
    assert user_seed(cfg.seed, cell, 0) == cell_seed(cfg.seed, cell.key)
    for access in ("tdma", "noma"):
        assert by[("linear", access, 1, 0)]["psnr_db"] == m["psnr_db"]
    again = user_outputs(lin, default_channel(cfg, "awgn", 10.0), z, i_0,
                         seed=user_seed(cfg.seed, cell, 0), batch_size=2)
    assert all(torch.equal(a.z_hat, b.z_hat) for a, b in zip(outs, again))
    # TDMA, K = 2, equal shares: user u (SNR 15 / 5 dB) is linear at fc 0.25 alone
    lin_q = LinearScheme(LinearCode.fit(z_train, 0.25), decode, fc=0.25)
    for u, snr in ((0, 15.0), (1, 5.0)):
        row = by[("linear", "tdma", 2, u)]
        assert (row["rate"], row["share"], row["avg_snr_db"]) == (0.25, 0.5, snr)
        mu, _ = run_cell(cell, lin_q, default_channel(cfg, "awgn", snr), z, i_0, feats,
                         extractor=extractor, batch_size=2, seed=user_seed(cfg.seed, cell, u),
                         bootstrap=0, device="cpu")
        assert row["psnr_db"] == mu["psnr_db"]
    # feature (no rate): K = 2 sends half its symbols per user
    assert by[("feature", "tdma", 2, 1)]["symbols"] == 128
    assert {r["k"] for r in served} == {1, 2}
    out = tmp_path / "runs" / "multiuser"
    assert {p.name for p in out.iterdir()} >= {"results.csv", "served.csv", "users_served.png",
                                               "summary.md", "config.yaml"}
    assert "| linear | 0.5 | tdma | awgn |" in (out / "summary.md").read_text()


@pytest.mark.parametrize("override, needle", [
    ("users.k=0", "users.k"),
    ("users.access=cdma", "users.access"),
    ("users.shares=[0.5,0.6]", "users.shares"),
    ("users.snrs_db=[1,2,3]", "users.snrs_db"),
    ("users.noma_power=1.5", "users.noma_power"),
    ("users.ks=[1,1]", "users.ks"),
    ("users.accesses=[tdma,fdma]", "users.accesses"),
    ("users.accuracy_target=2", "users.accuracy_target"),
])
def test_bad_users_values_one_line_exit_2(tmp_path, capsys, override, needle):
    extra = ["users.k=2"] if "shares" in override or "snrs" in override else []
    assert_refused(capsys, ["eval-multiuser", f"out_dir={tmp_path / 'runs'}", "logger=none",
                            *extra, override], needle, tmp_path / "runs")


def test_noma_runs_on_fading_channels_and_is_refused_on_the_noiseless_one(tmp_path):
    from meg_lightning.errors import ConfigError
    from meg_lightning.multiuser.sweep import check_access

    check_access(_cfg(tmp_path, "eval.channels=[awgn,rayleigh,tdl]"))
    with pytest.raises(ConfigError, match="users.accesses"):
        check_access(_cfg(tmp_path, "eval.channels=[awgn,none]"))
    check_access(_cfg(tmp_path, "eval.channels=[none]", "users.accesses=[tdma]"))


def test_single_user_defaults_unchanged(tmp_path):
    """The users section exists only for eval-multiuser; its defaults are one user."""
    cfg = _cfg(tmp_path)
    assert (cfg.users.k, cfg.users.snrs_db, cfg.users.access, cfg.users.shares) == \
        (1, None, "tdma", None)
    from meg_lightning.compose import load_config

    assert not hasattr(load_config([]), "users")


def test_the_sweep_stops_at_the_first_k_that_misses(tmp_path, tiny_pipe):
    """users.stop_at_miss: an unreachable target is missed at K = 1, so K = 2 is not run (users
    served 0 either way); stop_at_miss=false runs every K."""
    from meg_lightning.multiuser.sweep import run_multiuser, users_served

    for stop, ks in ((True, {1}), (False, {1, 2})):
        cfg, dm, decode = _world(tmp_path / str(stop), tiny_pipe, "eval.schemes=[linear]",
                                 "users.psnr_target_db=200", f"users.stop_at_miss={stop}")
        rows, served = run_multiuser(cfg, datamodule=dm, decode_image=decode, progress=False)
        assert {r["k"] for r in rows} == ks
        assert set(users_served(served).values()) == {0}
