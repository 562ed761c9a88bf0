"""`meg demo`: every stage end to end on a shrunk run of its default model (mini), then the report."""

from __future__ import annotations

import json
import math

from meg_lightning.cli import run
from meg_lightning.demo import low_snr_claim
from meg_lightning.evaluation.sweep import read_results


def test_demo_runs_every_stage_and_writes_the_report(tmp_path, monkeypatch):
    """The whole demo, shrunk: 5 DDIM steps, PNG figures only (the PDFs are checked in
    test_evaluation and test_figures) and no W&B run (test_wandb_demo checks the demo's run)."""
    from meg_lightning.evaluation import figures_common

    monkeypatch.setattr(figures_common, "FORMATS", ("png",))
    out = tmp_path / "demo"
    args = [f"out_dir={out}", f"data.cache_dir={out / 'latents'}", "data.num_prompts=24",
            "logger=csv", "generation.num_inference_steps=5",
            "eval.fcs=[0.5]",
            "eval.scheme_fcs={meg: [0.5], meg-adaptive: [0.5], linear: [0.5]}", "eval.snrs_db=[-10,10]", "eval.channels=[awgn]",
            "eval.num_images=6", "eval.bootstrap=5",
            "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
            "ppo.num_envs=16", "ppo.frames_per_batch=256", "ppo.total_frames=512",
            "ppo.minibatch_size=128", "ppo.eval_episodes=64", "ppo.fig10_powers=[1]",
            "ppo.block_counts=[4,8]", "ppo.block_frames=512"]
    assert run(["demo", *args]) == 0
    report = (out / "REPORT.md").read_text()
    for section in ("(model=mini)", "## Stages", "### PSNR (dB), awgn",
                    "### mini-FID (not Inception FID), awgn", "### Semantic accuracy, awgn",
                    "## The paper's central claim at low SNR", "| awgn | -10 dB | meg fc=0.5 |",
                    "## Image grids", "## Power control", "### Fig. 10", "### Block counts",
                    "- P_max 1 mW", "## Figures", "Table II",
                    "## How much the noise seed decides",
                    "## Generative receivers at the UE (X+dm against X, awgn)",
                    "## Prompt transmission", "## Quality against UE compute (awgn)",
                    "## Digital separation", "| digital fc=0.5 | awgn | 10 dB |",
                    "fig_compute_psnr",
                    "## Learned codecs against the optimal linear code and the OPTA bound",
                    "| awgn | 0.5 | -10 dB |"):
        assert section in report, section
    seed_ref = json.loads((out / "eval" / "seed_reference.json").read_text())
    assert seed_ref["n_images"] == 6 and 0 <= seed_ref["semantic_accuracy"] <= 1
    assert 0 < seed_ref["psnr_db"] < 40  # another seed draws another picture (mini v2)
    assert f"PSNR **{seed_ref['psnr_db']:.2f} dB** against I_0" in report
    rows = read_results(out / "eval" / "results.csv")
    assert {r["scheme"] for r in rows} == {"centralized", "feature", "feature+dm", "meg", "meg+dm",
                                           "meg-adaptive", "linear", "digital", "prompt"}
    assert len(rows) == 9 * 2
    shipped = {r["codec_id"] for r in rows if r["scheme"] == "meg-adaptive"}
    assert len(shipped) == 1 and None not in shipped  # the codec shipped for mini, fingerprinted
    assert {r["fid_features"] for r in rows} == {"mini-FID"}
    assert all(0 <= r["semantic_accuracy"] <= 1 for r in rows)
    assert len({r["semantic_accuracy_ref"] for r in rows}) == 1  # one I_0 set for every cell
    for stem in ("fig5_examples", "fig6_psnr", "fig7_fid", "fig_semantic", "fig10_fid_power",
                 "fig_codecs",
                 "grid_awgn_snr-10", "grid_awgn_snr10"):
        assert (out / "figures" / f"{stem}.png").stat().st_size > 0, stem
    assert (out / "ppo" / "fig10.csv").exists() and (out / "codec" / "fc0.5" / "best.ckpt").exists()
    # a rerun resumes every stage: nothing is recomputed, the report is rewritten
    assert run(["demo", *args]) == 0
    assert len(read_results(out / "eval" / "results.csv")) == len(rows)


def _row(scheme, snr, psnr, sem=math.nan, fc=None, channel="awgn", symbols=None):
    return {"scheme": scheme, "channel": channel, "snr_db": snr, "fc": fc, "psnr_db": psnr,
            "semantic_accuracy": sem, "symbols": symbols}


