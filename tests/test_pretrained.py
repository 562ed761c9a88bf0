"""The SNR-adaptive codecs shipped for mini, the meg-adaptive scheme and the recipe that makes them."""

from __future__ import annotations

import math
import re

import pytest
import torch
from conftest import REPO
from helpers import codec_module

from meg_lightning import recipe
from meg_lightning.channels import make as make_channel
from meg_lightning.codecs import LinearCode, pretrained
from meg_lightning.codecs.base import code_length
from meg_lightning.codecs.store import codec_source
from meg_lightning.errors import UserError
from meg_lightning.schemes.meg import AdaptiveLatentScheme

MINI = (4, 8, 8)


def test_the_makefile_recipe_is_the_shipped_recipe():
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    args = re.search(r"^ADAPTIVE_ARGS = (.*)$", text, re.M).group(1).split()
    assert args == recipe.RECIPE


@pytest.mark.parametrize("fc", ["0.1", "0.25", "0.5", "0.6", "0.75"])
def test_the_makefile_trains_each_rate_at_the_recipes_width(fc):
    import subprocess

    out = subprocess.run(["make", "-n", "-C", str(REPO), "train-codec-adaptive", f"FC={fc}"],
                         capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if "meg train-codec" in ln)
    assert f"codec.fc={fc} " in line
    assert re.findall(r"codec\.adaptive\.width=(\d+)", line) == [str(recipe.recipe_width(float(fc)))]
    assert recipe.recipe_width(0.5) == 64 and recipe.recipe_width(0.75) == 128


@pytest.mark.parametrize("fc", pretrained.SHIPPED_FCS)
def test_a_shipped_mini_codec_loads_as_the_adaptive_codec_it_says(fc):
    codec = pretrained.load_pretrained("mini", fc, MINI)
    card = pretrained.read_card("mini", fc)
    assert codec.adaptive and not codec.training
    assert codec.k == code_length(fc, 256)
    # its card says how it was made: the recipe, the data, the time
    for key in recipe.RECIPE:
        assert key in card["recipe"]
    assert card["hyper_parameters"]["codec"]["adaptive"]["width"] == recipe.recipe_width(fc)
    assert card["data"]["data_id"] and card["train_seconds"] > 0
    assert card["parameters"] == sum(p.numel() for p in codec.parameters())
    # one model for every SNR: the same latents get another code at another SNR
    z = torch.randn(2, *MINI)
    with torch.no_grad():
        assert not torch.allclose(codec.encode(z, -10.0), codec.encode(z, 20.0))


def test_no_pretrained_codec_for_another_model_or_rate_is_one_clear_line():
    with pytest.raises(UserError, match=r"no pretrained codec for model=tiny at fc=0.5 .*"
                                        r"make train-codec-adaptive"):
        pretrained.load_pretrained("tiny", 0.5)
    with pytest.raises(UserError, match=r"shipped for this model: 0.25, 0.5, 0.75"):
        pretrained.load_pretrained("mini", 0.3)


def adaptive_checkpoint(cfg, fc):
    return codec_source(cfg, "codec-adaptive", fc)[0]


def test_which_adaptive_codec_eval_takes(make_cfg, tmp_path):
    cfg = make_cfg("model=mini", "eval.schemes=[meg-adaptive]")
    shipped = pretrained.folder("mini", 0.5) / "codec.safetensors"
    assert adaptive_checkpoint(cfg, 0.5) == shipped  # nothing trained in out_dir
    trained = tmp_path / "runs" / "codec-adaptive" / "fc0.5" / "best.ckpt"
    trained.parent.mkdir(parents=True)
    trained.write_bytes(b"x")
    assert adaptive_checkpoint(cfg, 0.5) == trained  # out_dir's own wins
    forced = make_cfg("model=mini", "eval.pretrained=true")
    assert adaptive_checkpoint(forced, 0.5) == shipped  # unless asked for the shipped one
    named = make_cfg("model=mini", 'eval.adaptive_checkpoints={"0.5": /x/y.ckpt}')
    assert str(adaptive_checkpoint(named, 0.5)) == "/x/y.ckpt"
    with pytest.raises(UserError, match="no trained codec for fc=0.5: .*none ships for "
                                        "model=tiny.*make train-codec-adaptive FC=0.5"):
        adaptive_checkpoint(make_cfg(f"out_dir={tmp_path / 'other'}"), 0.5)


class _Recorder(torch.nn.Module):
    """A stand-in adaptive codec: identity code that records the channel state it is given."""

    adaptive = True

    def __init__(self, k: int):
        super().__init__()
        self.k, self.calls = k, []

    def encode(self, z, snr_db):
        self.calls.append(("encode", snr_db.clone()))
        return z.flatten(1)[:, : self.k]

    def decode(self, x_hat, snr_db, csi_db):
        self.calls.append(("decode", snr_db.clone(), csi_db.clone()))
        return torch.nn.functional.pad(x_hat, (0, 256 - self.k)).reshape(-1, *MINI)


