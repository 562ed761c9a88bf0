"""Evaluation: schemes, the resumable sweep, Table II and the figures (tiny stand-ins, CPU)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from meg_lightning.channels import make as make_channel
from meg_lightning.evaluation.cells import Cell
from meg_lightning.schemes.base import FAILURE_VALUE
from meg_lightning.schemes.centralized import CentralizedScheme
from meg_lightning.schemes.digital_image import DigitalImageScheme, encode_image, to_uint8
from meg_lightning.schemes.feature import FeatureLatentScheme
from meg_lightning.schemes.ideal import awgn_capacity_bits, threshold_snr_db
from meg_lightning.evaluation.sweep import (
    COLUMNS,
    enumerate_cells,
    read_results,
    rows_to_csv,
    run_sweep,
    sweep_hash,
)
from meg_lightning.evaluation.table2 import PAPER_SYMBOLS, table2
from meg_lightning.metrics import PSNR_CAP_DB, psnr_per_image

LATENT = (4, 8, 8)  # the tiny preset's latent shape (64x64 images, f_d = 8)


class StandInCodec(nn.Module):
    """A linear C_w / C_psi^-1 pair with the codec's encode / decode interface."""

    def __init__(self, fc: float = 0.5):
        super().__init__()
        n = math.prod(LATENT)
        torch.manual_seed(0)
        self.enc, self.dec = nn.Linear(n, round(fc * n)), nn.Linear(round(fc * n), n)

    def encode(self, z):
        return self.enc(z.flatten(1))  # (B, k)

    def decode(self, x_hat):
        return self.dec(x_hat).view(-1, *LATENT)  # (B, C, h, w)


def _psnr_at(scheme, images, z, kind, snr, seed=0):
    ch = make_channel(kind, snr_db=snr)
    out = scheme(z, images, channel=ch, generator=torch.Generator().manual_seed(seed))
    return float(psnr_per_image(out.images, images)[0].mean())


@pytest.mark.parametrize("kind", ["awgn", "rayleigh"])
def test_centralized_psnr_does_not_increase_when_snr_drops(kind):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, 16, 16, generator=g)
    snrs = [20.0, 10.0, 0.0, -10.0]
    psnr = [_psnr_at(CentralizedScheme(), images, None, kind, s) for s in snrs]
    assert all(a > b for a, b in zip(psnr, psnr[1:])), psnr
    out = CentralizedScheme()(None, images, channel=make_channel("awgn", snr_db=0.0), generator=g)
    assert out.symbols == 3 * 16 * 16 and out.images.min() >= 0 and out.images.max() <= 1


def test_feature_is_lossless_over_a_noiseless_channel(tiny_pipe):
    from meg_lightning.generation import decode_latents

    z = torch.randn(2, *LATENT)
    scheme = FeatureLatentScheme(lambda zz: decode_latents(tiny_pipe.vae, zz))
    i_0 = decode_latents(tiny_pipe.vae, z)
    out = scheme(z, i_0, channel=make_channel("none"), generator=None)
    assert out.symbols == math.prod(LATENT)
    torch.testing.assert_close(out.z_hat, z)
    psnr, capped = psnr_per_image(out.images, i_0)
    assert capped.all() and torch.all(psnr == PSNR_CAP_DB)


def test_digital_cliff_full_quality_above_threshold_failure_below():
    # smooth images compress to a few hundred bytes, so the cliff is inside a normal SNR range
    i_0 = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(3, 3, 32, 32).clone()
    i_0[1] *= 0.5
    i_0[2] = 0.25
    bits = [8 * len(encode_image(im, "png")) for im in to_uint8(i_0)]
    k = 512
    scheme = DigitalImageScheme(k, codec="png")
    thr = max(threshold_snr_db(b, k) for b in bits)
    assert awgn_capacity_bits(k, thr) == pytest.approx(max(bits))
    assert -10 < thr < 30, thr
    above = scheme(None, i_0, channel=make_channel("awgn", snr_db=thr + 0.5), generator=None)
    assert bool(above.info["success"].all())
    assert np.array_equal(to_uint8(above.images), to_uint8(i_0))  # PNG is lossless
    assert float(psnr_per_image(above.images, i_0)[0].min()) > 45  # 8-bit quantisation only
    low = min(threshold_snr_db(b, k) for b in bits) - 0.5
    below = scheme(None, i_0, channel=make_channel("awgn", snr_db=low), generator=None)
    assert not bool(below.info["success"].any())
    assert torch.all(below.images == FAILURE_VALUE)
    assert above.symbols == below.symbols == k


