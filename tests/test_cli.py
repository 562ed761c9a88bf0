"""The `meg` command line: help, exit codes, one-line errors, nothing half-written on disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from meg_lightning.cli import COMMANDS, run

REPO = Path(__file__).resolve().parents[1]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_help_lists_commands_and_keys(capsys):
    assert run(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in COMMANDS)
    assert run(["latents", "--help"]) == 0
    out = capsys.readouterr().out
    assert "data.num_prompts = 64" in out and "trainer.<any" in out
    assert "codec.fc" not in out  # only the keys the command reads
    # the selected preset's values, and a registered member's own settings
    assert run(["train-codec", "--help", "model=mini", "codec.arch=adaptive"]) == 0
    out = capsys.readouterr().out
    assert "codec.arch = 'adaptive'" in out and "codec.adaptive.width = 64  # " in out
    assert "generation.num_inference_steps = 25" in out and "values for model=mini" in out
    assert run(["train-mini", "--help"]) == 0
    assert "mini.unet_steps = 5000" in capsys.readouterr().out
    assert run([]) == 2


def _cache_args(tmp_path, *extra):
    return ["latents", f"data.cache_dir={tmp_path / 'cache'}", "data.num_prompts=2",
            "data.shard_size=2", "generation.num_inference_steps=2", "logger=none", *extra]


@pytest.mark.parametrize("args, needle", [
    (["nonsense"], "unknown command 'nonsense'"),
    (["latents", "data.num_promtps=4"], "data.num_promtps"),                 # unknown key
    (["latents", "data.num_prompts=many"], "data.num_prompts='many'"),       # wrong type
    (["latents", "generation.num_inference_steps=-1"], "num_inference_steps=-1"),
    (["latents", "data.prompts=/no/such/prompts.txt"], "an existing prompt file"),
    (["latents", "generation.height=70"], "generation.height=70"),            # not a multiple of 8
    (["latents", "data.num_prompts=0"], "data.num_prompts=0"),
    (["latents", "codec.fc=1.2"], "codec.fc=1.2"),
    (["latents", "channel.snr_db=nan"], "channel.snr_db=nan"),
    (["train-codec", "data.num_prompts=4"], "no latent cache"),              # missing cache
    (["latents", "data.val_fraction=0.6", "data.test_fraction=0.5"], "a sum below 1"),
])
def test_bad_input_exits_2_with_one_line_and_no_files(tmp_path, capsys, args, needle):
    argv = [args[0], f"data.cache_dir={tmp_path / 'cache'}", f"out_dir={tmp_path / 'runs'}",
            "logger=none", *args[1:]] if args[0] in COMMANDS else args
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert _files(tmp_path / "cache") == [] and not list(tmp_path.rglob(".tmp-*"))


def test_empty_prompt_file(tmp_path, capsys):
    (tmp_path / "p.txt").write_text("\n")
    assert run(_cache_args(tmp_path, f"data.prompts={tmp_path / 'p.txt'}")) == 2
    assert "it is empty" in capsys.readouterr().err
    assert _files(tmp_path / "cache") == []


def test_cache_errors_leave_the_cache_untouched(tmp_path, capsys):
    assert run(_cache_args(tmp_path)) == 0
    before = {p: (tmp_path / "cache" / p).read_bytes() for p in _files(tmp_path / "cache")}
    assert run(_cache_args(tmp_path, "generation.guidance_scale=3.0")) == 2   # other settings
    assert "other settings" in capsys.readouterr().err
    shard = tmp_path / "cache" / "shard-00000.npy"
    shard.write_bytes(shard.read_bytes()[:-4] + b"\0\0\0\0")                   # corrupt shard
    before[shard.name] = shard.read_bytes()
    assert run(_cache_args(tmp_path)) == 2
    assert "corrupt shard" in capsys.readouterr().err
    after = {p: (tmp_path / "cache" / p).read_bytes() for p in _files(tmp_path / "cache")}
    assert after == before


def test_unknown_model_offline_real_process(tmp_path):
    """A real `meg` process: exit code 2 and one line that says how to provide weights."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    p = subprocess.run([sys.executable, "-m", "meg_lightning.cli", *_cache_args(tmp_path, "model=nobody/no-such-model")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "nobody/no-such-model" in err[0] and "model=tiny" in err[0]
    assert "Traceback" not in p.stderr
