"""The SNR-adaptive, CSI-aware codec (codec.arch=adaptive) and Channel.draw_snr."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import codec_module
from meg_lightning.channels import make as make_channel
from meg_lightning.codecs import LinearCode, build_codec
from meg_lightning.codecs.train import main as train_main
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
        enc, dec = build_codec(shape, fc, "adaptive")
    n = n_params(enc, dec)
    assert n < PAPER_PARAMS / 100, n  # at most 1% of Table III
    # the dense linear path exists at mini size only (skip=auto): 2 |z| k weights there
    assert enc.dense == dec.dense == (shape == MINI)


def test_shapes_at_sd_size_with_fading_csi():
    m = codec_module(SD, fc=0.5, arch="adaptive", channel=dict(kind="rayleigh", num_blocks=8))
    z = torch.randn(1, *SD)
    out = m(z, snr_db=5.0, generator=torch.Generator().manual_seed(0))
    assert out["x"].shape == (1, 8192) and out["z_hat"].shape == (1, *SD)


def test_snr_changes_encoder_and_decoder():
    m = codec_module(MINI, fc=0.25, arch="adaptive")
    _randomise(m)
    z = torch.randn(3, *MINI)
    with torch.no_grad():
        x0, x20 = m.encode(z, -5.0), m.encode(z, 20.0)
        assert not torch.allclose(x0, x20)
        z0, z20 = m.decode(x0, -5.0), m.decode(x0, 20.0)
    assert not torch.allclose(z0, z20)


def test_decoder_uses_per_block_csi():
    m = codec_module(MINI, fc=0.25, arch="adaptive", channel=dict(kind="rayleigh", num_blocks=4))
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
    ch = make_channel("rayleigh", num_blocks=2, snr_db=7.0)
    h = torch.tensor([[1 + 0j, 0.5j]], dtype=torch.complex64)
    p = torch.tensor([[2.0, 0.0]])
    out = ch(torch.randn(1, 8), h=h, power=p, generator=torch.Generator().manual_seed(0))
    s = out["csi_db"]
    assert s[0, 0] == pytest.approx(7.0 + 10 * math.log10(2.0), abs=1e-5)
    assert s[0, 1] < -50  # no power on the block: nothing usable arrived


@pytest.mark.parametrize("kind", ["awgn", "rayleigh"])
def test_draw_snr_first_keeps_the_random_sequence(kind):
    ch = make_channel(kind, train_snr_db=[-10, 20], num_blocks=2)
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
    m = codec_module(MINI, fc=0.25, arch="adaptive")
    m.init_linear(z[:300])
    lin = LinearCode.fit(z[:300], 0.25)
    lin.channel = make_channel("awgn", snr_db=10.0, normalize=False)
    with torch.no_grad():
        mse = (m(z[300:], snr_db=10.0, generator=torch.Generator().manual_seed(0))["z_hat"]
               - z[300:]).pow(2).mean()
        ref = (lin(z[300:], snr_db=10.0, generator=torch.Generator().manual_seed(0))["z_hat"]
               - z[300:]).pow(2).mean()
    assert float(mse) < 1.15 * float(ref)
    assert bool(m.linear_initialised)


def _cfg(make_cfg, *extra: str):
    return make_cfg("codec.arch=adaptive", "codec.fc=0.25", "codec.adaptive.width=16", "codec.adaptive.blocks=1",
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
    # the best epoch is a resumed one (else equal best checkpoints would prove nothing: before
    # retarget_cosine the resumed run kept the 1-epoch cosine and its best stayed behind)
    assert a["epoch"] == 2
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
    assert last["hyper_parameters"]["codec"]["val_loss"] == "mean"


@pytest.mark.parametrize("key,value", [("codec.adaptive.skip", "wide"),
                                       ("codec.schedule", "step"),
                                       ("codec.val_loss", "max"), ("codec.awgn_fraction", "1.5"),
                                       ("codec.adaptive.gate", "soft"),
                                       ("codec.adaptive.dense_aux", "-1"),
                                       ("codec.adaptive.width", "0")])
def test_bad_recipe_values_are_config_errors(make_cfg, key, value):
    with pytest.raises(ConfigError, match=key):
        make_cfg(f"{key}={value}")


def test_paper_and_mlp_state_dicts_are_unchanged():
    m = codec_module((4, 4, 4), fc=0.5, arch="mlp")
    assert "linear_initialised" not in m.state_dict()
    assert not m.adaptive


@pytest.mark.parametrize("kind", ["awgn", "rayleigh"])
def test_posterior_gate_scales_the_correction_along_each_sent_component(kind):
    """gate=posterior: along KLT component i the decoder's non-linear correction is the ungated
    one times 1 - shrink_i (the component's LMMSE posterior variance share); outside the sent
    components it is untouched. Checked against the same weights without the gate."""
    z = synthetic_latents(300, MINI)
    ch = dict(kind=kind, num_blocks=4)
    gated = codec_module(MINI, fc=0.5, arch="adaptive", gate="posterior", channel=ch)
    gated.init_linear(z)
    _randomise(gated, std=0.02)  # a live conv path (its head starts at zero)
    plain = codec_module(MINI, fc=0.5, arch="adaptive", channel=ch)
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if k != "decoder.basis"})
    U = gated.decoder.basis  # (256, k), orthonormal columns
    assert torch.allclose(U.T @ U, torch.eye(U.shape[1]), atol=1e-4)
    for snr in (-10.0, 5.0, 30.0):
        g = [torch.Generator().manual_seed(3) for _ in range(2)]
        with torch.no_grad():
            a, b = gated(z[:16], snr_db=snr, generator=g[0]), plain(z[:16], snr_db=snr, generator=g[1])
        assert torch.equal(a["z_lin"], b["z_lin"])
        ra, rb = (a["z_hat"] - a["z_lin"]).flatten(1), (b["z_hat"] - b["z_lin"]).flatten(1)
        # the shrink the decoder applied: from its dense path's relative powers and block SNRs
        dec = gated.decoder
        with torch.no_grad():
            lg = gated.encoder.log_gain(gated.encoder.embed(torch.full((16, 1), snr / 10.0)))
        log_p = 2 * lg + dec.log_var
        log_p = log_p - torch.logsumexp(log_p, 1, keepdim=True) + math.log(dec.k)
        shrink = torch.sigmoid(log_p + dec._symbol_snr(a["csi_db"]) * math.log(10) / 10)
        assert _close(ra @ U, (1 - shrink) * (rb @ U)), snr
        tail = lambda r: r - (r @ U) @ U.T  # noqa: E731 - the part outside the sent components
        assert _close(tail(ra), tail(rb)), snr
    # at high SNR the strong components are kept as the linear code received them
    assert float(shrink[:, :8].min()) > 0.99


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> bool:
    return float((a - b).abs().max()) <= rel * float(b.abs().max())


def test_gate_needs_the_dense_path():
    with pytest.raises(ConfigError, match="codec.gate"):
        codec_module(MINI, fc=0.5, arch="adaptive", skip="none", gate="posterior")


@pytest.mark.parametrize("loss", ["mse", "linear_ratio"])
def test_dense_aux_adds_the_dense_path_loss(loss):
    """dense_aux = w: the training loss is the codec's loss + w x the same loss of the dense
    path's estimate alone (same channel draw, same per-sample reference); w = 0 is the plain
    loss."""
    z = synthetic_latents(32, MINI)
    losses = {}
    for w in (0.0, 2.0):
        torch.manual_seed(0)  # the same initial weights
        m = codec_module(MINI, fc=0.25, arch="adaptive", dense_aux=w, loss=loss,
                        channel=dict(kind="awgn", train_snr_db=[0.0, 20.0]))
        _randomise(m)
        if loss == "linear_ratio":
            m.fit_reference(z)
        m.log = lambda *a, **k: None  # no Trainer attached
        losses[w] = float(m.training_step({"z": z}, 0))
    out = m(z, mode="train", generator=m._generator(z.device, "train", 0, 0))
    ref = m.sample_reference(out["csi_db"]) if loss == "linear_ratio" else None
    dense = float(m._loss(out["z_lin"], z, ref))
    per = (out["z_lin"] - z).pow(2).flatten(1).mean(1)
    assert dense == pytest.approx(float(per.mean() if ref is None else (per / ref).mean()),
                                  rel=1e-5)
    assert dense > 0
    assert losses[2.0] == pytest.approx(losses[0.0] + 2.0 * dense, rel=1e-5)


def test_resume_refuses_another_gate(tmp_path):
    """A run cannot resume from a checkpoint of another gate (its state dict differs); one
    written before the gate existed (the flat hyper-parameters of older checkpoints) counts as
    gate=none."""
    from meg_lightning.codecs.train import check_resumable
    from meg_lightning.errors import UserError

    old = codec_module(MINI, fc=0.5, arch="adaptive")
    flat = {"latent_shape": list(MINI), "fc": 0.5, "arch": "adaptive", "hidden": None,
            "width": 64, "blocks": 2, "skip": "auto", "linear_init": True, "seed": 0,
            "channel": dict(old.hparams["channel"]), "data_id": None}
    torch.save({"hyper_parameters": flat, "state_dict": old.state_dict()}, tmp_path / "last.ckpt")
    check_resumable(tmp_path / "last.ckpt", codec_module(MINI, fc=0.5, arch="adaptive"))
    with pytest.raises(UserError, match="trained with codec.adaptive.gate='none', this run asks "
                                        "for codec.adaptive.gate='posterior'"):
        check_resumable(tmp_path / "last.ckpt",
                        codec_module(MINI, fc=0.5, arch="adaptive", gate="posterior"))
    with pytest.raises(UserError, match="codec.adaptive.width=64, this run asks for "
                                        "codec.adaptive.width=16"):
        check_resumable(tmp_path / "last.ckpt",
                        codec_module(MINI, fc=0.5, arch="adaptive", width=16))


def test_freeze_dense_keeps_the_klt_and_trains_the_power_loading(make_cfg, tmp_path):
    """freeze_dense: after training, the dense path is still the KLT that linear_init fitted
    (encoder U^T, decoder U, orthonormal; the priors unchanged) while its per-SNR gains moved."""
    z = synthetic_latents(160, MINI)  # 120 training latents: a full-rank KLT for k = 64
    train_main(_cfg(make_cfg, "trainer.max_epochs=2", "codec.adaptive.freeze_dense=true",
                    "codec.adaptive.gate=posterior", f"out_dir={tmp_path}"), datamodule=_dm(z))
    sd = torch.load(tmp_path / "codec-adaptive" / "fc0.25" / "last.ckpt", map_location="cpu",
                    weights_only=True)["state_dict"]
    enc, dec = sd["encoder.linear.weight"], sd["decoder.linear.weight"]  # (k, |z|), (|z|, k)
    assert torch.equal(enc, dec.T) and torch.equal(dec, sd["decoder.basis"])
    assert torch.allclose(enc @ enc.T, torch.eye(enc.shape[0]), atol=1e-4)
    assert sd["encoder.gain.weight"].abs().sum() > 0  # the power loading trained (init: 0)


def test_dense_aux_needs_the_dense_path():
    with pytest.raises(ConfigError, match="codec.adaptive.dense_aux"):
        codec_module(MINI, fc=0.5, arch="adaptive", skip="none", dense_aux=1.0)


def test_freeze_dense_needs_a_klt_initialised_dense_path(make_cfg):
    for kw in (dict(skip="none"), dict(linear_init=False)):
        with pytest.raises(ConfigError, match="codec.adaptive.freeze_dense"):
            codec_module(MINI, fc=0.5, arch="adaptive", freeze_dense=True, **kw)
    # the adaptive codec's own settings are not settings of the others
    with pytest.raises(ConfigError, match="codec.freeze_dense=.*a known key"):
        make_cfg("codec.arch=mlp", "codec.freeze_dense=true")
