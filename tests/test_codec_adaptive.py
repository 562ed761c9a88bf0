"""The SNR-adaptive, CSI-aware codec (codec.arch=adaptive) and Channel.draw_snr."""

from __future__ import annotations

import math

import pytest
import torch

from meg_lightning.channel import Channel
from meg_lightning.codec import CodecModule, LinearCode, build_codec
from meg_lightning.codec.module import effective_snr_db
from meg_lightning.codec.train import main as train_main
from meg_lightning.config import CodecConfig
from meg_lightning.data.datamodule import TensorLatentDataModule
from meg_lightning.errors import ConfigError

from test_codec import n_params, synthetic_latents

MINI = (4, 8, 8)  # |z| = 256
SD = (4, 64, 64)  # |z| = 16384
PAPER_PARAMS = 563_430_184


def _randomise(model: torch.nn.Module, std: float = 0.1) -> None:
    """Give every zero-initialised FiLM / gain layer weights, so SNR dependence is visible."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


@pytest.mark.parametrize("shape", [MINI, SD])
@pytest.mark.parametrize("fc", [0.25, 0.5, 0.75])
def test_parameter_counts_are_far_below_table3(shape, fc):
    with torch.device("meta"):
        enc, dec = build_codec(shape, CodecConfig(fc=fc, arch="adaptive"))
    n = n_params(enc, dec)
    assert n < PAPER_PARAMS / 100, n  # at most 1% of Table III
    # the dense linear path exists at mini size only (skip=auto): 2 |z| k weights there
    assert enc.dense == dec.dense == (shape == MINI)


def test_shapes_at_sd_size_with_fading_csi():
    m = CodecModule(SD, fc=0.5, arch="adaptive", channel=dict(kind="rayleigh", num_blocks=8))
    z = torch.randn(1, *SD)
    out = m(z, snr_db=5.0, generator=torch.Generator().manual_seed(0))
    assert out["x"].shape == (1, 8192) and out["z_hat"].shape == (1, *SD)


def test_snr_changes_encoder_and_decoder():
    m = CodecModule(MINI, fc=0.25, arch="adaptive")
    _randomise(m)
    z = torch.randn(3, *MINI)
    with torch.no_grad():
        x0, x20 = m.encode(z, -5.0), m.encode(z, 20.0)
        assert not torch.allclose(x0, x20)
        z0, z20 = m.decode(x0, -5.0), m.decode(x0, 20.0)
    assert not torch.allclose(z0, z20)


def test_decoder_uses_per_block_csi():
    m = CodecModule(MINI, fc=0.25, arch="adaptive", channel=dict(kind="rayleigh", num_blocks=4))
    _randomise(m)
    x = torch.randn(2, m.k)
    csi = torch.full((2, 4), 10.0)
    with torch.no_grad():
        same = m.decode(x, 10.0, csi)
        assert torch.allclose(same, m.decode(x, 10.0))  # equal blocks = AWGN at the nominal SNR
        faded = csi.clone()
        faded[:, 2] = -15.0  # one block in a deep fade
        assert not torch.allclose(same, m.decode(x, 10.0, faded))
    with pytest.raises(ConfigError, match="csi_db"):
        m.decode(x, 10.0, torch.zeros(2, 3))  # 3 blocks do not split 32 complex symbols


def test_effective_snr_includes_fading_and_block_power():
    ch = Channel(kind="rayleigh", num_blocks=2, snr_db=7.0)
    h = torch.tensor([[1 + 0j, 0.5j]], dtype=torch.complex64)
    p = torch.tensor([[2.0, 0.0]])
    out = ch(torch.randn(1, 8), h=h, power=p, generator=torch.Generator().manual_seed(0))
    s = effective_snr_db(out)
    assert s[0, 0] == pytest.approx(7.0 + 10 * math.log10(2.0), abs=1e-5)
    assert s[0, 1] < -50  # no power on the block: nothing usable arrived


@pytest.mark.parametrize("kind", ["awgn", "rayleigh"])
def test_draw_snr_first_keeps_the_random_sequence(kind):
    ch = Channel(kind=kind, train_snr_db=[-10, 20], num_blocks=2)
    x = torch.randn(5, 16)
    g1 = torch.Generator().manual_seed(3)
    snr = ch.draw_snr(5, mode="train", generator=g1, like=x)
    a = ch(x, mode="train", snr_db=snr, generator=g1)
    b = ch(x, mode="train", generator=torch.Generator().manual_seed(3))
    assert torch.equal(a["snr_db"], b["snr_db"]) and torch.equal(a["x_hat"], b["x_hat"])
    assert snr.min() >= -10 and snr.max() <= 20 and snr.unique().numel() == 5


def test_klt_initialisation_reaches_the_linear_code():
    """Untrained but KLT-initialised, the dense path is the linear code up to its power loading
    (fixed lambda^-1/4 instead of the SNR's MMSE loading): close to LinearCode at 10 dB."""
    z = synthetic_latents(400, MINI)
    m = CodecModule(MINI, fc=0.25, arch="adaptive")
    m.init_linear(z[:300])
    lin = LinearCode.fit(z[:300], 0.25)
    lin.channel = Channel(snr_db=10.0, normalize=False)
    with torch.no_grad():
        mse = (m(z[300:], snr_db=10.0, generator=torch.Generator().manual_seed(0))["z_hat"]
               - z[300:]).pow(2).mean()
        ref = (lin(z[300:], snr_db=10.0, generator=torch.Generator().manual_seed(0))["z_hat"]
               - z[300:]).pow(2).mean()
    assert float(mse) < 1.15 * float(ref)
    assert bool(m.linear_initialised)


def _cfg(make_cfg, *extra: str):
    return make_cfg("codec.arch=adaptive", "codec.fc=0.25", "codec.width=16", "codec.blocks=1",
                    "codec.lr=0.001", "codec.val_snrs_db=[0,20]", "codec.val_loss=mean",
                    "codec.schedule=cosine", "channel.train_snr_db=[-5,20]",
                    "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
                    "trainer.enable_model_summary=false", *extra)


def _dm(z: torch.Tensor) -> TensorLatentDataModule:
    return TensorLatentDataModule(z, batch_size=16, val_fraction=0.25, test_fraction=0.0)


def test_resume_matches_uninterrupted_run_and_keeps_the_klt_init(make_cfg, tmp_path):
    z = synthetic_latents(64, MINI)
    train_main(_cfg(make_cfg, "trainer.max_epochs=3", f"out_dir={tmp_path / 'a'}"),
               datamodule=_dm(z))
    train_main(_cfg(make_cfg, "trainer.max_epochs=1", f"out_dir={tmp_path / 'b'}"),
               datamodule=_dm(z))
    train_main(_cfg(make_cfg, "trainer.max_epochs=3", f"out_dir={tmp_path / 'b'}"),
               datamodule=_dm(z))

    def ckpt(root, name):
        return torch.load(root / "codec-adaptive" / "fc0.25" / name, map_location="cpu", weights_only=True)

    # last.ckpt is only rewritten when val/loss improves (ModelCheckpoint's save_last), so the
    # exact-resume check compares the best checkpoints, chosen from the same 3 epochs
    a, b = ckpt(tmp_path / "a", "best.ckpt"), ckpt(tmp_path / "b", "best.ckpt")
    assert a["global_step"] == b["global_step"] and a["epoch"] == b["epoch"]
    assert bool(a["state_dict"]["linear_initialised"])
    for name, w in a["state_dict"].items():
        assert torch.equal(w, b["state_dict"][name]), name


def test_early_stopping_and_mean_validation_loss(make_cfg, tmp_path):
    z = synthetic_latents(64, MINI)
    cfg = _cfg(make_cfg, "trainer.max_epochs=50", "codec.early_stop_patience=1", "codec.lr=0.5",
               f"out_dir={tmp_path}")
    train_main(cfg, datamodule=_dm(z))
    last = torch.load(tmp_path / "codec-adaptive" / "fc0.25" / "last.ckpt", map_location="cpu",
                      weights_only=True)
    assert last["epoch"] < 49  # lr 0.5 diverges: stopped early on val/loss
    assert last["hyper_parameters"]["val_loss"] == "mean"


@pytest.mark.parametrize("key,value", [("codec.skip", "wide"), ("codec.schedule", "step"),
                                       ("codec.val_loss", "max"), ("codec.awgn_fraction", "1.5")])
def test_bad_recipe_values_are_config_errors(make_cfg, key, value):
    with pytest.raises(ConfigError, match=key):
        make_cfg(f"{key}={value}")


def test_paper_and_mlp_state_dicts_are_unchanged():
    m = CodecModule((4, 4, 4), fc=0.5, arch="mlp")
    assert "linear_initialised" not in m.state_dict()
    assert not m.adaptive
