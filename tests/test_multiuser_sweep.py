"""The users-served sweep (`meg eval-multiuser`): `prompt` and `X+dm` in it, per-user FID and the
FID target, listed and UMi placement, the figure, the W&B run, and the users.* errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import assert_refused

LATENT = (4, 8, 8)  # the tiny preset's latent shape
N_LATENTS = 40  # 32 train / 8 test


def _cfg(tmp_path, command, *extra):
    from meg_lightning.cli import compose_for

    base = [f"data.cache_dir={tmp_path / 'cache'}", f"out_dir={tmp_path / 'runs'}",
            "logger=none", "generation.device=cpu", "eval.channels=[awgn]", "eval.fcs=[0.5]",
            "eval.num_images=2", "eval.batch_size=2", "eval.fid_features=pixels",
            "eval.bootstrap=0", "eval.ue_steps=2", "eval.dm_calibration=8"]
    return compose_for(command, base + list(extra))


def _data():
    from meg_lightning.data.datamodule import TensorLatentDataModule

    gen = torch.Generator().manual_seed(4)
    dm = TensorLatentDataModule(torch.randn(N_LATENTS, *LATENT, generator=gen),
                                test_fraction=0.2)
    return dm, [f"a prompt number {i}" for i in range(N_LATENTS)]


def _decoder(tiny_pipe):
    from meg_lightning.generation import decode_latents

    vae = tiny_pipe.vae.eval()
    return lambda z: decode_latents(vae, z).float()


@pytest.mark.parametrize("scheme", ["prompt", "feature+dm"])
def test_prompt_and_dm_in_the_sweep_k1_is_the_single_user_cell(tmp_path, tiny_pipe, monkeypatch,
                                                               scheme):
    """K = 1 of `prompt` and `feature+dm` gives the `meg eval` cell's PSNR and FID bit for bit;
    at K = 2 (TDMA) `prompt` has half the budget, round(fc / 2 |z|) symbols, and a user gets
    I_0 exactly (PSNR at the cap) when the prompt fits, else grey; `feature+dm` sends the first
    half of |z|."""
    from meg_lightning.evaluation.results import read_results
    from meg_lightning.evaluation.sweep import run_sweep
    from meg_lightning.multiuser.sweep import run_multiuser

    monkeypatch.setenv("MEG_LPIPS_WEIGHTS", "none")  # the reference sweep's extra metrics
    monkeypatch.setenv("MEG_CLIP_MODEL", "none")
    keys = [f"eval.schemes=[{scheme}]", "eval.snrs_db=[10]"]
    dm, prompts = _data()
    cfg = _cfg(tmp_path, "eval-multiuser", *keys, "users.ks=[1,2]", "users.accesses=[tdma]",
               "users.psnr_target_db=5")
    rows, served = run_multiuser(cfg, datamodule=dm, decode_image=_decoder(tiny_pipe),
                                 pipeline=tiny_pipe, prompts=prompts, progress=False)
    single = run_sweep(_cfg(tmp_path, "eval", *keys), datamodule=dm, vae=tiny_pipe.vae,
                       pipeline=tiny_pipe, prompts=prompts, progress=False)
    (cell,) = read_results(single.csv_path)
    by = {(r["k"], r["user"]): r for r in rows}
    one = by[(1, 0)]
    assert (one["psnr_db"], one["fid"], one["symbols"]) == \
        (cell["psnr_db"], cell["fid"], cell["symbols"])
    for u in (0, 1):
        half = by[(2, u)]
        if scheme == "prompt":
            assert one["symbols"] == 128  # round(0.5 * 256)
            assert (half["rate"], half["symbols"]) == (0.25, 64)
            assert half["psnr_db"] == 100.0 or half["psnr_db"] < 20  # the cap (I_0) or grey
        else:
            assert half["symbols"] == 128
    # served.csv: the worst and the mean user's FID
    for r in served:
        fids = [by[(r["k"], u)]["fid"] for u in range(r["k"])]
        assert r["max_fid"] == max(fids) and r["mean_fid"] == pytest.approx(sum(fids) / len(fids))
    if scheme == "feature+dm":  # NOMA: X's seeds superposed, the diffusion receiver calibrated
        # at each user's design SINR
        cfg = _cfg(tmp_path, "eval-multiuser", *keys, "users.ks=[2]", "users.accesses=[noma]",
                   "users.psnr_target_db=5", f"out_dir={tmp_path / 'noma'}")
        rows, _ = run_multiuser(cfg, datamodule=dm, decode_image=_decoder(tiny_pipe),
                                pipeline=tiny_pipe, prompts=prompts, progress=False)
        assert sorted(r["role"] for r in rows) == ["strong", "weak"]
        assert all(math.isfinite(r["psnr_db"]) for r in rows)


def test_fid_target_and_the_worst_user():
    from types import SimpleNamespace

    from meg_lightning.multiuser.sweep import meets, served_table

    users = SimpleNamespace(psnr_target_db=20.0, accuracy_target=0.9, fid_target=None)
    assert meets(25.0, 0.95, users, fid=500.0) and meets(25.0, math.nan, users)
    users.fid_target = 100.0
    assert meets(25.0, 0.95, users, fid=99.0)
    assert not meets(25.0, 0.95, users, fid=101.0)
    assert not meets(25.0, 0.95, users, fid=math.nan)  # no FID, no claim
    assert not meets(19.0, 0.95, users, fid=1.0)

    def row(user, psnr, fid):
        return {"scheme": "linear", "fc": 0.5, "access": "tdma", "channel": "awgn",
                "snr_db": 10.0, "k": 2, "user": user, "psnr_db": psnr,
                "semantic_accuracy": 1.0, "fid": fid, "meets": False}

    (r,) = served_table([row(0, 30.0, 10.0), row(1, 20.0, 40.0)])
    assert (r["min_psnr_db"], r["max_fid"], r["mean_fid"]) == (20.0, 40.0, 25.0)
    (r,) = served_table([row(0, 30.0, 10.0), row(1, math.nan, math.nan)])  # user 1 not served
    assert math.isnan(r["min_psnr_db"]) and math.isnan(r["max_fid"])


def test_umi_and_listed_placement_in_the_sweep(tmp_path, tiny_pipe):
    """UMi: the users of a frame of K are the first K of one drop (the same user in every frame),
    at the SNR P - PL - N of their distance; the SNR axis is their mean. Listed: users.snrs_db."""
    from meg_lightning.multiuser.access import pairs
    from meg_lightning.multiuser.placement import noise_dbm
    from meg_lightning.multiuser.sweep import run_multiuser

    dm, _ = _data()
    cfg = _cfg(tmp_path, "eval-multiuser", "eval.schemes=[feature]", "users.ks=[1,2,4]",
               "users.stop_at_miss=false",
               "users.placement=umi", "users.tx_power_dbm=10")
    rows, served = run_multiuser(cfg, datamodule=dm, decode_image=_decoder(tiny_pipe),
                                 progress=False)
    tdma = {(r["k"], r["user"]): r for r in rows if r["access"] == "tdma"}
    snrs = [tdma[(4, u)]["avg_snr_db"] for u in range(4)]
    for u in range(4):
        r = tdma[(4, u)]
        assert 10 <= r["distance_m"] <= 200 and isinstance(r["los"], bool)
        assert r["avg_snr_db"] == pytest.approx(10 - r["pathloss_db"] - noise_dbm(20, 9))
        for k in (1, 2):
            if u < k:
                assert (tdma[(k, u)]["avg_snr_db"], tdma[(k, u)]["distance_m"]) == \
                    (r["avg_snr_db"], r["distance_m"])
    assert {r["snr_db"] for r in rows} == {round(sum(snrs) / 4, 2)}
    noma = {r["user"]: r for r in rows if r["access"] == "noma" and r["k"] == 4}
    for strong, weak in pairs(snrs):
        assert (noma[strong]["role"], noma[weak]["role"]) == ("strong", "weak")

    cfg = _cfg(tmp_path, "eval-multiuser", "eval.schemes=[feature]", "users.ks=[1,2]",
               "users.stop_at_miss=false",
               "users.accesses=[tdma]", "users.placement=listed", "users.k=2",
               "users.snrs_db=[12,3]")
    rows, _ = run_multiuser(cfg, datamodule=dm, decode_image=_decoder(tiny_pipe),
                            progress=False)
    assert [(r["k"], r["avg_snr_db"], r["snr_db"]) for r in rows] == \
        [(1, 12.0, 7.5), (2, 12.0, 7.5), (2, 3.0, 7.5)]


def test_figure_has_every_scheme_and_access(tmp_path):
    """One panel per (access, channel), one legend entry per (scheme, fc), the hue of the
    scheme's family (X+dm shares X's, dashed, hollow markers), K up to 16 on the axis."""
    from meg_lightning.multiuser.sweep import served_figure
    from meg_lightning.schemes import scheme_class

    cfg = _cfg(tmp_path, "eval-multiuser")
    lines = [("centralized", None, "tdma"), ("centralized", None, "noma"),
             ("feature+dm", None, "tdma"), ("feature+dm", None, "noma"),
             ("meg-adaptive", 0.5, "tdma"), ("meg-adaptive", 0.5, "noma"),
             ("linear", 0.5, "tdma"), ("linear", 0.5, "noma"),
             ("digital", 0.5, "tdma"), ("prompt", 0.5, "tdma"), ("feature", None, "tdma")]
    best = {(s, fc, a, "awgn", snr): min(16, int(snr / 5) + i % 3)
            for i, (s, fc, a) in enumerate(lines) for snr in (0.0, 10.0, 20.0)}
    fig = served_figure(best, cfg)
    assert [ax.get_title() for ax in fig.axes] == ["TDMA, awgn", "NOMA, awgn"]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert sorted(labels) == sorted({s + ("" if fc is None else f" fc {fc:g}")
                                     for s, fc, _ in lines})
    tdma, noma = fig.axes
    assert len(tdma.get_lines()) == 7 and len(noma.get_lines()) == 4
    for line in tdma.get_lines():
        scheme = line.get_label().split(" ")[0]
        assert line.get_color() == scheme_class(scheme).hue
        assert line.get_linestyle() == ("--" if scheme.endswith("+dm") else "-")
        assert (line.get_markerfacecolor() == "white") == scheme.endswith("+dm")
    assert [int(t) for t in tdma.get_yticks()] == [0, 1, 2, 4, 8, 16]
    import matplotlib.pyplot as plt

    plt.close(fig)


def _cli_world(tmp_path, monkeypatch, tiny_pipe):
    import meg_lightning.multiuser.sweep as sweep

    monkeypatch.setattr(sweep, "_default_datamodule", lambda cfg: _data()[0])
    monkeypatch.setattr(sweep, "_default_vae", lambda cfg, device: tiny_pipe.vae)
    monkeypatch.setenv("WANDB_MODE", "offline")
    return ["eval-multiuser", f"out_dir={tmp_path / 'runs'}", "model=tiny",
            "generation.device=cpu", "eval.schemes=[feature]", "eval.snrs_db=[10]",
            "eval.channels=[awgn]", "eval.num_images=2", "eval.batch_size=2",
            "eval.fid_features=pixels", "users.ks=[1,2]", "users.accesses=[tdma]"]


def test_logger_csv_writes_no_wandb_files(tmp_path, monkeypatch, tiny_pipe):
    from meg_lightning.cli import run

    args = _cli_world(tmp_path, monkeypatch, tiny_pipe)
    for logger in ("csv", "none"):
        assert run([*args, f"logger={logger}"]) == 0
        out = tmp_path / "runs" / "multiuser"
        assert (out / "served.csv").is_file() and not (out / "wandb").exists()


@pytest.mark.slow  # ~8 s: importing wandb and writing an offline run
def test_logger_wandb_writes_one_offline_run(tmp_path, monkeypatch, tiny_pipe, capsys):
    from meg_lightning.cli import run

    args = _cli_world(tmp_path, monkeypatch, tiny_pipe)
    out = tmp_path / "runs" / "multiuser"
    assert run([*args, "logger=wandb"]) == 0
    from test_wandb_demo import _records  # the .wandb reader (LevelDB log of protobufs)

    (run_dir,) = sorted((out / "wandb").glob("offline-run-*"))
    history, summary = set(), {}
    for r in _records(next(run_dir.glob("run-*.wandb"))):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            history |= {i.key or i.nested_key[0] for i in r.history.item}
        elif kind == "summary":
            summary |= {u.key: json.loads(u.value_json) for u in r.summary.update if u.key}
    assert {"multiuser/served", "multiuser/users", "multiuser/users_served"} <= history
    import csv

    with open(out / "served.csv", newline="") as f:
        served = [int(r["k"]) for r in csv.DictReader(f) if r["all_meet"] == "True"]
    assert summary["served/feature_tdma_awgn_snr10"] == max(served, default=0)
    assert f"wandb sync {run_dir}" in capsys.readouterr().out


@pytest.mark.parametrize("override, needle", [
    ("users.placement=hex", "users.placement"),
    ("users.placement=listed", "users.snrs_db"),  # listed needs the list
    ("users.fid_target=-1", "users.fid_target"),
    ("users.min_distance_m=5", "users.min_distance_m"),
    ("users.cell_radius_m=10", "users.cell_radius_m"),
    ("users.carrier_ghz=200", "users.carrier_ghz"),
    ("users.bandwidth_mhz=0", "users.bandwidth_mhz"),
    ("users.noise_figure_db=-3", "users.noise_figure_db"),
    ("users.tx_power_dbm=.nan", "users.tx_power_dbm"),
])
def test_bad_placement_values_one_line_exit_2(tmp_path, capsys, override, needle):
    assert_refused(capsys, ["eval-multiuser", f"out_dir={tmp_path / 'runs'}", "logger=none",
                            override], needle, tmp_path / "runs")