def test_digital_rayleigh_outage_and_noiseless():
    i_0 = torch.full((64, 3, 16, 16), 0.3)
    k = 64
    bits = 8 * len(encode_image(to_uint8(i_0[:1])[0], "png"))
    snr = threshold_snr_db(bits, k) + 3.0  # fits on average, not in deep fades
    out = DigitalImageScheme(k)(None, i_0, channel=make_channel("rayleigh", snr_db=snr,
                                                                num_blocks=2),
                                generator=torch.Generator().manual_seed(0))
    rate = float(out.info["success"].mean())
    assert 0.0 < rate < 1.0, rate
    ok = DigitalImageScheme(k)(None, i_0, channel=make_channel("none"), generator=None)
    assert bool(ok.info["success"].all())
    jpeg = DigitalImageScheme(10**6, codec="jpeg")(None, i_0,
                                                   channel=make_channel("awgn", snr_db=10.0),
                                                   generator=None)
    assert bool(jpeg.info["success"].all())


def test_table2_counts_equal_the_papers_for_sd15_shapes():
    rows = {r["mode"]: r for r in table2((3, 512, 512), (4, 64, 64), generator_params={})}
    for mode in ("feature", "meg fc=0.1", "meg fc=0.3", "meg fc=0.5", "meg fc=0.7", "meg fc=0.9"):
        assert rows[mode]["symbols"] == PAPER_SYMBOLS[mode], mode
    assert rows["feature"]["symbols"] == 16384
    # we send 3 x 512 x 512 RGB reals; the paper's 1,048,576 = 512 x 512 x 4 is shown beside it
    assert rows["centralized"]["symbols"] == 786_432
    assert rows["centralized"]["paper_symbols"] == 1_048_576
    m = rows["meg fc=0.5"]
    assert m["encoder_params"] + m["decoder_params"] == 563_430_184  # DESIGN / Table III
    assert m["channel_uses"] == 4096


def test_sd15_generator_parameter_counts():
    from meg_lightning.evaluation.table2 import sd15_generator_params

    assert sd15_generator_params() == {"unet": 859_520_964, "vae": 83_653_863,
                                       "text": 123_060_480}


def _sweep_cfg(make_cfg, *extra):
    return make_cfg("eval.schemes=[centralized,feature,meg,linear,digital-image]", "eval.snrs_db=[0,20]",
                    "eval.channels=[awgn,none]", "eval.fcs=[0.5]", "eval.num_images=6",
                    "eval.batch_size=4", "eval.bootstrap=8", "eval.fid_features=pixels", *extra)


def test_enumerate_cells_and_hash(make_cfg):
    cfg = _sweep_cfg(make_cfg)
    cells = enumerate_cells(cfg)
    # awgn: 5 schemes x 2 SNRs; none: one cell per scheme
    assert len(cells) == 5 * 2 + 5 and len({c.key for c in cells}) == len(cells)
    assert Cell("meg", "awgn", -10.0, 0.5).key == "meg_fc0.5_awgn_snr-10"
    assert sweep_hash(cfg) == sweep_hash(_sweep_cfg(make_cfg, "eval.snrs_db=[0,10,20]"))
    assert sweep_hash(cfg) != sweep_hash(_sweep_cfg(make_cfg, "eval.num_images=7"))
    assert sweep_hash(cfg) != sweep_hash(_sweep_cfg(make_cfg, "eval.linear_power=seed"))


def test_scheme_channels_sweep_a_scheme_on_its_own_kinds(make_cfg):
    """eval.scheme_channels narrows (or widens) one scheme's channel kinds; the others keep
    eval.channels; the hash does not move (the cells already done are reused)."""
    base = ["eval.schemes=[centralized,feature,meg+dm]", "eval.channels=[awgn,rayleigh]",
            "eval.snrs_db=[0,10]", "eval.fcs=[0.5]"]
    cfg = make_cfg(*base)
    narrowed = make_cfg(*base, "eval.scheme_channels={meg+dm: [awgn], centralized: [none,awgn]}")
    keys = {c.key for c in enumerate_cells(narrowed)}
    assert keys == ({c.key for c in enumerate_cells(cfg)} - {"meg+dm_fc0.5_rayleigh_snr0",
                                                              "meg+dm_fc0.5_rayleigh_snr10",
                                                              "centralized_rayleigh_snr0",
                                                              "centralized_rayleigh_snr10"}
                    | {"centralized_none_snrinf"})
    assert len(keys) == len(enumerate_cells(narrowed))
    assert sweep_hash(narrowed) == sweep_hash(cfg)


