"""The UE-compute axis (evaluation/compute.py, its FLOP counts in evaluation/flops.py) and its figure
(evaluation/figure_compute.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from meg_lightning.evaluation import compute as C
from meg_lightning.evaluation.compute import Compute, scheme_compute
from meg_lightning.metrics import flops as FL
from meg_lightning.metrics.flops import (ComputeParts, gflops, ldpc_decode_gflops,
                                         linear_code_gflops)
from meg_lightning.schemes.centralized import CentralizedScheme
from meg_lightning.schemes.digital import LatentDigitalScheme
from meg_lightning.schemes.digital_image import DigitalImageScheme
from meg_lightning.schemes.feature import FeatureLatentScheme
from meg_lightning.schemes.generative import DiffusionReceiver
from meg_lightning.schemes.linear import LinearScheme
from meg_lightning.schemes.meg import LatentScheme
from meg_lightning.schemes.prompt import PromptScheme

LATENT = (4, 8, 8)  # the tiny preset at 64x64
NUMEL = 256
FC = 0.25
K = 64  # round(0.25 * 256)
HIDDEN = 141  # default_hidden(256), as the mini codecs


# -- counting -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_gflops_of_a_linear_layer_is_2ab_exactly(bias):
    lin = nn.Linear(37, 53, bias=bias)
    assert gflops(lin, torch.randn(1, 37)) == 2 * 37 * 53 / 1e9
    assert gflops(lin, torch.randn(5, 37)) == 5 * 2 * 37 * 53 / 1e9  # linear in the batch


@pytest.mark.parametrize("stride,groups,padding", [(1, 1, 1), (2, 1, 0), (1, 4, 1)])
def test_gflops_of_a_conv_layer_is_the_closed_form(stride, groups, padding):
    cin, cout, ksz, hw = 8, 12, 3, 16
    conv = nn.Conv2d(cin, cout, ksz, stride=stride, padding=padding, groups=groups)
    out = conv(torch.randn(1, cin, hw, hw))
    h_out, w_out = out.shape[-2:]
    assert h_out == (hw + 2 * padding - ksz) // stride + 1
    # 2 FLOPs per multiply-add, (cin / groups) * k * k of them per output value
    expected = 2 * cout * h_out * w_out * (cin // groups) * ksz * ksz
    assert gflops(conv, torch.randn(1, cin, hw, hw)) == expected / 1e9


def test_cpu_attention_is_counted_like_its_two_matrix_products():
    """FlopCounterMode has no formula for the CPU SDPA kernel (it would count 0): ours does."""
    b, heads, lq, lk, d = 1, 4, 64, 77, 40
    q = torch.randn(b, heads, lq, d)
    k, v = torch.randn(b, heads, lk, d), torch.randn(b, heads, lk, d)
    explicit = gflops(lambda: torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5, -1) @ v)
    assert explicit == 2 * (2 * b * heads * lq * lk * d) / 1e9
    assert gflops(F.scaled_dot_product_attention, q, k, v) == explicit


def test_linear_code_and_ldpc_formulas():
    assert linear_code_gflops(K, NUMEL) == 2 * K * NUMEL / 1e9
    with pytest.raises(ValueError):
        linear_code_gflops(0, NUMEL)
    # num_iter * edges_per_bit * (symbols * bits_per_symbol) * ops_per_edge
    assert ldpc_decode_gflops(1000, bits_per_symbol=2, num_iter=10, edges_per_bit=4,
                              ops_per_edge=5) == pytest.approx(10 * 4 * 2000 * 5 / 1e9)
    assert ldpc_decode_gflops(100) == pytest.approx(20 * (316 / 66) * 400 * 6 / 1e9)


# -- the tiny pipeline, measured once ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_setup():
    """The tiny pipeline (SD architecture), an mlp codec and a fitted linear code at fc 0.25,
    the generator's measured costs, and one instance of every scheme at that rate."""
    from meg_lightning.codecs import LinearCode
    from meg_lightning.codecs.base import CompressionEncoder
    from meg_lightning.codecs.mlp import MLPDecoder
    from meg_lightning.generation.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline()

    class Codec(nn.Module):  # encode / decode like CodecModule, without Lightning
        def __init__(self):
            super().__init__()
            self.encoder = CompressionEncoder(LATENT, K)
            self.decoder = MLPDecoder(LATENT, K, hidden=HIDDEN)

        def encode(self, z):
            return self.encoder(z)

        def decode(self, x):
            return self.decoder(x)

    torch.manual_seed(0)
    codec = Codec()
    z_train = torch.randn(100, *LATENT)
    linear = LinearCode.fit(z_train, FC)  # 100 latents > k: all k components
    parts = ComputeParts.measure(pipe, LATENT, es_steps=25, guidance_scale=5.0)
    ident = lambda z: z  # noqa: E731 - no image decoder is run when costing
    meg = LatentScheme(ident, codec, fc=FC, latent_shape=LATENT)
    schemes = {"centralized": CentralizedScheme(), "feature": FeatureLatentScheme(ident),
               "meg": meg, "linear": LinearScheme(linear, ident, fc=FC),
               "digital": LatentDigitalScheme(z_train, ident, K, fc=FC),
               "digital-image": DigitalImageScheme(K, fc=FC), "prompt": PromptScheme(K, fc=FC)}
    for base in ("feature", "meg", "linear", "digital"):
        schemes[f"{base}+dm"] = DiffusionReceiver(schemes[base], lambda: pipe, z_train,
                                                  ue_steps=10, es_steps=25, guidance_scale=5.0)
    return pipe, codec, linear, parts, schemes


