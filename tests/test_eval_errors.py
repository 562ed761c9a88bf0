"""Errors that name what the user typed, and what a new user sees on every run.

`meg eval` mistakes (a named codec checkpoint of another rate or missing, a rate too small for one
symbol, a per-scheme setting for a scheme that is not swept or has no rate, a duplicate in a swept
list) are one line naming the key and the value, exit 2, before anything is written; a linear code
fitted on fewer training latents than |z| is a one-line warning. `meg latents` and
`meg train-codec` end with one summary line; the progress bar counts epochs from 1; Lightning's
pytree deprecation and TorchRL's INFO lines are not shown.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import N_PROMPTS, cli_base, snapshot

from meg_lightning.cli import run

REPO = Path(__file__).resolve().parents[1]
N = N_PROMPTS


_SWEEP = ["eval.snrs_db=[0]", "eval.channels=[awgn]", "eval.bootstrap=2",
          "eval.fid_features=pixels"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """cache/ (tiny, N latents), train/codec/fc0.25 (a codec of rate 0.25, one epoch) and the
    summary lines `meg latents` and `meg train-codec` printed making them (summary.txt)."""
    root = tmp_path_factory.mktemp("world")
    from meg_lightning.runtime import torch_threads

    capture = []
    with torch_threads(1):
        for argv in (["latents", *cli_base(root)],
                     ["train-codec", *cli_base(root, "train"), "codec.fc=0.25",
                      "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
                      "trainer.enable_model_summary=false"]):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert run(argv) == 0
            capture.append(out.getvalue().strip().splitlines()[-1])
    (root / "summary.txt").write_text("\n".join(capture) + "\n")
    return root


def _ckpt(world: Path) -> str:
    return str(world / "train" / "codec" / "fc0.25" / "best.ckpt")


# (overrides, strings the one stderr line must contain). {w}: the world; {c}: the fc 0.25 codec
BAD_EVAL = [
    # a named checkpoint of another rate, or missing: the key the user set, not codec.fc
    (["eval.schemes=[meg]", 'eval.codec_checkpoints={{"0.5": "{c}"}}'],
     ['eval.codec_checkpoints["0.5"]=', "fc0.25/best.ckpt", "a codec of rate 0.5",
      "one of rate 0.25"]),
    (["eval.schemes=[meg]", 'eval.codec_checkpoints={{"0.50": "{w}/missing.ckpt"}}'],
     ['eval.codec_checkpoints["0.50"]=', "missing.ckpt", "no such file"]),
    (["eval.schemes=[meg]", "eval.fcs=[0.25,0.5]",
      'eval.codec_checkpoints={{"0.25": "{c}", "0.5": "{c}"}}'],
     ['eval.codec_checkpoints["0.5"]=', "one of rate 0.25"]),
    (["eval.schemes=[meg]", "codec.checkpoint={c}"],
     ["codec.checkpoint=", "a codec of rate 0.5", "one of rate 0.25"]),
    (["eval.schemes=[meg]", "codec.checkpoint={w}/missing.ckpt"],
     ["codec.checkpoint=", "missing.ckpt", "no such file"]),
    (["eval.schemes=[meg-adaptive]", 'eval.adaptive_checkpoints={{"0.5": "{c}"}}'],
     ['eval.adaptive_checkpoints["0.5"]=', "one of rate 0.25",
      "make train-codec-adaptive FC=0.5"]),
    (["eval.schemes=[meg-adaptive]", 'eval.adaptive_checkpoints={{"0.5": "{w}/missing.ckpt"}}'],
     ['eval.adaptive_checkpoints["0.5"]=', "no such file"]),
    (["eval.schemes=[meg-adaptive]", "eval.fcs=[0.25]",
      'eval.adaptive_checkpoints={{"0.25": "{c}"}}'],
     ['eval.adaptive_checkpoints["0.25"]=', "codec.arch=adaptive"]),
    # a rate below one symbol: the key the rate came from
    (["eval.schemes=[linear]", "eval.fcs=[0.001]"],
     ["eval.fcs=0.001", "at least one symbol", "|z| = 256"]),
    (["eval.schemes=[capacity]", "eval.fcs=[0.001]"], ["eval.fcs=0.001", "capacity"]),
    (["eval.schemes=[feature,linear]", "eval.scheme_fcs={{linear: [0.5, 0.001]}}"],
     ["eval.scheme_fcs.linear=0.001", "at least one symbol"]),
    (["eval.schemes=[feature,capacity]", "eval.scheme_fcs={{capacity: [0.001]}}"],
     ["eval.scheme_fcs.capacity=0.001"]),
    # per-scheme settings for a scheme without a rate, or not swept
    (["eval.schemes=[feature]", "eval.scheme_fcs={{centralized: [0.5]}}"],
     ["eval.scheme_fcs.centralized=[0.5]", "no compression rate"]),
    (["eval.schemes=[feature]", "eval.scheme_fcs={{linear: [0.5]}}"],
     ["eval.scheme_fcs.linear=[0.5]", "eval.schemes=['feature']"]),
    (["eval.schemes=[feature,meg]", "eval.scheme_fcs={{meg+dm: [0.5]}}"],
     ["eval.scheme_fcs.meg+dm=[0.5]", "a scheme in eval.schemes"]),
    (["eval.schemes=[feature]", "eval.scheme_channels={{centralized: [awgn]}}"],
     ["eval.scheme_channels.centralized=['awgn']", "a scheme in eval.schemes"]),
    # duplicates
    (["eval.schemes=[feature,centralized,feature]"],
     ["eval.schemes=['feature', 'centralized', 'feature']", "'feature' is given twice"]),
    (["eval.fcs=[0.5,0.25,0.5]"], ["eval.fcs=[0.5, 0.25, 0.5]", "0.5 is given twice"]),
    (["eval.fcs=[0.5,0.5000001]"], ["eval.fcs=", "the same cell as 0.5"]),
    (["eval.snrs_db=[0,10,0.0]"], ["eval.snrs_db=[0.0, 10.0, 0.0]", "0.0 is given twice"]),
    (["eval.channels=[awgn,rayleigh,awgn]"], ["eval.channels=", "'awgn' is given twice"]),
    (["eval.scheme_fcs={{linear: [0.25,0.25]}}"], ["eval.scheme_fcs.linear=[0.25, 0.25]"]),
    (["eval.scheme_channels={{feature: [awgn,awgn]}}"], ["eval.scheme_channels.feature="]),
]


@pytest.mark.parametrize("overrides, needles", BAD_EVAL,
                         ids=[" ".join(o)[:60] for o, _ in BAD_EVAL])
def test_eval_error_names_the_key_exit_2_nothing_written(world, capsys, overrides, needles):
    before = snapshot(world)
    argv = ["eval", *cli_base(world), *_SWEEP,
            *[o.format(w=world, c=_ckpt(world)) for o in overrides]]
    code = run(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and not err.startswith("meg eval: error: codec.fc=")
    for needle in needles:
        assert needle.format(w=world) in err, err
    assert snapshot(world) == before


def test_duplicates_and_rateless_entries_are_config_errors(make_cfg):
    from meg_lightning.errors import ConfigError

    with pytest.raises(ConfigError, match=r"eval.snrs_db=.*10.0 is given twice"):
        make_cfg("eval.snrs_db=[10,10]")
    with pytest.raises(ConfigError, match=r"eval.scheme_fcs.feature=.*no compression rate"):
        make_cfg("eval.scheme_fcs={feature: [0.5]}")
    cfg = make_cfg("eval.fcs=[0.25,0.5]", "eval.snrs_db=[-10,0,10]")  # distinct: fine
    assert list(cfg.eval.fcs) == [0.25, 0.5]


def test_linear_on_fewer_latents_than_z_warns_once_with_the_numbers(world, capsys):
    argv = ["eval", *cli_base(world, "out_linear"), *_SWEEP, "eval.schemes=[linear]",
            "eval.fcs=[0.25,0.5]"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run(argv) == 0
    lines = [str(w.message) for w in caught if "linear: fitted on" in str(w.message)]
    assert len(lines) == 1, lines  # one line per sweep, not per rate
    assert "fitted on 4 training latents" in lines[0] and "256 dimensions" in lines[0]
    assert "\n" not in lines[0] and "data.num_prompts" in lines[0]

    from meg_lightning.evaluation.sweep import warn_few_latents

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_few_latents(300, 256)  # enough: nothing said
    assert not caught


def test_latents_and_train_codec_end_with_one_summary_line(world):
    latents, codec = (world / "summary.txt").read_text().splitlines()
    assert latents.startswith(f"latents: {N} latents of shape 4x8x8 (model=tiny) in "), latents
    assert "s per latent (lower is better)" in latents and str(world / "cache") in latents
    assert re.match(r"train-codec: val/loss [0-9.e+-]+ \(lower is better: latent MSE at the "
                    r"training SNR 20 dB\) after 1 epoch; checkpoint .*fc0.25/best.ckpt", codec), \
        codec


def test_finished_train_codec_prints_the_summary_again(world, capsys):
    argv = ["train-codec", *cli_base(world, "train"), "codec.fc=0.25", "trainer.max_epochs=1"]
    assert run(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "nothing to do" in out[0]
    assert out[-1] == (world / "summary.txt").read_text().splitlines()[1]


def test_train_codec_summary_names_the_logger_files(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    from meg_lightning.codecs.train import summary_line
    from meg_lightning.compose import load_config

    cfg = load_config(["codec.val_loss=mean", "codec.val_snrs_db=[0,10]"])
    logger = CSVLogger(tmp_path, name="codec-fc0.5")
    line = summary_line(cfg, 0.125, 20, tmp_path / "best.ckpt", logger)
    assert line.startswith("train-codec: val/loss 0.125 (lower is better: latent MSE averaged "
                           "over 0, 10 dB) after 20 epochs; checkpoint ")
    assert line.endswith(f"; CSV logs {tmp_path / 'codec-fc0.5' / 'version_0'}")
    assert "\n" not in line and summary_line(cfg, None, 0, tmp_path, None).count("n/a") == 1


def test_progress_bar_counts_epochs_from_one():
    from meg_lightning.trainer import EpochRichProgressBar, EpochTQDMProgressBar, progress_bar

    bar = EpochRichProgressBar()
    bar._trainer = SimpleNamespace(current_epoch=19, max_epochs=20)
    assert bar._get_train_description(19).strip() == "Epoch 20/20"
    bar._trainer = SimpleNamespace(current_epoch=0, max_epochs=-1)
    assert bar._get_train_description(0).strip() == "Epoch 1"
    assert isinstance(progress_bar(), (EpochRichProgressBar, EpochTQDMProgressBar))

    class _Bar:
        def __init__(self):
            self.description = None

        def set_description(self, text):
            self.description = text

        def reset(self):
            pass

    tqdm_bar = EpochTQDMProgressBar()
    tqdm_bar._train_progress_bar = _Bar()
    trainer = SimpleNamespace(current_epoch=4, max_epochs=5, num_training_batches=3)
    tqdm_bar._trainer = trainer
    tqdm_bar.on_train_epoch_start(trainer)
    assert tqdm_bar.train_progress_bar.description == "Epoch 5/5"


def test_train_codec_shows_no_pytree_deprecation(tmp_path):
    import torch

    from meg_lightning.codecs.train import main
    from meg_lightning.compose import load_config
    from meg_lightning.data.datamodule import TensorLatentDataModule

    cfg = load_config([f"out_dir={tmp_path}", "logger=none", "codec.arch=mlp",
                       "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
                       "trainer.enable_model_summary=false"])
    dm = TensorLatentDataModule(torch.randn(16, 4, 8, 8), batch_size=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(cfg, datamodule=dm)
    assert not [w for w in caught if "LeafSpec" in str(w.message)]


def test_quiet_noise_hides_torchrl_info(monkeypatch):
    import torchrl  # noqa: F401 - its logger

    from meg_lightning.runtime import TORCHRL_LEVEL, quiet_noise

    monkeypatch.delenv(TORCHRL_LEVEL[0], raising=False)
    log = logging.getLogger("torchrl")
    before = log.level
    log.setLevel(logging.INFO)
    try:
        with quiet_noise():
            assert not log.isEnabledFor(logging.INFO)
            assert log.isEnabledFor(logging.WARNING)
        assert log.level == logging.INFO  # restored
    finally:
        log.setLevel(before)


def test_cli_sets_torchrl_level_before_torchrl_loads():
    src = (REPO / "src" / "meg_lightning" / "cli.py").read_text()
    main = src[src.index("def main()"):]
    assert "os.environ.setdefault(*TORCHRL_LEVEL)" in main
    assert main.index("TORCHRL_LEVEL") < main.index("run(sys.argv")


def test_help_lists_only_the_keys_a_command_reads_with_whole_comments(capsys):
    assert run(["latents", "--help", "model=mini"]) == 0
    out = capsys.readouterr().out
    assert "generation.num_inference_steps = 25" in out and "data.cache_dir = 'data/latents/mini'" \
        in out
    assert "out_dir =" not in out and "logger =" not in out and "wandb." not in out
    assert run(["eval", "--help"]) == 0
    out = capsys.readouterr().out
    # a comment continued on the next source line is shown whole
    assert "eval.num_images = None  # test images per cell; null: the whole test split (FID is " \
        "a set metric: use hundreds when possible; the count is reported)" in out


def test_make_targets_default_to_the_mini_model():
    text = (REPO / "Makefile").read_text()
    assert re.search(r"^MODEL \?= mini$", text, re.MULTILINE)
    readme = (REPO / "README.md").read_text()
    assert "make latents" in readme and "MODEL=mini" in readme