@pytest.mark.parametrize("kind,blocks", [("awgn", 1), ("rayleigh", 4)])
def test_meg_adaptive_gives_both_ends_the_snr_and_the_decoder_each_blocks_snr(kind, blocks):
    codec = _Recorder(64)
    scheme = AdaptiveLatentScheme(lambda z: z, codec, fc=0.25, latent_shape=MINI)
    channel = make_channel(kind, snr_db=7.0, num_blocks=blocks, equalizer="mmse")
    z = torch.randn(3, *MINI)
    _, symbols = scheme.transmit(z, channel=channel, generator=torch.Generator().manual_seed(0))
    assert symbols == 64
    (_, snr_enc), (_, snr_dec, csi) = codec.calls
    assert torch.equal(snr_enc, torch.full((3,), 7.0)) and torch.equal(snr_dec, snr_enc)
    assert csi.shape == (3, blocks)
    if kind == "awgn":
        assert torch.allclose(csi, torch.full((3, 1), 7.0))
    else:  # 7 dB + 10 log10 |h_b|^2: fades differ per block and image
        assert csi.std() > 0.5


def test_reference_mse_is_the_linear_codes_closed_form():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(300, *MINI, generator=g) * torch.linspace(2, 0.1, 256).reshape(1, *MINI)
    m = codec_module(MINI, fc=0.25, arch="adaptive", loss="linear_ratio")
    m.fit_reference(z)
    code = LinearCode.fit(z, 0.25)
    for snr in (-10.0, 0.0, 3.0, 20.0):  # on the 1 dB grid: exact
        assert float(m.reference_mse(torch.tensor([snr]))) == pytest.approx(
            code.expected_mse(snr), rel=1e-5)
    # between grid points: between the neighbours (log-linear), clamped beyond the grid
    mid = float(m.reference_mse(torch.tensor([3.5])))
    assert code.expected_mse(4.0) < mid < code.expected_mse(3.0)
    assert float(m.reference_mse(torch.tensor([99.0]))) == pytest.approx(
        code.expected_mse(50.0), rel=1e-5)


def test_the_per_sample_reference_follows_each_blocks_fade():
    z = torch.randn(300, *MINI) * torch.linspace(2, 0.1, 256).reshape(1, *MINI)
    m = codec_module(MINI, fc=0.5, arch="adaptive", loss="linear_ratio")
    m.fit_reference(z)
    awgn = m.sample_reference(torch.tensor([[10.0]]))  # one block at the SNR: the AWGN value
    assert float(awgn) == pytest.approx(float(m.reference_mse(torch.tensor([10.0]))))
    flat = m.sample_reference(torch.full((1, 4), 10.0))
    faded = m.sample_reference(torch.tensor([[10.0, 10.0, 10.0, -20.0]]))  # one deep fade
    assert float(flat) == pytest.approx(float(awgn)) and float(faded) > 2 * float(flat)


def test_the_recipe_reproduces_a_shipped_codec_on_a_small_budget(tmp_path):
    """Same recipe, small budget (48 captions, 3 epochs): the same architecture and settings
    as the shipped codec at each rate (width 64 at fc 0.5, 128 at fc 0.75), and a finite
    training time on each card."""
    small = ["data.num_prompts=48", "trainer.max_epochs=3", "codec.early_stop_patience=null",
             "logger=none", "generation.num_inference_steps=10"]
    best = recipe.reproduce(tmp_path, fcs=[0.5, 0.75], extra=small, export_to=tmp_path / "w")
    import json

    for fc in (0.5, 0.75):
        made = json.loads((tmp_path / "w" / "mini" / f"fc{fc:g}" / "codec.json").read_text())
        shipped = pretrained.read_card("mini", fc)
        skip = {"data_id", "seed"}  # the cards' data are the full recipe's
        assert {k: v for k, v in made["hyper_parameters"].items() if k not in skip} == \
            {k: v for k, v in shipped["hyper_parameters"].items() if k not in skip}
        assert best[fc].is_file()
        assert math.isfinite(made["train_seconds"])