def test_measured_components(tiny_setup):
    pipe, codec, linear, parts, schemes = tiny_setup
    assert parts.unet_eval > 0 and parts.vae_decode > 0 and parts.text_encoder > 0
    assert parts.es_steps == 25 and parts.evals_per_step == 2
    # the mlp decoder: skip (k -> |z|), fc1 (k -> hidden), fc2 (hidden -> |z|)
    assert FL.codec_decode_gflops(codec, K) == pytest.approx(
        2 * (K * NUMEL + K * HIDDEN + HIDDEN * NUMEL) / 1e9, rel=1e-12)
    assert FL.codec_encode_gflops(codec, LATENT) == pytest.approx(2 * NUMEL * K / 1e9, rel=1e-12)
    # the linear code, counted as it runs, is the closed form 2 k |z| each way
    assert linear.eigvecs.shape[1] == K
    assert FL.linear_encode_gflops(linear, LATENT) == pytest.approx(linear_code_gflops(K, NUMEL),
                                                                    rel=1e-12)
    assert FL.linear_decode_gflops(linear, K) == pytest.approx(linear_code_gflops(K, NUMEL),
                                                               rel=1e-12)
    # the U-Net is the largest per-call cost after the VAE decoder on this tiny model, and its
    # count does not depend on the attention kernel (SDPA on CPU vs explicit matrix products)
    from diffusers.models.attention_processor import AttnProcessor

    unet2 = copy.deepcopy(pipe.unet)
    unet2.set_attn_processor(AttnProcessor())
    text_shape = FL.text_embedding_shape(pipe)
    assert FL.unet_eval_gflops(unet2, LATENT, text_shape) == pytest.approx(parts.unet_eval,
                                                                         rel=1e-12)
    # the same count on the meta device: no weights needed (how SD-v1.5 sizes are costed)
    unet_meta = copy.deepcopy(pipe.unet).to("meta")
    assert FL.unet_eval_gflops(unet_meta, LATENT, text_shape) == pytest.approx(parts.unet_eval,
                                                                             rel=1e-12)
    assert "U-Net evaluation" in parts.format()


def test_measurements_are_cached_per_module_and_shape(tiny_setup, monkeypatch):
    pipe, codec, _, parts, _ = tiny_setup
    text_shape = FL.text_embedding_shape(pipe)
    decode = FL.codec_decode_gflops(codec, K)

    def boom(*a, **k):
        raise AssertionError("measured again")

    monkeypatch.setattr(FL, "gflops", boom)
    assert FL.unet_eval_gflops(pipe.unet, LATENT, text_shape) == parts.unet_eval
    assert FL.vae_decode_gflops(pipe.vae, LATENT) == parts.vae_decode
    assert FL.codec_decode_gflops(codec, K) == decode
    with pytest.raises(AssertionError, match="measured again"):  # another shape is measured
        FL.vae_decode_gflops(pipe.vae, (4, 4, 4))