def test_sweep_produces_every_cell_and_resumes(make_cfg, tiny_pipe):
    from meg_lightning.data.datamodule import TensorLatentDataModule

    cfg = _sweep_cfg(make_cfg)
    dm = TensorLatentDataModule(torch.randn(30, *LATENT), test_fraction=0.2)
    calls = []

    def channel_factory(kind, snr):
        calls.append((kind, snr))
        return make_channel(kind, snr_db=snr if math.isfinite(snr) else 0.0)

    kw = dict(datamodule=dm, vae=tiny_pipe.vae, codecs={0.5: StandInCodec()},
              channel_factory=channel_factory, progress=False)
    res = run_sweep(cfg, **kw)
    cells = enumerate_cells(cfg)
    assert sorted(res.computed) == sorted(c.key for c in cells) and not res.skipped
    assert len(calls) == len(cells)
    rows = read_results(res.csv_path)
    assert len(rows) == len(cells) and list(rows[0]) == COLUMNS
    by = {r["cell"]: r for r in rows}
    assert by["centralized_awgn_snr20"]["psnr_db"] > by["centralized_awgn_snr0"]["psnr_db"]
    assert by["feature_none_snrinf"]["psnr_capped"] == 6 and by["feature_none_snrinf"]["fid"] < 1e-6
    assert by["meg_fc0.5_awgn_snr0"]["symbols"] == 128 and by["feature_awgn_snr0"]["symbols"] == 256
    assert by["digital-image_fc0.5_none_snrinf"]["success"] == 1.0
    assert by["linear_fc0.5_awgn_snr20"]["symbols"] == 128
    assert math.isnan(by["linear_fc0.5_awgn_snr0"]["opta_latent_mse"])  # 21 training latents < |z|
    assert by["linear_fc0.5_none_snrinf"]["latent_mse"] < by["linear_fc0.5_awgn_snr0"]["latent_mse"]
    r = by["feature_awgn_snr0"]
    assert r["fid_n_images"] == 6 and r["fid_features"] == "pixel-FID"
    assert r["fid_ci_low"] <= r["fid_ci_high"]
    assert math.isnan(r["semantic_accuracy"])  # tiny has no judge
    assert (res.csv_path.parent / "examples" / "meg_fc0.5_awgn_snr0.png").stat().st_size > 0
    assert (res.csv_path.parent / "config.yaml").is_file()

    # a second run computes nothing
    calls.clear()
    again = run_sweep(cfg, **kw)
    assert again.computed == [] and len(again.skipped) == len(cells) and calls == []

    # drop one finished cell: only that one is recomputed, with the same numbers (fixed seeds)
    kept = [x for x in rows if x["cell"] != "feature_awgn_snr0"]
    res.csv_path.write_text(rows_to_csv(kept))
    third = run_sweep(cfg, **kw)
    assert third.computed == ["feature_awgn_snr0"] and len(calls) == 1
    redo = {x["cell"]: x for x in read_results(res.csv_path)}["feature_awgn_snr0"]
    assert redo["psnr_db"] == pytest.approx(r["psnr_db"], rel=1e-6)
    assert redo["fid"] == pytest.approx(r["fid"], rel=1e-6)


