"""The latent cache: equality with stock diffusers, resume after SIGKILL, 2 processes, splits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from meg_lightning.data import build_datamodule, split_indices
from meg_lightning.data.cache import LatentCache
from meg_lightning.errors import UserError
from meg_lightning.generation import seed_for
from meg_lightning.data.prompts import builtin_prompts

REPO = Path(__file__).resolve().parents[1]


def _stock(pipe, cfg, i):
    g = cfg.generation
    return pipe(builtin_prompts(i + 1)[i], height=g.height, width=g.width,
                num_inference_steps=g.num_inference_steps, guidance_scale=g.guidance_scale,
                generator=torch.Generator().manual_seed(seed_for(cfg.seed, i)),
                output_type="latent").images[0]


def _meg(*args, env=None, **kw):
    # one thread, as in this process (conftest): tiny models, and a fair comparison
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "meg_lightning.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _latents(folder: Path) -> np.ndarray:
    files = sorted(folder.glob("shard-*.npy"))
    return np.concatenate([np.load(f) for f in files])


@pytest.mark.parametrize("gen_batch_size", [1, 3])
def test_cached_latents_equal_stock_pipeline(make_cfg, tiny_pipe, gen_batch_size):
    cfg = make_cfg("data.num_prompts=5", "data.shard_size=4", f"data.gen_batch_size={gen_batch_size}",
                   "generation.num_inference_steps=4")
    LatentCache(cfg).build(progress=False)
    z = LatentCache(cfg).open()
    assert z.shape == (5, 4, 8, 8)
    for i in range(5):
        ref = _stock(tiny_pipe, cfg, i)
        if gen_batch_size == 1:
            torch.testing.assert_close(z[i], ref, rtol=0, atol=0)  # same computation, bit-exact
        else:
            # batching changes only the float reduction order inside the batched U-Net: bound it
            # relative to the latent's scale (measured: ~1e-6 relative)
            assert (z[i] - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_manifest_records_every_sample(make_cfg):
    cfg = make_cfg("data.num_prompts=6", "data.shard_size=4", "generation.num_inference_steps=2")
    LatentCache(cfg).build(progress=False)
    m = json.loads((Path(cfg.data.cache_dir) / "manifest.json").read_text())
    assert m["num_samples"] == 6 and [s["index"] for s in m["samples"]] == list(range(6))
    assert [s["prompt"] for s in m["samples"]] == builtin_prompts(6)
    assert [s["seed"] for s in m["samples"]] == [seed_for(cfg.seed, i) for i in range(6)]
    assert m["settings"]["model"] == "tiny" and m["shards"][0]["shape"] == [4, 4, 8, 8]
    assert (Path(cfg.data.cache_dir) / "config.yaml").exists()


def test_rerun_is_a_noop_and_extending_n_reuses_shards(make_cfg):
    cfg = make_cfg("data.num_prompts=4", "data.shard_size=2", "generation.num_inference_steps=2")
    assert len(LatentCache(cfg).build(progress=False)) == 2
    assert LatentCache(cfg).build(progress=False) == []
    before = (Path(cfg.data.cache_dir) / "shard-00000.npy").stat().st_mtime_ns
    cfg6 = make_cfg("data.num_prompts=6", "data.shard_size=2", "generation.num_inference_steps=2")
    assert LatentCache(cfg6).build(progress=False) == [2]
    assert (Path(cfg.data.cache_dir) / "shard-00000.npy").stat().st_mtime_ns == before


def test_sigkill_midrun_then_resume_equals_uninterrupted(make_cfg, tmp_path):
    n, shard = 30, 2
    args = [f"data.num_prompts={n}", f"data.shard_size={shard}", "data.gen_batch_size=1",
            "generation.num_inference_steps=6", "logger=none", "generation.device=cpu"]
    killed = tmp_path / "killed"
    p = _meg("latents", *args, f"data.cache_dir={killed}")
    deadline = time.time() + 120
    while not (killed / "shard-00001.json").exists():
        assert p.poll() is None, p.communicate()
        assert time.time() < deadline
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done = sorted(killed.glob("shard-*.json"))
    assert 0 < len(done) < n // shard, "the kill must land mid-run"
    p = _meg("latents", *args, f"data.cache_dir={killed}")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    # the uninterrupted reference, in this process
    full = tmp_path / "full"
    LatentCache(make_cfg(*args, f"data.cache_dir={full}")).build(progress=False)
    a, b = json.loads((killed / "manifest.json").read_text()), json.loads((full / "manifest.json").read_text())
    assert a["samples"] == b["samples"]  # nothing lost, nothing duplicated, same prompts and seeds
    assert [s["index"] for s in a["samples"]] == list(range(n))
    za, zb = _latents(killed), _latents(full)
    assert za.shape == zb.shape == (n, 4, 8, 8)
    assert np.abs(za - zb).max() <= 1e-5 * np.abs(zb).max()  # same thread count: in practice equal
    assert not list(killed.glob(".tmp-*"))


def test_two_processes_equal_one(make_cfg, tmp_path):
    common = ["latents", "data.num_prompts=10", "data.shard_size=2", "generation.num_inference_steps=3",
              "logger=none", "trainer.accelerator=cpu"]
    one, two = tmp_path / "one", tmp_path / "two"
    p1 = _meg(*common, f"data.cache_dir={one}")
    assert p1.wait(timeout=300) == 0, p1.communicate()
    p2 = _meg(*common, f"data.cache_dir={two}", "trainer.devices=2")
    out, err = p2.communicate(timeout=300)
    assert p2.returncode == 0, err
    a, b = json.loads((one / "manifest.json").read_text()), json.loads((two / "manifest.json").read_text())
    assert a["samples"] == b["samples"] and a["settings"] == b["settings"]
    za, zb = _latents(one), _latents(two)
    assert za.shape == zb.shape == (10, 4, 8, 8)
    # each process runs with fewer threads, which changes float reduction order only
    assert np.abs(za - zb).max() <= 1e-5 * np.abs(za).max()


def test_corrupt_shard_is_detected(make_cfg):
    cfg = make_cfg("data.num_prompts=4", "data.shard_size=2", "generation.num_inference_steps=2")
    LatentCache(cfg).build(progress=False)
    f = Path(cfg.data.cache_dir) / "shard-00001.npy"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="corrupt shard .*shard-00001.npy"):
        LatentCache(cfg).open()


def test_other_settings_are_refused(make_cfg):
    cfg = make_cfg("data.num_prompts=2", "data.shard_size=2", "generation.num_inference_steps=2")
    LatentCache(cfg).build(progress=False)
    other = make_cfg("data.num_prompts=2", "data.shard_size=2", "generation.num_inference_steps=3")
    with pytest.raises(UserError, match="num_inference_steps: cache has 2, asked for 3"):
        LatentCache(other).build(progress=False)


def test_datamodule_reads_only_and_splits_deterministically(make_cfg):
    cfg = make_cfg("data.num_prompts=10", "data.shard_size=4", "generation.num_inference_steps=2",
                   "data.batch_size=3")
    with pytest.raises(UserError, match="no latent cache"):
        build_datamodule(cfg).setup("fit")  # setup never generates
    with pytest.raises(UserError, match="no latent cache"):
        build_datamodule(cfg).prepare_data()  # neither does prepare_data by default
    dm = build_datamodule(cfg, generate=True)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.latent_shape == (4, 8, 8)
    batch = next(iter(dm.train_dataloader()))
    assert batch["z"].shape == (3, 4, 8, 8) and batch["z"].dtype == torch.float32
    s = dm.splits
    assert sorted(s["train"] + s["val"] + s["test"]) == list(range(10))
    assert s == split_indices(10, 0.1, 0.1, 0)
    assert split_indices(10, 0.1, 0.1, 1) != s
    z = LatentCache(cfg).open()
    torch.testing.assert_close(dm.dataset("test")[0]["z"], z[s["test"][0]])


def test_open_refuses_too_few(make_cfg):
    cfg = make_cfg("data.num_prompts=2", "data.shard_size=2", "generation.num_inference_steps=2")
    LatentCache(cfg).build(progress=False)
    with pytest.raises(UserError, match="holds 2 of the 4"):
        LatentCache(make_cfg("data.num_prompts=4", "data.shard_size=2",
                             "generation.num_inference_steps=2")).open()