def test_prompt_scheme_runs_the_whole_generation_at_the_ue(tiny_setup):
    parts, schemes = tiny_setup[3], tiny_setup[4]
    c = scheme_compute(schemes["prompt"], parts)
    assert c.ue_unet_evals == 50
    assert c.ue_gflops == pytest.approx(parts.text_encoder + 25 * 2 * parts.unet_eval
                                        + parts.vae_decode, rel=1e-12)
    assert c.es_gflops == 0
    unguided = ComputeParts(**{**parts.as_dict(), "guidance_scale": 1.0})
    c1 = scheme_compute(schemes["prompt"], unguided)
    assert c1.ue_unet_evals == 25
    assert c1.ue_gflops == pytest.approx(parts.text_encoder + 25 * parts.unet_eval
                                         + parts.vae_decode, rel=1e-12)


def test_ue_cost_per_scheme_and_ordering(tiny_setup):
    _, codec, linear, parts, schemes = tiny_setup
    gen = parts.text_encoder + 25 * 2 * parts.unet_eval
    cost = {n: scheme_compute(s, parts) for n, s in schemes.items() if "+dm" not in n}
    cen, feat, meg, lin, dig, img, prompt = (cost[n] for n in (
        "centralized", "feature", "meg", "linear", "digital", "digital-image", "prompt"))
    meg_dm = scheme_compute(schemes["meg+dm"], parts, ue_steps_run=4.5)

    assert cen == Compute(0.0, 0.0, pytest.approx(gen + parts.vae_decode))
    assert feat.ue_gflops == parts.vae_decode and feat.es_gflops == pytest.approx(gen)
    assert meg.ue_gflops == pytest.approx(FL.codec_decode_gflops(codec, K) + parts.vae_decode)
    assert meg.es_gflops == pytest.approx(gen + FL.codec_encode_gflops(codec, LATENT))
    assert lin.ue_gflops == pytest.approx(FL.linear_decode_gflops(linear, K) + parts.vae_decode)
    assert dig.ue_gflops == pytest.approx(ldpc_decode_gflops(K) + parts.vae_decode)
    assert img.ue_gflops == pytest.approx(ldpc_decode_gflops(K))  # PNG decode: 0
    assert img.es_gflops == pytest.approx(gen + parts.vae_decode)
    # +dm: X's UE cost + the text encoder + n guided steps (2 evaluations each)
    assert meg_dm.ue_unet_evals == 9.0
    assert meg_dm.ue_gflops == pytest.approx(meg.ue_gflops + parts.text_encoder
                                             + 9 * parts.unet_eval, rel=1e-12)
    assert meg_dm.es_gflops == meg.es_gflops
    for base in ("feature", "linear", "digital"):
        dm = scheme_compute(schemes[f"{base}+dm"], parts, ue_steps_run=3)
        assert dm.ue_gflops - cost[base].ue_gflops == pytest.approx(
            parts.text_encoder + 6 * parts.unet_eval, rel=1e-9)
    # no step run: nothing added (the receiver does not even encode the prompt)
    assert scheme_compute(schemes["feature+dm"], parts, ue_steps_run=0).ue_gflops == feat.ue_gflops
    assert all(c.ue_unet_evals == 0 for c in (cen, feat, meg, lin, dig, img))
    assert (cen.ue_gflops < feat.ue_gflops <= meg.ue_gflops < meg_dm.ue_gflops
            < prompt.ue_gflops)
    assert set(C.COMPUTE_COLUMNS) == set(meg.as_row())


def test_bad_inputs_raise_value_errors(tiny_setup):
    parts, schemes = tiny_setup[3], tiny_setup[4]
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="ue_steps_run"):
            scheme_compute(schemes["feature+dm"], parts, ue_steps_run=bad)


# -- the figure and the compute frontier ---------------------------------------------------------