def test_sweep_semantic_accuracy_with_an_injected_judge(make_cfg, tiny_pipe):
    """semantic_accuracy is the judge's mean over the cell's images; the reference is I_0's."""
    import json

    from PIL import Image

    from meg_lightning.data.datamodule import TensorLatentDataModule
    from meg_lightning.evaluation.cell_metrics import EXAMPLES
    from meg_lightning.generation import decode_latents

    cfg = _sweep_cfg(make_cfg, "eval.schemes=[centralized,feature]", "eval.channels=[awgn,none]",
                     "eval.snrs_db=[-30]", "eval.num_images=12", "data.num_prompts=40")
    dm = TensorLatentDataModule(torch.randn(40, *LATENT), test_fraction=0.3)
    ref_images = {}

    def judge(images, index):  # "correct" iff the image is (close to) that index's I_0
        return torch.stack([(images[k] - ref_images[int(i)]).abs().max() < 1e-3
                            for k, i in enumerate(index)])

    def decode(z):
        return decode_latents(tiny_pipe.vae, z)

    ds = dm.dataset("test")
    for k in range(12):
        ref_images[int(ds[k]["index"])] = decode(ds[k]["z"][None])[0]
    res = run_sweep(cfg, datamodule=dm, decode_image=decode, judge=judge, progress=False)
    by = {r["cell"]: r for r in read_results(res.csv_path)}
    assert by["feature_none_snrinf"]["semantic_accuracy"] == 1.0  # identical to I_0
    assert by["centralized_none_snrinf"]["semantic_accuracy"] == 1.0
    assert by["centralized_awgn_snr-30"]["semantic_accuracy"] == 0.0  # -30 dB: all noise
    assert {r["semantic_accuracy_ref"] for r in by.values()} == {1.0}
    ev = res.csv_path.parent / "examples"
    strip = np.asarray(Image.open(ev / "feature_awgn_snr-30.png"))
    assert strip.shape == (64, 64 * min(EXAMPLES, 12), 3)  # the first images side by side
    assert json.loads((ev / "index.json").read_text())["test_indices"] == \
        [int(ds[k]["index"]) for k in range(12)]


def test_linear_scheme_is_above_the_opta_bound(make_cfg, tiny_pipe):
    from meg_lightning.data.datamodule import TensorLatentDataModule

    cfg = _sweep_cfg(make_cfg, "eval.schemes=[linear]", "eval.channels=[awgn]",
                     "eval.num_images=16", "eval.bootstrap=0")
    g = torch.Generator().manual_seed(0)
    scales = torch.linspace(2.0, 0.05, math.prod(LATENT)).view(1, *LATENT)  # a skewed spectrum
    dm = TensorLatentDataModule(torch.randn(400, *LATENT, generator=g) * scales, test_fraction=0.1)
    res = run_sweep(cfg, datamodule=dm, vae=tiny_pipe.vae, progress=False)
    for r in res.rows:  # more training latents (320) than |z| (256): the bound is reported
        assert 0 < r["opta_latent_mse"] <= r["latent_mse"] * 1.05, r


