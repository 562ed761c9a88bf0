"""The learned allocation across users (issue 26 item 3): the closed-form quality model, the
budget, the baselines' defining properties, PPO beating equal shares, the CLI's refusals."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_refused

from meg_lightning.codecs.klt import LinearCode
from meg_lightning.multiuser.allocation import (
    FrameSpec,
    LinearQuality,
    allocation,
    draw_frames,
    equal_action,
    evaluate,
    inversion_action,
    jain,
    objective,
    optimise_actions,
    user_quality,
)


@pytest.fixture(scope="module")
def latents():
    torch.manual_seed(0)
    return torch.randn(200, 4, 8, 8) * torch.linspace(0.05, 2.0, 256).reshape(4, 8, 8)


@pytest.fixture(scope="module")
def quality(latents):
    return LinearQuality.from_latents(latents)


def test_quality_is_the_linear_codes_closed_form(latents, quality):
    """At every integer symbol count and SNR the batched model is LinearCode.expected_mse."""
    for fc in (1 / 256, 0.1, 0.25, 0.5, 1.0):
        code = LinearCode.fit(latents, fc)
        for snr_db in (-10.0, 0.0, 7.5, 30.0):
            got = float(quality.mse(torch.tensor(float(code.k)), torch.tensor(10 ** (snr_db / 10))))
            assert got == pytest.approx(code.expected_mse(snr_db), rel=1e-7)
    # nothing sent (no symbol or no power): the source's variance, quality 0 dB
    assert float(quality.mse(torch.tensor(0.0), torch.tensor(100.0))) == pytest.approx(quality.var)
    assert float(quality.quality_db(torch.tensor(64.0), torch.tensor(0.0))) == pytest.approx(0.0)


def test_fractional_symbols_time_share_between_codes(quality):
    m, snr = torch.tensor([40.0, 41.0, 40.25]), torch.tensor(10.0)
    d = quality.mse(m, snr)
    assert float(d[2]) == pytest.approx(0.75 * float(d[0]) + 0.25 * float(d[1]))
    # more symbols or more SNR never hurt
    grid = quality.mse(torch.arange(0, 257, dtype=torch.float64), torch.tensor(10.0))
    assert bool((grid[1:] <= grid[:-1] + 1e-12).all())


@pytest.mark.parametrize("access, k", [("tdma", 4), ("noma", 4), ("noma", 5)])
def test_allocations_never_exceed_the_frame(access, k):
    """Slot and energy shares are on the simplex for any action: the frame's uses and energy
    are never exceeded, and no user's share is negative."""
    spec = FrameSpec(k=k, access=access, n_symbols=128, snr_db=(0, 20))
    a = 5 * torch.randn(1000, spec.action_dim, generator=torch.Generator().manual_seed(1))
    al = allocation(spec, a)
    for key in ("share", "energy"):
        assert torch.allclose(al[key].sum(-1), torch.ones(1000, dtype=torch.float64))
        assert bool((al[key] >= 0).all())
    assert bool(((al["weak"] >= 0) & (al["weak"] <= 1)).all())


def test_equal_tdma_is_each_user_alone_at_the_reduced_budget(quality):
    spec = FrameSpec(k=4, access="tdma", n_symbols=128, snr_db=(0, 20))
    gamma = draw_frames(spec, 64, torch.Generator().manual_seed(2))
    q = user_quality(spec, quality, gamma, allocation(spec, equal_action(spec, 64)))
    assert torch.allclose(q, quality.quality_db(torch.tensor(32.0), gamma))


def test_noma_with_all_power_to_one_user_is_that_user_alone(quality):
    spec = FrameSpec(k=2, access="noma", n_symbols=128, snr_db=(0, 20), noma_power=1.0)
    gamma = draw_frames(spec, 64, torch.Generator().manual_seed(3))
    q = user_quality(spec, quality, gamma, allocation(spec, equal_action(spec, 64)))
    # the weak user (rank 1) alone in the whole frame; the strong one gets nothing (0 dB)
    assert torch.allclose(q[:, 1], quality.quality_db(torch.tensor(128.0), gamma[:, 1]), atol=1e-6)
    assert torch.allclose(q[:, 0], torch.zeros(64, dtype=torch.float64), atol=1e-4)