def test_low_snr_claim_compares_each_cell_with_centralized_at_the_same_snr():
    c = 1000  # centralized symbols per image: 10x the seed's 100, i.e. 10 dB more energy
    rows = [_row("centralized", -20.0, 2.0, 0.0, symbols=c), _row("centralized", -10.0, 5.0, 0.1,
                                                                  symbols=c),
            _row("centralized", 0.0, 12.0, 0.5, symbols=c),
            _row("centralized", 10.0, 20.0, 0.9, symbols=c),
            _row("meg", -10.0, 9.0, 0.4, fc=0.5, symbols=100),
            _row("meg", 0.0, 11.0, 0.7, fc=0.5, symbols=100),
            _row("meg", 10.0, 30.0, 1.0, fc=0.5, symbols=100),  # above 0 dB: not in the claim
            _row("feature", -10.0, 6.0, 0.1, symbols=200),
            _row("feature", math.inf, 100.0, 1.0, channel="none"),
            _row("linear", -10.0, 50.0, 1.0, fc=0.5)]  # not a claimed scheme
    claim = {(d["scheme"], d["snr_db"]): d for d in low_snr_claim(rows)}
    assert set(claim) == {("meg fc=0.5", -10.0), ("meg fc=0.5", 0.0), ("feature", -10.0)}
    assert {k: (d["psnr"], d["sem"]) for k, d in claim.items()} == {
        ("meg fc=0.5", -10.0): ("yes", "yes"), ("meg fc=0.5", 0.0): ("no", "yes"),
        ("feature", -10.0): ("yes", "tie")}
    # equal energy: meg at 0 dB vs centralized at 0 - 10 dB = -10 dB (a swept point)
    d = claim[("meg fc=0.5", 0.0)]
    assert d["equal_energy_snr_db"] == -10.0
    assert (d["psnr_equal_energy"], d["semantic_equal_energy"]) == (5.0, 0.1)
    # feature at -10 dB, 5x fewer symbols: -16.99 dB, interpolated between -20 and -10 dB
    d = claim[("feature", -10.0)]
    assert abs(d["equal_energy_snr_db"] + 10 - (-10 * math.log10(5))) < 1e-9
    assert abs(d["psnr_equal_energy"] - (2.0 + 3.0 * (d["equal_energy_snr_db"] + 20) / 10)) < 1e-9
    assert claim[("meg fc=0.5", -10.0)]["psnr_equal_energy"] == 2.0  # centralized at -20 dB
    # below the sweep there is nothing to read: -20 - 10 dB is outside [-20, 10]
    low = low_snr_claim(rows + [_row("meg", -20.0, 4.0, 0.0, fc=0.5, symbols=100)])
    d = next(x for x in low if x["snr_db"] == -20.0)
    assert (d["psnr"], d["sem"], d["psnr_equal_energy"]) == ("yes", "tie", None)
    # without semantic accuracy (models other than mini) only PSNR is judged
    plain = low_snr_claim([{**r, "semantic_accuracy": None} for r in rows])
    assert {x["sem"] for x in plain} == {None}


def test_the_demo_leaves_meg_adaptive_out_for_a_model_without_shipped_codecs(tmp_path, capsys):
    from meg_lightning.cli import compose_for
    from meg_lightning.demo import _available_schemes

    tiny = compose_for("demo", ["model=tiny", f"out_dir={tmp_path}"])
    assert "meg-adaptive" in tiny.eval.schemes
    kept = _available_schemes(tiny).eval.schemes
    assert "meg-adaptive" not in kept and "meg" in kept
    assert "meg-adaptive left out (no trained codec for fc=0.25" in capsys.readouterr().out
    mini = compose_for("demo", [f"out_dir={tmp_path}"])
    assert _available_schemes(mini).eval.schemes == mini.eval.schemes  # shipped for mini


def test_the_codec_section_compares_each_cell_and_names_where_adaptive_loses():
    from meg_lightning.evaluation.tradeoff import codec_lines

    def r(scheme, snr, mse, sem=math.nan, opta=math.nan, channel="awgn"):
        return {**_row(scheme, snr, 20.0, sem, fc=None if scheme == "centralized" else 0.5,
                       channel=channel), "latent_mse": mse, "opta_latent_mse": opta}

    rows = [r("centralized", 0.0, math.nan, 0.2), r("meg", 0.0, 0.5, 0.3),
            r("meg-adaptive", 0.0, 0.1, 0.8, opta=0.08), r("linear", 0.0, 0.2, 0.6),
            r("meg-adaptive", 20.0, 0.004, 1.0, opta=0.001), r("linear", 20.0, 0.003, 1.0),
            r("meg-adaptive", 0.0, 0.3, 0.5, channel="rayleigh")]  # no linear row there
    text = "\n".join(codec_lines(rows))
    assert "| awgn | 0.5 | 0 dB | 0.5000 | 0.1000 | 0.2000 | 0.0800 | 0.30 | 0.80 | 0.60 | 0.20 |" \
        in text
    assert "| awgn | 0.5 | 20 dB | - | 0.0040 | 0.0030 | 0.0010 | - | 1.00 | 1.00 | - |" in text
    assert "| rayleigh | 0.5 | 0 dB | - | 0.3000 | - | - | - | 0.50 | - | - |" in text
    assert "above `linear` in: awgn fc=0.5 20 dB (0.0040 > 0.0030)." in text
    better = [x for x in rows if not (x["scheme"] == "meg-adaptive" and x["snr_db"] == 20.0)]
    assert "at most `linear`'s in every cell" in "\n".join(codec_lines(better))
    assert codec_lines([x for x in rows if x["scheme"] != "meg-adaptive"]) == []