def test_figures_from_a_synthetic_results_csv(make_cfg):
    from PIL import Image

    from meg_lightning.evaluation import figures
    from meg_lightning.evaluation.sweep import eval_dir

    cfg = make_cfg()
    ev = eval_dir(cfg)
    (ev / "examples").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for kind in ("awgn", "rayleigh"):
        for scheme, fcs in (("centralized", [None]), ("feature", [None]), ("meg", [0.3, 0.5]),
                            ("digital-image", [0.5])):
            for fc in fcs:
                for snr in (-10.0, 0.0, 10.0):
                    cell = Cell(scheme, kind, snr, fc)
                    rows.append({"cell": cell.key, "scheme": scheme, "channel": kind,
                                 "snr_db": snr, "fc": fc, "psnr_db": 20 + snr / 2, "n_images": 8,
                                 "fid": 5 - snr / 5, "fid_ci_low": 4 - snr / 5,
                                 "fid_ci_high": 6 - snr / 5, "fid_features": "pixel-FID",
                                 "semantic_accuracy": 0.5 + snr / 40,
                                 "semantic_accuracy_ref": 1.0})
                    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                        ev / "examples" / f"{cell.key}.png")
    for scheme, fc, capped in (("feature", None, 8), ("meg", 0.5, 0)):  # noiseless references
        rows.append({"cell": Cell(scheme, "none", math.inf, fc).key, "scheme": scheme,
                     "channel": "none", "snr_db": math.inf, "fc": fc, "n_images": 8,
                     "psnr_db": 100.0 if capped else 28.0, "psnr_capped": capped, "fid": 0.5})
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(ev / "examples" / "reference.png")
    (ev / cfg.eval.results).write_text(rows_to_csv(rows))
    ppo = ev.parent / "ppo"
    ppo.mkdir()
    (ppo / "fig10.csv").write_text("p_max_mw,policy,fid,psnr,latent_mse,n_images\n"
                                   "1,ppo,10,20,0.1,64\n1,equal,30,15,0.2,64\n"
                                   "4,ppo,5,25,0.05,64\n4,equal,8,22,0.08,64\n")
    paths = figures.main(cfg)
    names = {p.name for p in paths}
    for stem in ("fig5_examples", "fig6_psnr", "fig7_fid", "fig8_psnr_fc", "fig9_fid_fc",
                 "fig10_fid_power", "fig_semantic", "grid_awgn_snr-10", "grid_awgn_snr0",
                 "grid_rayleigh_snr10"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names, stem
    assert {"table2.csv", "table2.md", "table2_tiny.csv", "table2_tiny.md"} <= names
    tiny = (ev.parent / "figures" / "table2_tiny.md").read_text()
    assert "| feature | 256 |" in tiny and "| meg fc=0.5 | 128 |" in tiny  # 4x8x8 latents
    assert all(p.stat().st_size > 0 for p in paths)


def test_figures_skip_missing_inputs_with_notes(tmp_path):
    from meg_lightning.evaluation.figures import make_figures

    paths, notes = make_figures(tmp_path / "none.csv", None, tmp_path / "fig10.csv",
                                tmp_path / "figs", table2=False)
    assert paths == [] and any("meg eval" in n for n in notes) and any("train-ppo" in n for n in notes)


def test_sweep_loads_a_trained_codec_checkpoint(make_cfg, tiny_pipe, tmp_path):
    """`meg` without injected codecs: the checkpoint `meg train-codec` writes is found and loaded."""
    from meg_lightning.codecs import CodecModule
    from meg_lightning.data.datamodule import TensorLatentDataModule
    from meg_lightning.errors import UserError

    cfg = _sweep_cfg(make_cfg, "eval.schemes=[meg]", "eval.channels=[none]", "eval.bootstrap=0")
    dm = TensorLatentDataModule(torch.randn(30, *LATENT), test_fraction=0.2)
    with pytest.raises(UserError, match="meg train-codec codec.fc=0.5"):
        run_sweep(cfg, datamodule=dm, vae=tiny_pipe.vae, progress=False)
    model = CodecModule(LATENT, codec={"fc": 0.5, "arch": "mlp"})
    ckpt = tmp_path / "runs" / "codec" / "fc0.5" / "best.ckpt"  # codec.train.run_dir(cfg)
    ckpt.parent.mkdir(parents=True)
    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}, ckpt)
    res = run_sweep(cfg, datamodule=dm, vae=tiny_pipe.vae, progress=False)
    (row,) = res.rows
    assert row["cell"] == "meg_fc0.5_none_snrinf" and row["symbols"] == 128
    # noiseless: what remains is the codec's own error, decode(encode(z))
    ds = dm.dataset("test")
    z = torch.stack([ds[i]["z"] for i in range(len(ds))])[:6]
    with torch.no_grad():
        expected = float(((model.decode(model.encode(z)) - z) ** 2).flatten(1).mean(1).mean())
    assert row["latent_mse"] == pytest.approx(expected, rel=1e-4)
    assert run_sweep(cfg, datamodule=dm, vae=tiny_pipe.vae, progress=False).computed == []
    # a retrained codec (a new checkpoint file) invalidates the meg cells made with the old one
    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict(),
                "retrained": True}, ckpt)
    again = run_sweep(cfg, datamodule=dm, vae=tiny_pipe.vae, progress=False)
    assert again.computed == ["meg_fc0.5_none_snrinf"] and len(again.rows) == 1


@pytest.mark.slow
def test_meg_eval_and_figures_end_to_end_on_the_tiny_preset(tmp_path, monkeypatch):
    """`meg eval` then `meg figures` through the CLI: real latent cache, tiny VAE, W&B offline."""
    from meg_lightning.cli import run

    monkeypatch.setenv("WANDB_MODE", "offline")
    common = [f"out_dir={tmp_path / 'runs'}", "model=tiny", "generation.device=cpu",
              "trainer.devices=1", "trainer.accelerator=cpu"]
    args = common + [f"data.cache_dir={tmp_path / 'cache'}", "data.num_prompts=20",
                     "data.test_fraction=0.3", "eval.schemes=[centralized,feature,linear,digital-image]",
                     "eval.snrs_db=[-10,10]", "eval.channels=[awgn,rayleigh]", "eval.num_images=6",
                     "eval.bootstrap=10", "eval.fid_features=pixels", "logger=wandb"]
    assert run(["latents", *args]) == 0
    assert run(["eval", *args]) == 0
    rows = read_results(tmp_path / "runs" / "eval" / "results.csv")
    assert len(rows) == 2 * (2 + 2 + 2 + 2)
    assert (tmp_path / "runs" / "eval" / "wandb").is_dir()
    assert run(["eval", *args]) == 0  # resumes: nothing left to do
    assert len(read_results(tmp_path / "runs" / "eval" / "results.csv")) == len(rows)
    assert run(["figures", *common]) == 0
    figs = tmp_path / "runs" / "figures"
    for stem in ("fig5_examples", "fig6_psnr", "fig7_fid"):
        assert (figs / f"{stem}.png").stat().st_size > 0