def test_inversion_equalises_received_snr(quality):
    tdma = FrameSpec(k=4, access="tdma", n_symbols=128, snr_db=(-5, 25))
    gamma = draw_frames(tdma, 32, torch.Generator().manual_seed(4))
    al = allocation(tdma, inversion_action(tdma, gamma))
    received = al["energy"] / al["share"] * gamma
    assert torch.allclose(received, received[:, :1].expand_as(received), rtol=1e-9)
    q = user_quality(tdma, quality, gamma, al)
    assert float(jain(q).min()) == pytest.approx(1.0)
    for noma_power in (0.8, 1.0):  # the zero action's weak power does not move the solution
        noma = FrameSpec(k=2, access="noma", n_symbols=128, snr_db=(-5, 25),
                         noma_power=noma_power)
        q = user_quality(noma, quality, gamma[:, :2],
                         allocation(noma, inversion_action(noma, gamma[:, :2])))
        assert torch.allclose(q[:, 0], q[:, 1], atol=1e-6)


def test_per_frame_optimiser_never_loses_to_its_start(quality):
    spec = FrameSpec(k=3, access="tdma", n_symbols=64, snr_db=(0, 20))
    gamma = draw_frames(spec, 32, torch.Generator().manual_seed(5))
    for kind in ("mean", "maxmin"):
        start = equal_action(spec, 32)
        best = optimise_actions(spec, quality, gamma, kind, start, steps=50)
        res = evaluate(spec, quality, gamma, kind, {"equal": start, "opt": best})
        assert bool((res["opt"]["objective"] >= res["equal"]["objective"] - 1e-12).all())
    assert objective(torch.tensor([[1.0, 3.0]]), "maxmin").item() == 1.0
    assert objective(torch.tensor([[1.0, 3.0]]), "mean").item() == 2.0


def _render(z):
    """A fixed smooth 'VAE': latents (B, 4, 8, 8) -> images (B, 3, 16, 16) in [0, 1]."""
    w = torch.linspace(-1, 1, 12).reshape(3, 4, 1, 1)
    x = torch.nn.functional.conv2d(z.float(), w)
    return torch.sigmoid(torch.nn.functional.interpolate(x, scale_factor=2))


def test_image_check_sends_what_the_allocation_gives(latents):
    """At a very high SNR a user with all the components gets its image back; a user given no
    symbols decodes the code's prior mean, exactly."""
    from meg_lightning.metrics.image import psnr_per_image
    from meg_lightning.multiuser.learn import image_psnr

    code = LinearCode.fit(latents, 1.0)
    spec = FrameSpec(k=2, access="tdma", n_symbols=512, snr_db=(80, 80), channel="awgn")
    gamma = torch.full((3, 2), 1e8, dtype=torch.float64)
    z, i_0 = latents[:6], _render(latents[:6])
    psnr = image_psnr(spec, code, gamma, equal_action(spec, 1)[0], z, i_0, _render, seed=0)
    assert bool((psnr > 60).all())
    starve = torch.tensor([20.0, -20.0, 20.0, -20.0], dtype=torch.float64)
    psnr = image_psnr(spec, code, gamma, starve, z, i_0, _render, seed=0)
    prior = _render(code.mean.reshape(1, 4, 8, 8).expand(3, -1, -1, -1))
    want, _ = psnr_per_image(prior, i_0[[1, 3, 5]])
    assert torch.allclose(psnr[:, 1].float(), want.float(), atol=1e-4)
    assert bool((psnr[:, 0] > 60).all())


def _cfg(tmp_path, *extra):
    from meg_lightning.cli import compose_for

    return compose_for("train-alloc", [f"out_dir={tmp_path / 'runs'}", "logger=none",
                                       "users.k=2", *extra])


