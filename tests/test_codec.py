"""Compression codec (paper Sec. III-C, Appendix A): components, Lightning training, checkpoints."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from helpers import codec_module
from meg_lightning.codecs import CodecModule, build_codec, code_length, default_hidden, load_codec
from meg_lightning.codecs.base import CompressionEncoder
from meg_lightning.codecs.mlp import MLPDecoder
from meg_lightning.codecs.train import main as train_main
from meg_lightning.data.datamodule import TensorLatentDataModule
from meg_lightning.errors import ConfigError, UserError

TINY = (4, 4, 4)  # |z| = 64


def n_params(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def synthetic_latents(n: int = 64, shape=TINY, seed: int = 0) -> torch.Tensor:
    """Correlated Gaussian latents (a decaying spectrum), like real latents, not white noise."""
    g = torch.Generator().manual_seed(seed)
    d = math.prod(shape)
    mix = torch.randn(d, d, generator=g) * (0.85 ** torch.arange(d)).unsqueeze(0)
    return (torch.randn(n, d, generator=g) @ mix.T / 2).reshape(n, *shape)


# -- components --------------------------------------------------------------------------------
def test_paper_codec_has_exactly_563430184_parameters():
    with torch.device("meta"):  # nothing allocated
        enc, dec = build_codec((4, 64, 64), 0.5, "paper")
    assert dec.hidden == 9000 == default_hidden(16384)
    assert n_params(enc) == 134_225_920  # Table III rows
    assert n_params(dec.fc1) == 134_234_112
    assert n_params(dec.fc2) == 147_465_000
    assert n_params(dec.fc3) == 147_472_384
    assert n_params(dec.out_norm) == 32_768
    assert n_params(dec.norm1, dec.norm2) == 0
    assert n_params(enc, dec) == 563_430_184


@pytest.mark.parametrize("fc,k", [(0.1, 1638), (0.3, 4915), (0.5, 8192), (0.7, 11469),
                                  (0.9, 14746)])
def test_code_lengths_match_table2(fc, k):
    assert code_length(fc, 16384) == k


@pytest.mark.parametrize("fc", [0.0, -0.1, 1.5, float("nan"), "0.5", True])
def test_bad_fc_is_one_line_config_error(fc):
    with pytest.raises(ConfigError) as e:
        code_length(fc, 16384)
    assert "codec.fc" in str(e.value) and "(0, 1]" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("arch", ["paper", "mlp"])
@pytest.mark.parametrize("fc", [0.1, 0.5, 0.9, 1.0])
def test_shapes(arch, fc):
    shape = (4, 8, 8)
    enc, dec = build_codec(shape, fc, arch)
    z = torch.randn(3, *shape)
    x = enc(z)
    assert x.shape == (3, code_length(fc, 256))
    assert dec(x).shape == z.shape


def test_latent_shape_mismatch_is_config_error():
    enc = CompressionEncoder(TINY, 32)
    with pytest.raises(ConfigError, match=r"z.shape.*\(B, 4, 4, 4\)"):
        enc(torch.randn(2, 4, 8, 8))
    dec = MLPDecoder(TINY, 32, hidden=16)
    with pytest.raises(ConfigError, match="x_hat.shape"):
        dec(torch.randn(2, 31))
    with pytest.raises(ConfigError, match="codec.arch='cnn': expected one of paper, mlp, adaptive"):
        build_codec(TINY, 0.5, "cnn")
    with pytest.raises(ConfigError, match="codec.mlp.hidden"):
        build_codec(TINY, 0.5, "mlp", {"hidden": 0})
    model = codec_module(TINY, fc=0.5, arch="mlp")
    with pytest.raises(ConfigError) as e:
        model(torch.randn(2, 4, 8, 8))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kind", ["awgn", "rayleigh"])
def test_gradients_reach_encoder_through_channel(kind):
    ch = {"kind": kind, "num_blocks": 4 if kind == "rayleigh" else 1}
    model = codec_module((4, 8, 8), fc=0.5, arch="paper", channel=ch)
    z = torch.randn(4, 4, 8, 8)
    out = model(z, mode="train", generator=torch.Generator().manual_seed(0))
    assert set(out) == {"z_hat", "x", "x_hat", "snr_db", "csi_db"}  # and the channel state
    torch.nn.functional.mse_loss(out["z_hat"], z).backward()
    g = model.encoder.linear.weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_forward_modes_and_noise():
    model = codec_module(TINY, fc=0.5, arch="mlp").eval()
    z = torch.randn(4, *TINY)
    a = model(z, snr_db=0.0, generator=torch.Generator().manual_seed(1))
    b = model(z, snr_db=0.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a["z_hat"], b["z_hat"])  # seeded eval is reproducible
    assert not torch.equal(a["x_hat"], a["x"])
    with pytest.raises(ValueError, match="mode"):
        model(z, mode="noise")


def test_block_powers_reach_the_channel():
    model = codec_module(TINY, fc=0.5, arch="mlp", channel={"kind": "rayleigh", "num_blocks": 2})
    power = torch.tensor([[2.0, 0.0]]).expand(3, 2)  # the second block gets no power (eq. 29)
    out = model(torch.randn(3, *TINY), snr_db=10.0, power=power)
    assert torch.all(out["x_hat"][:, 16:] == 0) and torch.all(out["x_hat"][:, :16] != 0)


# -- training ----------------------------------------------------------------------------------
def _cfg(make_cfg, *extra: str):
    return make_cfg("codec.arch=mlp", "codec.fc=0.5", "codec.lr=0.003", "codec.val_snrs_db=[0,10]",
                    "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
                    "trainer.enable_model_summary=false", *extra)


def _dm(z: torch.Tensor) -> TensorLatentDataModule:
    return TensorLatentDataModule(z, batch_size=8, val_fraction=0.25, test_fraction=0.0)


def test_training_lowers_validation_loss(make_cfg):
    cfg = _cfg(make_cfg, "trainer.max_epochs=8", "logger=csv")
    z = synthetic_latents(64)
    dm = _dm(z)
    import lightning as L

    before = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                       enable_model_summary=False).validate(
        CodecModule.from_config(cfg, TINY), datamodule=dm, verbose=False)[0]["val/loss"]
    best = train_main(cfg, datamodule=dm)
    folder = Path(cfg.out_dir) / "codec" / "fc0.5"
    assert best == folder / "best.ckpt" and best.is_file()
    assert (folder / "last.ckpt").is_file() and (folder / "config.yaml").is_file()
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    after = float(ckpt["callbacks"][next(k for k in ckpt["callbacks"] if "ModelCheckpoint" in k)]
                  ["best_model_score"])
    assert after < 0.7 * before
    metrics = (next(folder.rglob("metrics.csv"))).read_text().splitlines()[0]
    for key in ("train/loss", "val/loss", "val/nmse@0dB", "val/psnr@10dB", "val/mse@20dB"):
        assert key in metrics


def test_resume_matches_uninterrupted_run(make_cfg, tmp_path):
    z = synthetic_latents(48)
    full = _cfg(make_cfg, "trainer.max_epochs=4", f"out_dir={tmp_path / 'a'}")
    train_main(full, datamodule=_dm(z))
    half = _cfg(make_cfg, "trainer.max_epochs=2", f"out_dir={tmp_path / 'b'}")
    train_main(half, datamodule=_dm(z))
    resumed = _cfg(make_cfg, "trainer.max_epochs=4", f"out_dir={tmp_path / 'b'}")
    train_main(resumed, datamodule=_dm(z))  # picks up b/codec/fc0.5/last.ckpt

    def weights(root):
        return torch.load(root / "codec" / "fc0.5" / "last.ckpt", map_location="cpu",
                          weights_only=True)

    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a["global_step"] == b["global_step"] == 4 * 5  # 36 train latents / batch 8 -> 5 steps
    for name, w in a["state_dict"].items():
        assert torch.equal(w, b["state_dict"][name]), name


def test_load_codec_round_trip_and_mismatches(make_cfg, tmp_path):
    cfg = _cfg(make_cfg, "trainer.max_epochs=1")
    z = synthetic_latents(32)
    best = train_main(cfg, datamodule=_dm(z))
    model = load_codec(best, latent_shape=TINY, fc=0.5)
    assert not model.training and model.k == 32 and model.codec_cfg.arch == "mlp"
    assert model.hparams.channel["kind"] == cfg.channel.kind
    out = model(z[:2], snr_db=10.0)
    assert out["z_hat"].shape == (2, *TINY)
    with pytest.raises(ConfigError, match="codec.fc=0.3") as e:
        load_codec(best, fc=0.3)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"latent_shape=\(4, 8, 8\)"):
        load_codec(best, latent_shape=(4, 8, 8))
    with pytest.raises(UserError, match="not found"):
        load_codec(tmp_path / "missing.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    with pytest.raises(UserError, match="could not be read"):
        load_codec(junk)


DDP_SCRIPT = """
import math, sys, torch
from meg_lightning.compose import load_config
from meg_lightning.codecs.train import main
from meg_lightning.data.datamodule import TensorLatentDataModule
out = sys.argv[1]
cfg = load_config(["logger=none", f"out_dir={out}", "codec.arch=mlp", "codec.fc=0.5",
                   "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
                   "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
                   "trainer.enable_model_summary=false"])