def _synthetic_rows():
    """Two SNRs, AWGN, plus a Rayleigh row that must be ignored and a nan row to skip."""
    rows = []
    table = [  # scheme, fc, ue_gflops, symbols, psnr at 0 dB, psnr at 10 dB, accuracy at 0 dB
        ("centralized", None, 0.0, 12288, 8.0, 17.0, 0.05),
        ("digital-image", 0.25, 1e-4, 64, 9.0, 12.0, 0.0),
        ("feature", None, 0.08, 256, 14.0, 24.0, 0.4),
        ("meg", 0.25, 0.081, 64, 18.0, 22.0, 0.7),
        ("linear", 0.25, 0.0809, 64, 17.0, 23.0, 0.6),
        ("meg+dm", 0.25, 0.3, 64, 25.0, 26.0, 0.95),
        ("prompt", None, 0.73, 40, 24.0, 24.0, 0.97),
    ]
    for scheme, fc, ue, sym, p0, p10, acc in table:
        for snr, psnr in ((0.0, p0), (10.0, p10)):
            rows.append({"scheme": scheme, "fc": fc, "channel": "awgn", "snr_db": snr,
                         "symbols": sym, "ue_gflops": ue, "psnr_db": psnr,
                         "semantic_accuracy": acc if snr == 0 else float("nan")})
    rows.append({"scheme": "feature", "fc": None, "channel": "rayleigh", "snr_db": 0.0,
                 "symbols": 256, "ue_gflops": 0.08, "psnr_db": 99.0, "semantic_accuracy": 1.0})
    rows.append({"scheme": "digital", "fc": 0.25, "channel": "awgn", "snr_db": 0.0,
                 "symbols": 64, "ue_gflops": 0.09, "psnr_db": float("nan"),
                 "semantic_accuracy": None})
    return rows


def test_compute_budget_winners_is_a_monotone_frontier():
    from meg_lightning.evaluation.figure_compute import (
        compute_budget_winners,
        compute_frontier,
        format_budget_winners,
    )

    rows = _synthetic_rows()
    winners = compute_budget_winners(rows, 0.0, "psnr_db")
    assert [b for b, _ in winners] == [0.0, 1e-4, 0.08, 0.0809, 0.081, 0.3, 0.73]  # nan row out
    assert [w for _, w in winners] == ["centralized", "digital-image fc=0.25", "feature",
                                       "linear fc=0.25", "meg fc=0.25", "meg+dm fc=0.25",
                                       "meg+dm fc=0.25"]
    front = compute_frontier(rows, 0.0, "psnr_db")
    values = [f["value"] for f in front]
    assert values == sorted(values) and 99.0 not in values  # the rayleigh row is ignored
    # at 10 dB the cheap feature scheme beats meg and linear: the frontier stays on it
    w10 = dict(compute_budget_winners(rows, 10.0, "psnr_db"))
    assert w10[0.08] == w10[0.0809] == w10[0.081] == "feature"
    assert w10[0.73] == "meg+dm fc=0.25"
    # semantic accuracy: prompt wins only with the largest budget; the nan rows are skipped
    acc = compute_budget_winners(rows, 0.0, "semantic_accuracy")
    assert acc[-1] == (0.73, "prompt") and len(acc) == 7
    assert compute_budget_winners(rows, 5.0, "psnr_db") == []  # no rows at that SNR
    # lower-is-better metrics are minimised
    fid_rows = [dict(r, fid=100 - r["psnr_db"]) for r in rows if r["channel"] == "awgn"]
    assert compute_budget_winners(fid_rows, 0.0, "fid")[-1][1] == "meg+dm fc=0.25"
    text = format_budget_winners(rows, 0.0, "psnr_db")
    assert text.splitlines()[0].startswith("UE <= 0 GFLOPs/image: centralized")
    assert len(text.splitlines()) == 6  # one line per change of winner


@pytest.mark.parametrize("metric", ["psnr_db", "semantic_accuracy"])
def test_plot_quality_vs_compute_writes_the_figure(tmp_path, metric):
    from meg_lightning.evaluation.figure_compute import plot_quality_vs_compute

    out = plot_quality_vs_compute(_synthetic_rows(), tmp_path / "sub" / "quality_vs_compute.png",
                                  snrs=[0.0, 10.0, 5.0], metric=metric)
    assert out == tmp_path / "sub" / "quality_vs_compute.png"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp-")]
    pdf = plot_quality_vs_compute(_synthetic_rows(), tmp_path / "q.pdf", snrs=[0.0],
                                  metric=metric)
    assert pdf.read_bytes()[:4] == b"%PDF"