def test_ppo_beats_equal_shares_on_held_out_frames(tmp_path, quality, latents):
    """A short run (K = 2, TDMA, max-min): the learned policy's objective is above equal
    shares' on held-out frames beyond the paired 95% interval; the outputs are written; a rerun
    resumes the finished checkpoint, trains nothing and gives the same numbers."""
    from meg_lightning.multiuser.allocation import spec_from
    from meg_lightning.multiuser.learn import run, train_policy

    cfg = _cfg(tmp_path, "users.accesses=[tdma]", "users.objectives=[maxmin]",
               "users.alloc_frames=8192", "users.alloc_eval_frames=512", "ppo.lr=1e-3",
               "users.alloc_image_frames=4",
               "ppo.frames_per_batch=1024", "ppo.num_envs=128", "ppo.minibatch_size=256")
    images = (LinearCode.fit(latents, 1.0), latents[:6], _render)
    rows = run(cfg, quality=quality, images=images, progress=False)
    ppo = next(r for r in rows if r["policy"] == "ppo")
    assert all(math.isfinite(r["image_psnr_db"]) for r in rows)
    assert ppo["vs_equal_lo"] > 0, ppo
    assert ppo["frames"] == 8192
    out = tmp_path / "runs" / "alloc"
    assert {p.name for p in out.iterdir()} >= {"results.csv", "summary.md", "alloc.png",
                                               "tdma-maxmin", "config.yaml"}
    assert "PPO beats equal shares" in (out / "summary.md").read_text()
    spec = spec_from(cfg.users, "tdma", 128)
    act, info = train_policy(cfg, spec, quality, "maxmin", out / "tdma-maxmin")
    assert info["frames"] == 8192 and info["train_seconds"] < 1.0  # resumed: nothing to train
    gamma = draw_frames(spec, 8, torch.Generator().manual_seed(0))
    assert torch.isfinite(act(gamma)).all()


@pytest.mark.parametrize("override, needle", [
    ("users.k=1", "users.k"),
    ("users.objectives=[mean,fair]", "users.objectives"),
    ("users.alloc_snr_db=[10,0]", "users.alloc_snr_db"),
    ("users.alloc_channel=tdl", "users.alloc_channel"),
    ("users.alloc_frames=0", "users.alloc_frames"),
    ("users.alloc_fc=1.5", "users.alloc_fc"),
])
def test_bad_alloc_values_one_line_exit_2(tmp_path, capsys, override, needle):
    assert_refused(capsys, ["train-alloc", f"out_dir={tmp_path / 'runs'}", "logger=none",
                            "users.k=3", override], needle, tmp_path / "runs")


def test_quality_in_db_matches_its_definition(quality):
    m, snr = torch.tensor(16.0), torch.tensor(3.0)
    assert float(quality.quality_db(m, snr)) == pytest.approx(
        10 * math.log10(quality.var / float(quality.mse(m, snr))))


def test_noma_strong_user_cancels_or_hears_the_weak_seed(quality):
    """reencode: the strong user decodes at its own power share as if alone; lmmse: it treats
    the weak seed as noise, like the weak user does."""
    from meg_lightning.multiuser.allocation import user_links

    gamma = torch.tensor([[100.0, 2.0]], dtype=torch.float64)
    for sic, want in (("reencode", 0.2 * 100.0), ("lmmse", 0.2 * 100.0 / (0.8 * 100.0 + 1))):
        spec = FrameSpec(k=2, access="noma", n_symbols=64, snr_db=(0, 20), sic=sic)
        m, sinr = user_links(spec, gamma, allocation(spec, equal_action(spec, 1)))
        assert torch.allclose(m, torch.full_like(m, 64.0))
        assert float(sinr[0, 0]) == pytest.approx(want)
        assert float(sinr[0, 1]) == pytest.approx(0.8 * 2.0 / (0.2 * 2.0 + 1))


def test_an_unreadable_or_foreign_checkpoint_is_one_clear_error(tmp_path, quality):
    from meg_lightning.errors import UserError
    from meg_lightning.multiuser.allocation import spec_from
    from meg_lightning.multiuser.learn import train_policy

    cfg = _cfg(tmp_path, "users.alloc_frames=16")
    folder = tmp_path / "runs" / "alloc" / "tdma-mean"
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"not a checkpoint")
    spec = spec_from(cfg.users, "tdma", 128)
    with pytest.raises(UserError, match="could not be read"):
        train_policy(cfg, spec, quality, "mean", folder)
    torch.save({"run": "another"}, folder / "checkpoint.pt")
    with pytest.raises(UserError, match="other users"):
        train_policy(cfg, spec, quality, "mean", folder)
