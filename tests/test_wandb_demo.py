"""`meg demo` logs to one offline W&B run by default: eval curves, figures, codec and PPO curves.

The stages are replaced by a writer of small fixture files (a results CSV, two PNGs, the CSV logs
of two codec rates and two PPO runs); the W&B run is the demo's own (:func:`demo.log_to_wandb`
through ``demo._run``), read back from its ``.wandb`` file with wandb's protobuf records. Offline:
nothing touches the network.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from meg_lightning import demo
from meg_lightning.evaluation.results import rows_to_csv
from meg_lightning.loggers import lightning_csv_curves, torchrl_csv_curves

CHANNELS = ("awgn", "rayleigh")
LABELS = ("centralized", "meg fc=0.25", "meg fc=0.5")


def _results() -> str:
    rows = []
    for channel in CHANNELS:
        for scheme, fc in (("centralized", None), ("meg", 0.25), ("meg", 0.5)):
            for snr in (-10.0, 0.0, 10.0):
                rows.append({"cell": f"{scheme}-{fc}-{channel}-{snr:g}", "scheme": scheme,
                             "channel": channel, "snr_db": snr, "fc": fc, "symbols": 64,
                             "n_images": 4, "psnr_db": 10 + snr / 2 + (fc or 0),
                             "fid": 50 - snr, "semantic_accuracy": 0.5 + snr / 40,
                             "latent_nmse": math.nan if fc is None else 0.1,
                             "config_hash": "abc"})
    return rows_to_csv(rows)


def _write_outputs(root: Path) -> None:
    """What the stages of a demo leave in out_dir that the W&B run reads."""
    from PIL import Image

    (root / "eval").mkdir(parents=True, exist_ok=True)
    (root / "eval" / "results.csv").write_text(_results())
    (root / "figures").mkdir(exist_ok=True)
    for stem in ("fig6_psnr", "grid_awgn_snr0"):
        Image.new("RGB", (16, 12), (200, 30, 30)).save(root / "figures" / f"{stem}.png")
    for fc in ("0.25", "0.5"):  # Lightning's CSVLogger: val once per epoch, train per step
        run = root / "codec" / f"fc{fc}" / f"codec-fc{fc}" / "version_0"
        run.mkdir(parents=True)
        lines = ["epoch,step,train/loss,val/loss,val/psnr@20dB"]
        for epoch in range(3):
            lines += [f"{epoch},{10 * epoch + 4},{1.0 / (epoch + 1)},,",
                      f"{epoch},{10 * epoch + 9},{0.9 / (epoch + 1)},,",
                      f"{epoch},{10 * epoch + 9},,{0.5 / (epoch + 1)},{20 + epoch}"]
        (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    for folder in (root / "ppo", root / "fig10" / "p1" / "ppo"):  # TorchRL's CSVLogger
        scalars = folder / "logs" / "ppo-0123" / "scalars"
        (scalars / "train").mkdir(parents=True)
        (scalars / "eval" / "ppo").mkdir(parents=True)
        (scalars / "train" / "latent_mse.csv").write_text("256,0.5\n512,0.4\n768,0.3\n")
        (scalars / "eval" / "ppo" / "latent_mse.csv").write_text("768,0.3\n")  # one point


def _records(path: Path):
    """The protobuf records of a ``.wandb`` file (LevelDB log format, W&B header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # a full record, or the last fragment of one
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def _run_demo(monkeypatch, tmp_path, logger: str) -> tuple[Path, list]:
    """``demo._run`` with every stage replaced: returns out_dir and the loggers they saw."""
    from meg_lightning.cli import compose_for

    out = tmp_path / "demo"
    cfg = compose_for("demo", [f"out_dir={out}", f"data.cache_dir={out / 'latents'}",
                               "eval.schemes=[centralized,meg]", f"logger={logger}"])
    seen = []

    def stage(c, *_):
        seen.append(c.logger)
        _write_outputs(Path(c.out_dir)) if not (out / "eval").exists() else None

    for module, name in ((demo.cache, "main"), (demo.codec_train, "main"),
                         (demo.ppo_command, "main"), (demo.sweep, "main"),
                         (demo.figures, "main"), (demo, "seed_reference")):
        monkeypatch.setattr(module, name, stage)
    demo._run(cfg)
    return out, seen


def test_the_demo_logs_one_offline_wandb_run_of_everything(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DATA_DIR", raising=False)
    out, seen = _run_demo(monkeypatch, tmp_path, "wandb")
    assert set(seen) == {"csv"}  # the stages log to CSV; the demo's one run collects it
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    printed = capsys.readouterr().out
    assert f"wandb sync {runs[0]}" in printed
    assert "| wandb |" in (out / "REPORT.md").read_text()  # its seconds, as a stage

    history: dict[str, dict] = {}  # key -> its fields (a table's or an image's path ...)
    charts, summary = set(), {}
    for r in _records(next(runs[0].glob("run-*.wandb"))):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            for i in r.history.item:
                key = [i.key] if i.key else list(i.nested_key)
                history.setdefault(key[0], {})["/".join(key[1:])] = json.loads(i.value_json)
        elif kind == "config":
            charts |= {u.nested_key[-1] for u in r.config.update
                       if list(u.nested_key[:2]) == ["_wandb", "visualize"]}
        elif kind == "summary":
            summary |= {u.key: json.loads(u.value_json) for u in r.summary.update if u.key}
    eval_plots = {f"eval/{m}_{c}" for m in ("psnr_db", "fid", "semantic_accuracy", "latent_nmse")
                  for c in CHANNELS}
    curves = {"codec/train/loss", "codec/val/loss", "codec/val/psnr@20dB",
              "ppo/train/latent_mse"}
    assert eval_plots | curves <= charts, sorted(charts)
    assert {f"{k}_table" for k in eval_plots | curves} <= set(history)
    assert not any(k.startswith("ppo/eval") for k in charts)  # single points are no curve
    assert {"eval/results", "figures/fig6_psnr", "figures/grid_awgn_snr0"} <= set(history)
    assert {"seconds/figures", "seconds/eval"} <= set(summary)

    # one line per scheme and rate, per codec rate, per PPO run, with their points
    def table(key):
        path = runs[0] / "files" / history[f"{key}_table"]["path"]
        return json.loads(path.read_text())

    t = table("eval/psnr_db_awgn")
    assert {row[t["columns"].index("lineKey")] for row in t["data"]} == set(LABELS)
    t = table("codec/val/loss")
    step, key = t["columns"].index("step"), t["columns"].index("lineKey")
    assert {row[key] for row in t["data"]} == {"codec fc0.25", "codec fc0.5"}
    assert sorted(row[step] for row in t["data"] if row[key] == "codec fc0.5") == [0, 1, 2]
    t = table("ppo/train/latent_mse")
    assert {row[t["columns"].index("lineKey")] for row in t["data"]} == {"main", "fig10 p1"}
    for stem in ("fig6_psnr", "grid_awgn_snr0"):
        assert history[f"figures/{stem}"]["_type"] == "image-file"
        assert (runs[0] / "files" / history[f"figures/{stem}"]["path"]).is_file()
    # the staged copies `wandb sync` uploads stay inside out_dir
    assert any((out / "wandb" / "data").rglob("*"))


def test_logger_csv_writes_no_wandb_files(monkeypatch, tmp_path, capsys):
    out, seen = _run_demo(monkeypatch, tmp_path, "csv")
    assert set(seen) == {"csv"}
    assert not list(out.rglob("*wandb*"))
    assert "wandb sync" not in capsys.readouterr().out
    assert "| wandb |" not in (out / "REPORT.md").read_text()


def test_the_csv_readers_give_one_curve_per_metric(tmp_path):
    _write_outputs(tmp_path)
    codec = lightning_csv_curves(tmp_path / "codec" / "fc0.5" / "codec-fc0.5")
    assert codec["val/loss"] == ("epoch", [(0.0, 0.5), (1.0, 0.25), (2.0, 0.5 / 3)])
    assert codec["train/loss"][0] == "step" and len(codec["train/loss"][1]) == 6
    ppo = torchrl_csv_curves(tmp_path / "ppo" / "logs" / "ppo-0123")
    assert ppo["train/latent_mse"] == [(256.0, 0.5), (512.0, 0.4), (768.0, 0.3)]
    assert ppo["eval/ppo/latent_mse"] == [(768.0, 0.3)]
    assert lightning_csv_curves(tmp_path / "nothing") == {} == torchrl_csv_curves(tmp_path)


@pytest.mark.parametrize("mode", ["disabled"])
def test_a_disabled_run_writes_nothing_and_names_no_folder(monkeypatch, tmp_path, mode):
    from meg_lightning.compose import load_config

    monkeypatch.setenv("WANDB_MODE", mode)
    _write_outputs(tmp_path)
    cfg = load_config([f"out_dir={tmp_path}", "logger=wandb"])
    assert demo.log_to_wandb(cfg) is None
    assert not list((tmp_path / "wandb").glob("offline-run-*"))