def test_the_sweep_evaluates_meg_adaptive_from_out_dir_and_resumes(make_cfg, tiny_pipe, tmp_path):
    """`meg-adaptive` in a sweep: the codec `make train-codec-adaptive` leaves in out_dir is
    loaded; its rows carry that codec's id, get the OPTA bound on AWGN, and a new checkpoint
    invalidates them (and only them)."""
    from meg_lightning.data.datamodule import TensorLatentDataModule
    from meg_lightning.evaluation.sweep import run_sweep

    cfg = make_cfg("eval.schemes=[meg-adaptive,linear]", "eval.channels=[awgn,rayleigh]",
                   "eval.snrs_db=[0,20]", "eval.fcs=[0.5]", "eval.num_images=8",
                   "eval.bootstrap=0", "channel.num_blocks=4")
    g = torch.Generator().manual_seed(0)
    scales = torch.linspace(2.0, 0.05, 256).view(1, *MINI)
    dm = TensorLatentDataModule(torch.randn(400, *MINI, generator=g) * scales, test_fraction=0.1)
    with pytest.raises(UserError, match="no trained codec for fc=0.5"):
        run_sweep(cfg, datamodule=dm, vae=tiny_pipe.vae, progress=False)
    model = codec_module(MINI, fc=0.5, arch="adaptive", channel=dict(kind="rayleigh", num_blocks=4))
    ds = dm.dataset("train")
    model.init_linear(torch.stack([ds[i]["z"] for i in range(len(ds))]))  # = the KLT code
    ckpt = tmp_path / "runs" / "codec-adaptive" / "fc0.5" / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}, ckpt)
    res = run_sweep(cfg, datamodule=dm, vae=tiny_pipe.vae, progress=False)
    rows = {r["cell"]: r for r in res.rows}
    assert len(rows) == 8
    a, lin = rows["meg-adaptive_fc0.5_awgn_snr20"], rows["linear_fc0.5_awgn_snr20"]
    assert a["codec_id"] and lin["codec_id"] is None and a["symbols"] == lin["symbols"] == 128
    # the KLT-initialised adaptive code is close to the linear code, above the OPTA bound
    assert a["opta_latent_mse"] <= a["latent_mse"] < 2 * lin["latent_mse"]
    assert run_sweep(cfg, datamodule=dm, vae=tiny_pipe.vae, progress=False).computed == []
    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict(),
                "retrained": True}, ckpt)
    again = run_sweep(cfg, datamodule=dm, vae=tiny_pipe.vae, progress=False)
    assert sorted(again.computed) == sorted(k for k in rows if k.startswith("meg-adaptive"))


def _benchmark(name: str):
    """A script of benchmarks/ (not a package) as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmarks_opta_interval_is_the_mse_interval_in_db_and_never_a_math_error():
    bench = _benchmark("codec_adaptive")
    lo, hi = bench.gap_interval(dict(codec_mse=0.1, codec_mse_se=0.01, opta_awgn_mse=0.05))
    assert lo == pytest.approx(10 * math.log10((0.1 - 0.0196) / 0.05))
    assert hi == pytest.approx(10 * math.log10((0.1 + 0.0196) / 0.05))
    # a heavy-tailed handful of test latents: the lower end of the MSE interval is below zero
    lo, hi = bench.gap_interval(dict(codec_mse=0.1, codec_mse_se=0.2, opta_awgn_mse=0.05))
    assert lo == -math.inf and hi == pytest.approx(10 * math.log10((0.1 + 0.392) / 0.05))


def test_the_acceptance_benchmark_rejects_an_unknown_test_set_in_one_line_with_exit_2(capsys):
    bench = _benchmark("codec_adaptive")
    assert set(bench.TESTS) == {"heldout", "seen", "test"}
    with pytest.raises(SystemExit) as e:
        bench.main(["bench.test=heldot", "bench.dir=/nonexistent"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bench.test='heldot'" in err[0] and "heldout, seen, test" in err[0]


def test_the_specialist_benchmark_fine_tunes_a_copy_at_one_snr_and_lowers_its_mse_there():
    bench, adaptive = _benchmark("codec_specialist"), _benchmark("codec_adaptive")
    codec = pretrained.load_pretrained("mini", 0.25, MINI)
    before = {k: v.clone() for k, v in codec.state_dict().items()}
    g = torch.Generator().manual_seed(5)
    z = torch.randn(64, *MINI, generator=g) * torch.linspace(2.0, 0.2, 256).view(1, *MINI)
    mse0 = float(adaptive.per_latent_mse(codec, z, 0.0, 2, 1).mean())
    seen = []
    spec = bench.specialise(codec, z, 0.0, "decoder", steps=40, batch=32, lr=1e-3, every=20,
                            report=lambda step, m: seen.append((step, m.training)))
    assert seen == [(20, False), (40, False)] and not spec.training
    # the codec it started from is untouched; the decoder-only specialist keeps its encoder
    assert all(torch.equal(v, codec.state_dict()[k]) for k, v in before.items())
    enc = lambda m: m.encode(z, 0.0)  # noqa: E731
    with torch.no_grad():
        assert torch.equal(enc(spec), enc(codec))
        assert not torch.equal(spec.decode(enc(codec), 0.0), codec.decode(enc(codec), 0.0))
    # at the SNR it was tuned for, on the latents it was tuned on, its error is lower
    assert float(adaptive.per_latent_mse(spec, z, 0.0, 2, 1).mean()) < 0.95 * mse0
    seen.clear()  # the last step is reported even when it is not a multiple of ``every``
    both = bench.specialise(codec, z, 0.0, "codec", steps=3, batch=8, every=2,
                            report=lambda step, m: seen.append(step))
    assert seen == [2, 3]
    with torch.no_grad():
        assert not torch.equal(enc(both), enc(codec))


@pytest.mark.parametrize("arg", ["bench.fc=0", "bench.train=encoder", "bench.steps=1.5",
                                 "bench.snr_db=inf", "bench.sorce=runs", "bench.fc"])
def test_the_specialist_benchmark_rejects_a_bad_argument_in_one_line_with_exit_2(arg, capsys):
    bench = _benchmark("codec_specialist")
    with pytest.raises(SystemExit) as e:
        bench.main([arg])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    key, _, value = arg.partition("=")
    assert err.startswith(f"codec_specialist: {key}={value!r}: expected ")