z = torch.randn(40, 4, 4, 4, generator=torch.Generator().manual_seed(0))
best = main(cfg, datamodule=TensorLatentDataModule(z, batch_size=4, val_fraction=0.2,
                                                   test_fraction=0.0))
print("BEST", best)
"""


def test_ddp_two_cpu_processes(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "runs")], capture_output=True,
                       text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "BEST" in r.stdout
    ckpt = torch.load(tmp_path / "runs" / "codec" / "fc0.5" / "last.ckpt", map_location="cpu",
                      weights_only=True)
    assert ckpt["global_step"] == 2 * 4  # 32 train latents / (2 ranks x batch 4) per epoch


@pytest.mark.slow
def test_cli_train_codec_on_the_tiny_latent_cache(tmp_path):
    """`meg latents` then `meg train-codec` end to end: trains, checkpoints."""
    from meg_lightning.cli import run

    args = ["model=tiny", "data.num_prompts=16", f"data.cache_dir={tmp_path / 'cache'}",
            f"out_dir={tmp_path / 'runs'}", "logger=csv", "trainer.max_epochs=2",
            "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]
    assert run(["train-codec", *args]) == 2  # no cache yet: training never generates
    assert run(["latents", *args]) == 0
    assert run(["train-codec", *args]) == 0
    best = tmp_path / "runs" / "codec" / "fc0.5" / "best.ckpt"
    model = load_codec(best, fc=0.5)
    assert model.codec_cfg.arch == "mlp" and len(model.latent_shape) == 3
    assert run(["train-codec", *args, "codec.fc=1.5"]) == 2


def test_resume_refuses_a_checkpoint_of_another_architecture(make_cfg):
    z = synthetic_latents(32)
    train_main(_cfg(make_cfg, "trainer.max_epochs=1"), datamodule=_dm(z))
    with pytest.raises(UserError, match="arch='mlp'.*arch='paper'"):
        train_main(_cfg(make_cfg, "trainer.max_epochs=2", "codec.arch=paper"), datamodule=_dm(z))


def test_a_codec_trained_on_other_latents_is_neither_resumed_nor_evaluated(make_cfg):
    """The checkpoint records which latents it saw (config.data_id): another model, prompt
    source or split in the same out_dir is refused in one line instead of silently reused."""
    from meg_lightning.config import data_id

    z = synthetic_latents(32)
    cfg = _cfg(make_cfg, "trainer.max_epochs=1")
    best = train_main(cfg, datamodule=_dm(z))
    assert load_codec(best).hparams["data_id"] == data_id(cfg)
    other = _cfg(make_cfg, "trainer.max_epochs=2", "model=mini")
    assert data_id(other) != data_id(cfg)
    assert data_id(_cfg(make_cfg, "data.batch_size=3", "data.cache_dir=/elsewhere")) == \
        data_id(cfg)  # how latents are read is not which latents they are
    with pytest.raises(UserError, match="trained with data_id=") as e:
        train_main(other, datamodule=_dm(z))
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="trained on other latents") as e:
        load_codec(best, data_id=data_id(other))
    assert "\n" not in str(e.value)
    assert load_codec(best, data_id=data_id(cfg)).k == 32
    # a checkpoint from before the id was recorded still loads
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    del ckpt["hyper_parameters"]["data_id"]
    torch.save(ckpt, best)
    assert load_codec(best, data_id=data_id(other)).k == 32