def test_fig10_falls_back_to_latent_mse_without_images(tmp_path):
    from meg_lightning.evaluation.figures_tradeoff import fig_power, read_fig10

    p = tmp_path / "fig10.csv"
    p.write_text("p_max_mw,snr_db,policy,fid,psnr,latent_mse,expected_mse,n_images,scheme,reward\n"
                 "1,10,ppo,nan,nan,0.2,0.2,0,gaussian,latent_mse\n"
                 "1,10,equal,nan,nan,0.3,0.3,0,gaussian,latent_mse\n"
                 "4,16,ppo,nan,nan,0.1,0.1,0,gaussian,latent_mse\n")
    paths = fig_power(read_fig10(p), tmp_path / "fig10")
    assert len(paths) == 2 and all(x.stat().st_size > 0 for x in paths)


def test_sweep_hash_of_the_default_linear_power_is_the_hash_from_before_the_key():
    """eval.linear_power=average (the default) leaves the hash as it was before the key existed,
    so results.csv files written then still resume."""
    from meg_lightning.config import MegConfig, config_hash, data_id, to_dict
    from meg_lightning.evaluation.cells import RESULTS_VERSION

    cfg = MegConfig()
    d = to_dict(cfg)
    ev = {k: v for k, v in d["eval"].items()
          if k not in ("schemes", "snrs_db", "fcs", "scheme_fcs", "channels", "scheme_channels",
                       "results", "codec_checkpoints", "adaptive_checkpoints", "pretrained",
                       "linear_power")}
    before = config_hash({"version": RESULTS_VERSION, "data_id": data_id(cfg), "eval": ev,
                          "channel": {k: d["channel"][k] for k in ("num_blocks", "equalizer")}})
    assert sweep_hash(cfg) == before


@pytest.mark.parametrize("kind", ["awgn", "rayleigh"])
def test_linear_power_seed_charges_the_linear_code_for_the_power_it_sends(kind):
    """Test latents 2x the training ones (4x the power): under the average-power constraint the
    linear code sends them at 4x its budget and its noise error stays put; with each seed at unit
    power (eval.linear_power=seed, as every other scheme) the de-normalised noise, and so the
    error, grows 4x (AWGN; under fading, less). fc = 1: no truncated tail, all the error is
    noise."""
    from meg_lightning.codecs import LinearCode
    from meg_lightning.schemes.linear import LinearScheme

    g = torch.Generator().manual_seed(0)
    scales = torch.linspace(1.5, 0.2, 64).view(1, 4, 4, 4)
    z_train = torch.randn(2000, 4, 4, 4, generator=g) * scales
    code = LinearCode.fit(z_train, 1.0)
    z = code.mean.view(1, 4, 4, 4) + 2 * (torch.randn(500, 4, 4, 4, generator=g) * scales)
    channel = make_channel(kind, snr_db=30.0, num_blocks=4 if kind == "rayleigh" else 1)
    err = {}
    for power in ("average", "seed"):
        scheme = LinearScheme(code, decode_image=lambda z: z, power=power)
        z_hat, k = scheme.transmit(z, channel=channel, generator=torch.Generator().manual_seed(1))
        assert k == 64
        err[power] = float((z_hat - z).pow(2).mean())
    if kind == "awgn":
        assert err["seed"] / err["average"] == pytest.approx(4.0, rel=0.15), err
    else:  # deep fades put some blocks in the LMMSE shrinkage regime: less than 4x, still more
        assert 2.0 < err["seed"] / err["average"] < 4.5, err
    with pytest.raises(ValueError, match="average or seed"):
        LinearScheme(code, decode_image=lambda z: z, power="peak")
