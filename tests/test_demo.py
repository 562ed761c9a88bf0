"""`meg demo`: every stage end to end on a shrunk tiny run, then the report."""

from __future__ import annotations

from meg_lightning.cli import run
from meg_lightning.evaluation.sweep import read_results


def test_demo_runs_every_stage_and_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    args = [f"out_dir={out}", f"data.cache_dir={out / 'latents'}", "data.num_prompts=24",
            "eval.fcs=[0.5]", "eval.snrs_db=[-10,10]", "eval.channels=[awgn]",
            "eval.num_images=6", "eval.bootstrap=5", "eval.fid_features=pixels",
            "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
            "ppo.num_envs=16", "ppo.frames_per_batch=256", "ppo.total_frames=512",
            "ppo.minibatch_size=128", "ppo.eval_episodes=64", "ppo.fig10_powers=[1]"]
    assert run(["demo", *args]) == 0
    report = (out / "REPORT.md").read_text()
    for section in ("## Stages", "### PSNR (dB), awgn", "### FID, awgn", "## Power control",
                    "## Figures", "Table II"):
        assert section in report, section
    rows = read_results(out / "eval" / "results.csv")
    assert {r["scheme"] for r in rows} == {"centralized", "feature", "meg", "linear", "digital"}
    assert len(rows) == 5 * 2
    for stem in ("fig5_examples", "fig6_psnr", "fig7_fid", "fig10_fid_power"):
        assert (out / "figures" / f"{stem}.png").stat().st_size > 0
    assert (out / "ppo" / "fig10.csv").exists() and (out / "codec" / "fc0.5" / "best.ckpt").exists()
    # a rerun resumes every stage: nothing is recomputed, the report is rewritten
    assert run(["demo", *args]) == 0
    assert len(read_results(out / "eval" / "results.csv")) == len(rows)
