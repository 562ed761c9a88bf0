"""Bad inputs and faults across every command: exit 2 and one line naming the key, the value and
what was expected, nothing written; interrupted runs resume to exactly the uninterrupted result.

Commands run in-process (``cli.run(argv)``) against one shared world: a tiny latent cache, an
earlier run's outputs that no failed run may touch, and a folder of broken files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import N_PROMPTS, cli_base, snapshot

from meg_lightning.channels import kinds as channel_kinds
from meg_lightning.cli import run

REPO = Path(__file__).resolve().parents[1]
N = N_PROMPTS


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """cache/ (tiny, N latents), out/ (an earlier run's files), files/ (broken inputs),
    badcache/ (a garbage shard sidecar) and out_csv*/ (broken results files)."""
    root = tmp_path_factory.mktemp("world")
    from meg_lightning.runtime import torch_threads

    with torch_threads(1):
        assert run(["latents", *cli_base(root)]) == 0
    shutil.copytree(root / "cache", root / "badcache")
    (root / "badcache" / "shard-00001.json").write_text("{garbage")
    out = root / "out"
    (out / "eval").mkdir(parents=True)
    (out / "eval" / "config.yaml").write_text("# the config of an earlier good run\n")
    from meg_lightning.evaluation.sweep import rows_to_csv

    (out / "eval" / "results.csv").write_text(rows_to_csv([{
        "cell": "feature_awgn_snr0", "scheme": "feature", "channel": "awgn", "snr_db": 0.0,
        "psnr_db": 12.5, "seed": 2**62 + 1, "config_hash": "6e30271160047847"}]))
    (out / "codec" / "fc0.5").mkdir(parents=True)
    (out / "ppo").mkdir()
    files = root / "files"
    files.mkdir()
    (files / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (files / "binary.txt").write_bytes(b"a prompt\x00\x01\x02\n")
    (files / "prompts.csv").write_text("text\na red fox\n")
    (files / "a_file").write_text("not a folder\n")
    (files / "junk.ckpt").write_text("not a checkpoint\n")
    for name, text in (("out_csv_binary", b"\x89PNG\r\n\x1a\n\x00\x00"),
                       ("out_csv_columns", b"a,b,c\n1,2,3\n"),
                       ("out_csv_types", b"cell,scheme,channel,snr_db,fc,config_hash,psnr_db\n"
                                         b"x,feature,awgn,zero,,abc,1.0\n")):
        (root / name / "eval").mkdir(parents=True)
        (root / name / "eval" / "results.csv").write_bytes(text)
    return root


# (command, overrides, strings the one stderr line must contain). {w} is the world folder.
BAD_INPUTS = [
    # latents: types, ranges, names
    ("latents", ["data.num_prompts=abc"], ["data.num_prompts='abc'", "an integer"]),
    ("latents", ["data.num_prompts=0"], ["data.num_prompts=0", "positive"]),
    ("latents", ["data.num_prompts=-3"], ["data.num_prompts=-3"]),
    ("latents", ["data.num_prompts=3", "data.num_prompts=xyz"], ["'xyz'", "an integer"]),
    ("latents", ["generation.num_inference_steps=0"], ["generation.num_inference_steps=0"]),
    ("latents", ["generation.guidance_scale=-1"], ["generation.guidance_scale=-1"]),
    ("latents", ["generation.eta=2"], ["generation.eta=2"]),
    ("latents", ["generation.dtype=float8"], ["generation.dtype='float8'"]),
    ("latents", ["data.val_fraction=1.5"], ["data.val_fraction=1.5"]),
    ("latents", ["data.shard_size=0"], ["data.shard_size=0"]),
    ("latents", ["data.gen_batch_size=0"], ["data.gen_batch_size=0"]),
    ("latents", ["seed=-1"], ["seed=-1", "[0, 4294967295]"]),
    ("latents", ["seed=abc"], ["seed='abc'", "an integer"]),
    ("latents", ["seed=5000000000"], ["seed=5000000000"]),
    ("latents", ["logger=foo"], ["logger='foo'"]),
    ("latents", ["model="], ["model=''"]),
    ("latents", ["trainr.max_epochs=3"], ["trainr.max_epochs='3'", "a known key"]),
    ("latents", ["data=5"], ["data='5'", "a key inside this section"]),
    ("latents", ["channel.snr_db=[1,2]"], ["channel.snr_db='[1,2]'", "a number"]),
    ("latents", ["nonsense"], ["override='nonsense'", "key=value"]),
    ("latents", ["generation.device=tpu"], ["generation.device='tpu'", "cuda:N"]),
    ("latents", ["wandb.mode=foo"], ["wandb.mode='foo'"]),
    ("latents", ["out_dir="], ["out_dir=", "cannot be empty"]),
    ("latents", ["data.num_prompts=99999"], ["data.num_prompts=99999", "1..2304"]),
    # latents: files and folders
    ("latents", ["data.prompts={w}/files/latin1.txt"], ["data.prompts=", "latin1.txt", "UTF-8"]),
    ("latents", ["data.prompts={w}/files/binary.txt"], ["data.prompts=", "NUL bytes"]),
    ("latents", ["data.prompts={w}/files/missing.txt"], ["data.prompts=", "an existing prompt"]),
    ("latents", ["data.prompts={w}/files"], ["data.prompts=", "a folder"]),
    ("latents", ["data.prompts={w}/files/prompts.csv", "data.num_prompts=1"],
     ["data.prompt_column='prompt'", "found text"]),
    ("latents", ["data.cache_dir={w}/files/a_file"], ["data.cache_dir=", "is a file"]),
    ("latents", ["data.cache_dir={w}/files/a_file/sub"], ["data.cache_dir=", "is a file"]),
    ("latents", ["data.cache_dir={w}/badcache"], ["corrupt shard sidecar", "shard-00001.json"]),
    ("latents", ["generation.guidance_scale=3.0"], ["other settings", "data.cache_dir"]),
    # train-codec: trainer.* against lightning.Trainer
    ("train-codec", ["trainer.max_epochs=-1"], ["trainer.max_epochs=-1", "positive"]),
    ("train-codec", ["trainer.max_epochs=0"], ["trainer.max_epochs=0"]),
    ("train-codec", ["trainer.max_epochs=abc"], ["trainer.max_epochs='abc'"]),
    ("train-codec", ["trainer.max_epoch=3"], ["trainer.max_epoch=3", "trainer.max_epochs?"]),
    ("train-codec", ["trainer.accelerator=tpu"], ["trainer.accelerator='tpu'", "available"]),
    ("train-codec", ["trainer.accelerator=nonsense"], ["trainer.accelerator='nonsense'"]),
    ("train-codec", ["trainer.devices=0"], ["trainer.devices=0"]),
    ("train-codec", ["trainer.precision=77"], ["trainer.precision=77", "Allowed"]),
    ("train-codec", ["trainer.strategy=foo"], ["trainer.strategy='foo'"]),
    ("train-codec", ["trainer.logger=true"], ["trainer.logger=True", "logger=<"]),
    ("train-codec", ["trainer.callbacks=[a]"], ["trainer.callbacks="]),
    ("train-codec", ["trainer.min_epochs=5", "trainer.max_epochs=2"], ["trainer.min_epochs=5"]),
    ("train-codec", ["trainer.log_every_n_steps=0"], ["trainer.log_every_n_steps=0"]),
    ("train-codec", ["trainer.limit_train_batches=-1"], ["trainer.limit_train_batches=-1"]),
    ("train-codec", ["trainer.enable_progress_bar=maybe"], ["trainer.enable_progress_bar='maybe'"]),
    # train-codec: codec, channel, data
    ("train-codec", ["codec.fc=0"], ["codec.fc=0"]),
    ("train-codec", ["codec.fc=abc"], ["codec.fc='abc'", "a number"]),
    ("train-codec", ["codec.arch=cnn"], ["codec.arch='cnn'"]),
    ("train-codec", ["codec.lr=0"], ["codec.lr=0"]),
    ("train-codec", ["codec.val_snrs_db=[]"], ["codec.val_snrs_db=[]", "non-empty"]),
    ("train-codec", ["channel.kind=fiber"], ["channel.kind='fiber'"]),
    ("train-codec", ["channel.snr_db=nan"], ["channel.snr_db=nan"]),
    ("train-codec", ["channel.train_snr_db=[5]"], ["channel.train_snr_db=[5.0]"]),
    ("train-codec", ["channel.equalizer=foo"], ["channel.equalizer='foo'"]),
    ("train-codec", ["codec.checkpoint={w}/files/missing.ckpt"], ["codec.checkpoint=", "existing"]),
    ("train-codec", ["codec.checkpoint={w}/files/junk.ckpt"], ["junk.ckpt", "could not be read"]),
    ("train-codec", ["data.cache_dir={w}/nocache"], ["no latent cache", "nocache"]),
    ("train-codec", ["data.num_prompts=16"], ["data.num_prompts=16", "holds 8"]),
    ("train-codec", ["out_dir={w}/files/a_file"], ["out_dir=", "is a file"]),
    # train-ppo
    ("train-ppo", ["ppo.num_envs=0"], ["ppo.num_envs=0"]),
    ("train-ppo", ["ppo.gamma=2"], ["ppo.gamma=2"]),
    ("train-ppo", ["ppo.reward=ssim"], ["ppo.reward='ssim'"]),
    ("train-ppo", ["ppo.scheme=foo"], ["ppo.scheme='foo'"]),
    ("train-ppo", ["ppo.fig10_powers=[]"], ["ppo.fig10_powers=[]"]),
    ("train-ppo", ["ppo.clip_epsilon=1"], ["ppo.clip_epsilon=1"]),
    ("train-ppo", ["ppo.avg_snr_db=inf"], ["ppo.avg_snr_db=inf"]),
    ("train-ppo", ["ppo.checkpoint={w}/files/missing.pt"], ["ppo.checkpoint=", "not found"]),
    ("train-ppo", ["ppo.checkpoint={w}/files/junk.ckpt"], ["junk.ckpt", "could not be read"]),
    ("train-ppo", ["ppo.scheme=meg"], ["no trained codec for fc=0.5", "eval.codec_checkpoints"]),
    ("train-ppo", ["out_dir={w}/files/a_file"], ["out_dir=", "is a file"]),
    # eval
    ("eval", ["eval.snrs_db=[]"], ["eval.snrs_db=[]", "non-empty"]),
    ("eval", ["eval.schemes=[]"], ["eval.schemes=[]", "non-empty"]),
    ("eval", ["eval.fcs=[]"], ["eval.fcs=[]", "non-empty"]),
    ("eval", ["eval.channels=[]"], ["eval.channels=[]", "non-empty"]),
    ("eval", ["eval.schemes=[foo]"], ["eval.schemes=['foo']"]),
    ("eval", ["eval.snrs_db=[nan]"], ["eval.snrs_db=[nan]"]),
    ("eval", ["eval.fcs=[1.5]"], ["eval.fcs=[1.5]"]),
    ("eval", ["eval.snrs_db=abc"], ["eval.snrs_db='abc'", "a list"]),
    ("eval", ["eval.num_images=0"], ["eval.num_images=0"]),
    ("eval", ["eval.bootstrap=-1"], ["eval.bootstrap=-1"]),
    ("eval", ["eval.fid_features=clip"], ["eval.fid_features='clip'"]),
    ("eval", ["eval.digital_codec=gif"], ["eval.digital_codec='gif'"]),
    ("eval", ["eval.scheme_fcs={{megg: [0.5]}}"], ["eval.scheme_fcs='megg'", "meg+dm"]),
    ("eval", ["eval.scheme_fcs={{meg: [2]}}"], ["eval.scheme_fcs.meg=[2.0]", "(0, 1]"]),
    ("eval", ["eval.scheme_channels={{meg+dmm: [awgn]}}"], ["eval.scheme_channels='meg+dmm'"]),
    ("eval", ["eval.scheme_channels={{meg: awgn}}"],
     ["eval.scheme_channels.meg='awgn'", "a list, e.g. [a,b]"]),
    ("eval", ["eval.scheme_channels={{meg+dm: [awgm]}}"],
     ["eval.scheme_channels.meg+dm=['awgm']", ", ".join(channel_kinds())]),
    ("eval", ["eval.schemes=[centralized+dm]"], ["eval.schemes=", "feature+dm"]),
    ("eval", ["eval.ue_steps=0"], ["eval.ue_steps=0", ">= 1"]),
    ("eval", ["eval.codec_checkpoints=5"], ["eval.codec_checkpoints='5'", "a mapping"]),
    ("eval", ["eval.schemes=[feature]", "eval.num_images=100"],
     ["eval.num_images=100", "at most 2"]),
    ("eval", ["eval.schemes=[meg]"], ["no trained codec for fc=0.5", "eval.codec_checkpoints"]),
    ("eval", ["eval.schemes=[meg]", 'eval.codec_checkpoints={{"0.5": "{w}/files/junk.ckpt"}}'],
     ["junk.ckpt", "could not be read"]),
    ("eval", ["eval.schemes=[meg]", 'eval.codec_checkpoints={{"abc": "x.ckpt"}}'],
     ["eval.codec_checkpoints.abc", "compression rates"]),
    ("eval", ["eval.schemes=[meg-adaptive]"],
     ["no trained codec for fc=0.5", "make train-codec-adaptive FC=0.5"]),
    ("eval", ["eval.schemes=[meg-adaptive]", 'eval.adaptive_checkpoints={{"abc": "x.ckpt"}}'],
     ["eval.adaptive_checkpoints.abc", "compression rates"]),
    ("eval", ["eval.pretrained=maybe"], ["eval.pretrained='maybe'"]),
    ("eval", ["eval.linear_power=peak"], ["eval.linear_power='peak'", "average, seed"]),
    ("eval", ["data.cache_dir={w}/nocache"], ["no latent cache", "nocache"]),
    ("eval", ["eval.results=../x.csv"], ["eval.results='../x.csv'", "a file name"]),
    ("eval", ["out_dir={w}/files/a_file"], ["out_dir=", "is a file"]),
    ("eval", ["out_dir={w}/out_csv_binary"], ["results.csv", "not UTF-8"]),
    ("train-codec", ["codec.loss=l1"], ["codec.loss='l1'", "mse, linear_ratio"]),
    ("train-codec", ["codec.arch=adaptive", "codec.adaptive.gate=soft"],
     ["codec.adaptive.gate='soft'", "posterior"]),
    ("train-codec", ["codec.arch=adaptive", "codec.adaptive.dense_aux=-1"],
     ["codec.adaptive.dense_aux=-1", ">= 0"]),
    ("train-codec", ["codec.arch=mlp", "codec.gate=posterior"],
     ["codec.gate='posterior'", "a known key"]),
    ("train-codec", ["codec.arch=adaptive", "codec.adaptive.skip=none",
                     "codec.adaptive.freeze_dense=true"],
     ["codec.adaptive.freeze_dense=True", "dense path"]),
    ("train-codec", ["codec.arch=adaptive", "codec.adaptive.skip=none",
                     "codec.adaptive.dense_aux=1"],
     ["codec.adaptive.dense_aux=1", "without the dense path"]),
    ("train-codec", ["codec.arch=cnn"], ["codec.arch='cnn'", "paper, mlp, adaptive"]),
    ("train-codec", ["channel.num_blocks=7"], ["channel.num_blocks=7", "a divisor of the"]),
    ("train-codec", ["channel.kind=rician"], ["channel.kind='rician'", "awgn, rayleigh"]),
    # figures
    ("figures", ["out_dir={w}/out_csv_binary"], ["results.csv", "not UTF-8"]),
    ("figures", ["out_dir={w}/out_csv_columns"], ["results.csv", "no column cell"]),
    ("figures", ["out_dir={w}/out_csv_types"], ["snr_db='zero'", "a number"]),
    ("figures", ["out_dir={w}/files/a_file"], ["out_dir=", "is a file"]),
    ("figures", ["out_dir={w}/no_such_run"], ["out_dir=", "saved results", "meg eval"]),
    ("figures", ["trainer.max_epochs=-1"], ["trainer.max_epochs=-1"]),
    # demo (its own defaults, then these overrides)
    ("demo", ["eval.snrs_db=[]"], ["eval.snrs_db=[]"]),
    ("demo", ["trainer.max_epochs=-1"], ["trainer.max_epochs=-1"]),
    ("demo", ["out_dir={w}/files/a_file"], ["out_dir=", "is a file"]),
    ("demo", ["data.num_prompts=abc"], ["data.num_prompts='abc'"]),
    ("demo", ["data.prompts={w}/files/binary.txt"], ["data.prompts=", "NUL bytes"]),
]


@pytest.mark.parametrize("command, overrides, needles", BAD_INPUTS,
                         ids=[f"{c}:{' '.join(o)}"[:60] for c, o, _ in BAD_INPUTS])
def test_bad_input_exit_2_one_line_nothing_written(world, capsys, command, overrides, needles):
    before = snapshot(world)
    argv = [command, *cli_base(world), *[o.format(w=world) for o in overrides]]
    code = run(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle.format(w=world) in err, err
    assert snapshot(world) == before


def test_bad_input_table_covers_every_command():
    assert len(BAD_INPUTS) >= 60
    assert {c for c, _, _ in BAD_INPUTS} == {"latents", "train-codec", "train-ppo", "eval",
                                             "figures", "demo"}


# -- results read back by their schema ------------------------------------------------------------

def test_results_round_trip_keeps_hashes_and_seeds(tmp_path):
    from meg_lightning.evaluation.sweep import COLUMNS, read_results, rows_to_csv

    row = {"cell": "meg_fc0.5_awgn_snr-10", "scheme": "meg", "channel": "awgn", "snr_db": -10.0,
           "fc": 0.5, "symbols": 128, "psnr_db": 21.25, "fid": float("nan"),
           "seed": 2**63 - 1, "codec_id": "1234567e8901", "config_hash": "6e30271160047847",
           "fid_features": "pixels"}
    path = tmp_path / "results.csv"
    path.write_text(rows_to_csv([row, {**row, "cell": "x", "snr_db": float("inf"), "fc": None}]))
    back = read_results(path)
    assert back[0]["config_hash"] == "6e30271160047847" and back[0]["codec_id"] == "1234567e8901"
    assert back[0]["seed"] == 2**63 - 1 and isinstance(back[0]["seed"], int)
    assert back[0]["symbols"] == 128 and back[0]["snr_db"] == -10.0 and np.isnan(back[0]["fid"])
    assert back[1]["snr_db"] == float("inf") and back[1]["fc"] is None
    assert rows_to_csv(back) == path.read_text()  # written again byte for byte
    assert set(back[0]) == set(COLUMNS)


# -- interrupted runs resume to the uninterrupted result ------------------------------------------

def test_eval_interrupted_and_resumed_equals_uninterrupted(world, tmp_path, monkeypatch, capsys):
    from meg_lightning.evaluation import sweep

    args = [*cli_base(world), "eval.schemes=[centralized,feature,linear]", "eval.snrs_db=[-10,10]",
            "eval.channels=[awgn]", "eval.bootstrap=5", "eval.fid_features=pixels"]
    full = [a if not a.startswith("out_dir=") else f"out_dir={tmp_path / 'a'}" for a in args]
    cut = [a if not a.startswith("out_dir=") else f"out_dir={tmp_path / 'b'}" for a in args]
    assert run(["eval", *full]) == 0
    real_cell, calls = sweep.run_cell, []

    def run_cell_then_stop(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_cell(*a, **kw)

    monkeypatch.setattr(sweep, "run_cell", run_cell_then_stop)
    assert run(["eval", *cut]) == 130
    assert "interrupted (rerun the same command to resume)" in capsys.readouterr().err
    assert len(sweep.read_results(tmp_path / "b" / "eval" / "results.csv")) == 2
    monkeypatch.setattr(sweep, "run_cell", real_cell)
    assert run(["eval", *cut]) == 0
    assert "4 cells computed, 2 resumed" in capsys.readouterr().out

    def rows(root):
        return {r["cell"]: {k: v for k, v in r.items() if k != "time_s"}
                for r in sweep.read_results(root / "eval" / "results.csv")}

    a, b = rows(tmp_path / "a"), rows(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) == 6
    for cell in a:
        assert a[cell]["seed"] == b[cell]["seed"] == sweep.cell_seed(0, cell)
        # every metric bit for bit (json spells nan alike on both sides)
        assert json.dumps(a[cell], sort_keys=True) == json.dumps(b[cell], sort_keys=True), cell
    for png in (tmp_path / "a" / "eval" / "examples").glob("*.png"):
        assert png.read_bytes() == (tmp_path / "b" / "eval" / "examples" / png.name).read_bytes()
    # a finished sweep: rerunning writes nothing and says so
    before = snapshot(tmp_path / "b")
    assert run(["eval", *cut]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert snapshot(tmp_path / "b") == before


def _codec_cfg(tmp_path, out, *extra):
    from meg_lightning.compose import load_config

    return load_config([f"out_dir={tmp_path / out}", "logger=none", "codec.arch=mlp",
                        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                        *extra])


def test_train_codec_interrupted_and_resumed_equals_uninterrupted(tmp_path, capsys):
    import lightning as L

    from meg_lightning.codecs.train import epochs_done, main
    from meg_lightning.data.datamodule import TensorLatentDataModule
    from meg_lightning.errors import ConfigError

    z = torch.randn(48, 4, 4, 4, generator=torch.Generator().manual_seed(3))

    def dm():
        return TensorLatentDataModule(z, batch_size=8, val_fraction=0.25, test_fraction=0.0)

    class StopInEpoch2(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 2 and batch_idx == 2:
                raise KeyboardInterrupt

    main(_codec_cfg(tmp_path, "a", "trainer.max_epochs=4"), datamodule=dm())
    sigint = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest itself runs in the background
    with pytest.raises(KeyboardInterrupt):
        main(_codec_cfg(tmp_path, "b", "trainer.max_epochs=4"), datamodule=dm(),
             callbacks=[StopInEpoch2()])
    assert signal.getsignal(signal.SIGINT) is sigint  # Lightning's SIG_IGN undone: Ctrl-C works
    folder = tmp_path / "b" / "codec" / "fc0.5"
    assert epochs_done(folder / "last.ckpt") == 2  # last.ckpt after every epoch
    main(_codec_cfg(tmp_path, "b", "trainer.max_epochs=4"), datamodule=dm())
    for name in ("last.ckpt", "best.ckpt"):
        a = torch.load(tmp_path / "a" / "codec" / "fc0.5" / name, weights_only=False)
        b = torch.load(folder / name, weights_only=False)
        assert a["epoch"] == b["epoch"] and a["global_step"] == b["global_step"]
        for k, w in a["state_dict"].items():
            assert torch.equal(w, b["state_dict"][k]), (name, k)
    # a finished run: nothing trained, nothing written
    capsys.readouterr()
    before = snapshot(tmp_path / "b")
    main(_codec_cfg(tmp_path, "b", "trainer.max_epochs=4"), datamodule=dm())
    assert "nothing to do" in capsys.readouterr().out
    assert snapshot(tmp_path / "b") == before
    with pytest.raises(ConfigError, match=r"trainer.max_epochs=3: expected at least 4"):
        main(_codec_cfg(tmp_path, "b", "trainer.max_epochs=3"), datamodule=dm())
    assert snapshot(tmp_path / "b") == before


def test_train_codec_ctrl_c_through_lightning_exits_130(world, monkeypatch, capsys):
    """Lightning catches KeyboardInterrupt and calls sys.exit(1); the CLI still says 130."""
    from meg_lightning.codecs.module import CodecModule

    def interrupted(self, batch, batch_idx):
        raise KeyboardInterrupt

    monkeypatch.setattr(CodecModule, "training_step", interrupted)
    out = world / "codec_interrupt"
    argv = ["train-codec", *cli_base(world), f"out_dir={out}", "codec.arch=mlp",
            "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]
    sigint = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest itself runs in the background
    assert run(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "meg train-codec: interrupted (rerun the same command to resume)"
    assert signal.getsignal(signal.SIGINT) is sigint


def _ppo_args(out: Path, frames: int) -> list[str]:
    return [f"out_dir={out}", "logger=none", "ppo.num_envs=32", "ppo.frames_per_batch=256",
            f"ppo.total_frames={frames}", "ppo.minibatch_size=128", "ppo.num_epochs=2",
            "ppo.hidden=16", "ppo.eval_episodes=64", "ppo.seed_dim=32"]


def test_train_ppo_interrupted_and_resumed_equals_uninterrupted(tmp_path, monkeypatch, capsys):
    from meg_lightning.power import train as ppo_train

    assert run(["train-ppo", *_ppo_args(tmp_path / "a", 768)]) == 0
    real_tqdm = ppo_train.tqdm

    class StopOnSecondBatch(real_tqdm):
        def update(self, n=1):
            if self.n > 0:  # the second batch, after its update and before its checkpoint
                raise KeyboardInterrupt
            return super().update(n)

    monkeypatch.setattr(ppo_train, "tqdm", StopOnSecondBatch)
    assert run(["train-ppo", *_ppo_args(tmp_path / "b", 768)]) == 130
    assert "interrupted (rerun the same command to resume)" in capsys.readouterr().err
    ckpt_b = tmp_path / "b" / "ppo" / "checkpoint.pt"
    assert torch.load(ckpt_b, weights_only=False)["frames"] == 256
    monkeypatch.setattr(ppo_train, "tqdm", real_tqdm)
    assert run(["train-ppo", *_ppo_args(tmp_path / "b", 768)]) == 0
    a = torch.load(tmp_path / "a" / "ppo" / "checkpoint.pt", weights_only=False)
    b = torch.load(ckpt_b, weights_only=False)
    assert a["frames"] == b["frames"] == 768 and a["reward_scale"] == b["reward_scale"]
    for part in ("actor", "critic"):
        for k, w in a[part].items():
            assert torch.equal(w, b[part][k]), (part, k)
    ea = json.loads((tmp_path / "a" / "ppo" / "eval.json").read_text())
    eb = json.loads((tmp_path / "b" / "ppo" / "eval.json").read_text())
    assert ea["policies"] == eb["policies"]
    # a finished run: nothing trained, nothing evaluated, nothing written
    capsys.readouterr()
    before = snapshot(tmp_path / "b")
    assert run(["train-ppo", *_ppo_args(tmp_path / "b", 768)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert snapshot(tmp_path / "b") == before


def test_sigterm_in_a_real_process_exits_130_and_resumes(tmp_path):
    """SIGTERM (a scheduler's stop) is handled like Ctrl-C: exit 130, the resume line, and the
    next run continues from the checkpoint."""
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-m", "meg_lightning.cli", "train-ppo",
            *_ppo_args(tmp_path, 256 * 400)]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    ckpt = tmp_path / "ppo" / "checkpoint.pt"
    deadline = time.monotonic() + 240
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == \
        "meg train-ppo: interrupted (rerun the same command to resume)"
    frames = torch.load(ckpt, weights_only=False)["frames"]
    assert 256 <= frames < 256 * 400


def test_an_interrupt_a_library_turns_into_another_error_still_exits_130(tmp_path, monkeypatch,
                                                                        capsys):
    """A signal that arrives inside library code may surface as another exception (TorchRL's PPO
    loss, stopped inside a ``with`` on a TensorDict, raises a RuntimeError about a tensordict's
    truth value): still exit 130 and the resume line. The same error without a signal is a
    failure (exit 1)."""
    from meg_lightning.power import train as ppo_train

    def mangled(cfg):  # noqa: ARG001
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except KeyboardInterrupt:
            raise RuntimeError("Converting a tensordict to boolean value is not permitted")

    monkeypatch.setattr(ppo_train, "main", mangled)
    term_before = signal.getsignal(signal.SIGTERM)
    assert run(["train-ppo", *_ppo_args(tmp_path, 768)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "meg train-ppo: interrupted (rerun the same command to resume)"

    def plain_failure(cfg):  # noqa: ARG001
        raise RuntimeError("Converting a tensordict to boolean value is not permitted")

    monkeypatch.setattr(ppo_train, "main", plain_failure)
    assert run(["train-ppo", *_ppo_args(tmp_path, 768)]) == 1
    assert "RuntimeError: Converting a tensordict" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == term_before  # the handler found is restored


# -- runtime failures: one line, the key to change; --debug shows the traceback -------------------

@pytest.mark.parametrize("exc, code, needle", [
    (OSError(28, "No space left on device", "/data/x.npy"), 2, "no space left on the device"),
    (PermissionError(13, "Permission denied", "/data/x.npy"), 2, "permission denied"),
    (MemoryError(), 2, "out of memory: lower data.gen_batch_size"),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GB"), 2,
     "out of memory: lower data.gen_batch_size"),
    (FileNotFoundError(2, "No such file or directory", "/proc/x"), 2, "cannot use '/proc/x'"),
    # torch.save on a full disk (seen in the rehearsal): torch's zip writer, not an OSError
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2495490816 vs "
                  "2495490704"), 2, "most likely no space left on the device"),
    (RuntimeError("something broke\nsecond line"), 1, "RuntimeError: something broke second line"),
])
def test_runtime_failures_are_one_line(world, monkeypatch, capsys, exc, code, needle):
    from meg_lightning.data import cache

    def fail(cfg):
        raise exc

    monkeypatch.setattr(cache, "main", fail)
    assert run(["latents", *cli_base(world)]) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert ("--debug" in err) == (code == 1)
    assert run(["latents", "--debug", *cli_base(world)]) == code
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and needle in err.strip().splitlines()[-1]
    monkeypatch.setenv("MEG_DEBUG", "1")
    assert run(["latents", *cli_base(world)]) == code
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_long_prompts_warn_once(world, tmp_path, capfd):
    """A 5,000-character prompt is truncated by the tokenizer: one short note, not 5 KB each."""
    prompts = tmp_path / "long.txt"
    prompts.write_text("".join(f"prompt {i} " + "very " * 1000 + "long\n" for i in range(3)))
    argv = ["latents", f"data.cache_dir={tmp_path / 'cache'}", "logger=none",
            "generation.device=cpu", "data.num_prompts=3", f"data.prompts={prompts}",
            "generation.num_inference_steps=1"]
    assert run(argv) == 0
    err = capfd.readouterr().err
    assert err.count("truncated") <= 1 and "very very very very very very very" not in err, err


def test_torchrl_log_lines_carry_no_colour_codes_when_not_a_terminal():
    """TorchRL logs through a colouring handler; inside a command (stdout not a terminal under
    pytest) the handler formats plain text, and gets its formatter back afterwards."""
    import logging

    import torchrl  # noqa: F401 - installs the handler

    from meg_lightning.runtime import quiet_noise

    handlers = logging.getLogger("torchrl").handlers
    record = logging.LogRecord("torchrl", logging.WARNING, __file__, 0, "a note", (), None)
    coloured = [h for h in handlers if h.formatter and "\x1b[" in h.formatter.format(record)]
    assert coloured  # what the command has to undo
    with quiet_noise():
        assert all("\x1b[" not in h.format(record) and "a note" in h.format(record)
                   for h in handlers)
    assert all("\x1b[" in h.formatter.format(record) for h in coloured)


def test_finished_latents_rerun_writes_nothing(world, capsys):
    before = snapshot(world / "cache")
    assert run(["latents", *cli_base(world)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert snapshot(world / "cache") == before
