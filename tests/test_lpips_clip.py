"""LPIPS and CLIP score: the metrics with injected networks, their real-weight paths on random
weights saved where a user puts the real ones, what happens without weights, and the sweep's
columns (metrics.lpips, metrics.clip_score, evaluation.sweep)."""

from __future__ import annotations

import contextlib
import math
import warnings
import zlib

import pytest
import torch
from torch import nn

from meg_lightning.errors import MissingWeightsError, UserError
from meg_lightning.metrics import LPIPS, ClipScorer, make_clip_score, make_lpips

LATENT = (4, 8, 8)  # the tiny preset's latent shape (64x64 images)


class TinyFeatures(nn.Module):
    """Two conv layers; LPIPS reads both outputs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, x):
        h = self.a(x)
        return [h, self.b(h)]


def _images(n=4, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("weighted", [False, True])
def test_lpips_is_zero_on_equal_images_symmetric_and_grows_with_noise(weighted):
    w = [torch.rand(8), torch.rand(16)] if weighted else None
    lp = LPIPS(TinyFeatures(), w, name="tiny")
    x = _images()
    g = torch.Generator().manual_seed(1)
    noisy = [(x + s * torch.randn(x.shape, generator=g)).clamp(0, 1) for s in (0.02, 0.1, 0.3)]
    assert torch.equal(lp(x, x), torch.zeros(4))
    torch.testing.assert_close(lp(x, noisy[1]), lp(noisy[1], x))
    d = [float(lp(x, y).mean()) for y in noisy]
    assert 0 < d[0] < d[1] < d[2], d
    assert lp(x, noisy[0]).shape == (4,) and lp.name == "tiny"
    with pytest.raises(ValueError, match="same shape"):
        lp(x, x[:2])


def _save_random_alexnet(path):
    """torchmetrics' LPIPS with a random AlexNet backbone, and that backbone saved as a
    torchvision AlexNet state dict (the format of alexnet-owt-7be5be79.pth)."""
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    torch.manual_seed(0)
    ref = _NoTrainLpips(net="alex", pnet_rand=True)  # random backbone, LPIPS v0.1 linear layers
    state = {f"features.{k}": v for i in range(1, 6)
             for k, v in getattr(ref.net, f"slice{i}").state_dict().items()}
    torch.save(state, path)
    return ref


def test_lpips_real_path_equals_torchmetrics(monkeypatch, tmp_path):
    """make_lpips reads the backbone from MEG_LPIPS_WEIGHTS and torchmetrics' linear layers, and
    gives torchmetrics' LPIPS for the same backbone."""
    ref = _save_random_alexnet(tmp_path / "alexnet.pth")
    monkeypatch.setenv("MEG_LPIPS_WEIGHTS", str(tmp_path / "alexnet.pth"))
    with _no_missing_weights_warning():
        lp = make_lpips()
    assert isinstance(lp, LPIPS) and lp.name == "alex"
    x = _images(3, 64)
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    torch.testing.assert_close(lp(x, y), ref(x, y, normalize=True).flatten(), rtol=1e-4,
                               atol=1e-6)
    assert torch.equal(lp(x, x), torch.zeros(3))


@contextlib.contextmanager
def _no_missing_weights_warning():
    """Fails when the block warns that LPIPS or CLIP score were not computed."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        yield
    assert not [str(w.message) for w in record if "not computed" in str(w.message)]


def _one_warning(record, needle):
    msgs = [str(w.message) for w in record if needle in str(w.message)]
    assert len(msgs) == 1, msgs
    assert "\n" not in msgs[0]
    return msgs[0]


def test_lpips_without_weights_is_absent_with_one_warning_line(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty torch.hub cache
    monkeypatch.delenv("MEG_LPIPS_WEIGHTS", raising=False)
    with pytest.warns(UserWarning) as record:
        assert make_lpips() is None
    msg = _one_warning(record, "LPIPS not computed")
    assert "alexnet-owt-7be5be79.pth" in msg and "MEG_LPIPS_WEIGHTS=<file>" in msg
    monkeypatch.setenv("MEG_LPIPS_WEIGHTS", str(tmp_path / "absent.pth"))
    with pytest.warns(UserWarning, match="absent.pth"):
        assert make_lpips("vgg") is None
    monkeypatch.setenv("MEG_LPIPS_WEIGHTS", "none")  # asked for nothing: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make_lpips() is None
    monkeypatch.delenv("MEG_LPIPS_WEIGHTS")
    monkeypatch.setenv("MEG_LPIPS_NET", "resnet")
    with pytest.raises(UserError, match="MEG_LPIPS_NET='resnet': expected one of alex, vgg"):
        make_lpips()
    monkeypatch.delenv("MEG_LPIPS_NET")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    monkeypatch.setenv("MEG_LPIPS_WEIGHTS", str(bad))
    with pytest.raises(MissingWeightsError) as e:
        make_lpips()
    assert "bad.pth" in str(e.value) and "\n" not in str(e.value)
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(MissingWeightsError, match="is not torchvision's alexnet state dict"):
        make_lpips()


COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


class ColourImage(nn.Module):
    """Image embedding: mean RGB minus its grey level."""

    def forward(self, images):
        m = images.mean(dim=(2, 3))
        return m - m.mean(1, keepdim=True)


class ColourText(nn.Module):
    """Text embedding: the RGB of the colour word in the caption, minus its grey level."""

    def forward(self, prompts):
        rgb = torch.tensor([next(c for w, c in COLOURS.items() if w in p) for p in prompts])
        return rgb - rgb.mean(1, keepdim=True)


def test_clip_score_prefers_the_own_caption_with_a_constructed_encoder_pair():
    captions = ["a red square", "a green field", "a blue sky", "a green car"]
    g = torch.Generator().manual_seed(0)
    images = torch.stack([torch.tensor(COLOURS[next(w for w in COLOURS if w in c)])
                          .view(3, 1, 1).expand(3, 16, 16) for c in captions])
    images = (0.6 * images + 0.2 + 0.1 * torch.randn(images.shape, generator=g)).clamp(0, 1)
    clip = ClipScorer(ColourImage(), ColourText(), name="colours")
    own = clip(images, captions)
    shuffled = clip(images, captions[1:] + captions[:1])  # every caption now another colour
    assert own.shape == (4,) and bool((own > 95).all()), own
    assert bool((own > shuffled + 50).all()), (own, shuffled)
    assert float(shuffled.min()) >= 0  # max(100 cos, 0)
    emb_i, emb_t = clip.encode_images(images), clip.encode_text(captions)
    torch.testing.assert_close(emb_i.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(ClipScorer.score(emb_i, emb_t), own)
    with pytest.raises(ValueError, match="one prompt per image"):
        clip(images, captions[:3])


def _tiny_clip_folder(path):
    """A random-weight transformers CLIPModel with its processor, saved as a local folder."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from meg_lightning.generation.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(path)
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                     crop_size={"height": 32, "width": 32}),
                  tokenizer=tok).save_pretrained(path)


def test_clip_real_path_is_100_cos_of_the_clip_model_from_a_local_folder(monkeypatch, tmp_path):
    """make_clip_score loads MEG_CLIP_MODEL offline; its scores are max(100 cos, 0) of the
    model's own image and text embeddings (CLIPModel.forward), per image."""
    from transformers import CLIPModel, CLIPProcessor

    folder = tmp_path / "tiny-clip"
    _tiny_clip_folder(folder)
    monkeypatch.setenv("MEG_CLIP_MODEL", str(folder))
    with _no_missing_weights_warning():
        clip = make_clip_score()
    assert isinstance(clip, ClipScorer) and clip.name == "tiny-clip"
    images = _images(3, 40)
    prompts = ["a red cube on grass", "two blue spheres", "a cat"]
    got = clip(images, prompts)
    model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    proc = CLIPProcessor.from_pretrained(folder, local_files_only=True)
    inputs = proc(text=prompts, images=list((images * 255).round().to(torch.uint8)),
                  return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**inputs)
    cos = out.logits_per_image.diagonal() / model.logit_scale.exp()
    torch.testing.assert_close(got, (100 * cos).clamp_min(0), rtol=1e-4, atol=1e-4)


def test_clip_without_a_model_is_absent_with_one_warning_line(monkeypatch, tmp_path):
    monkeypatch.setenv("MEG_CLIP_MODEL", str(tmp_path / "no-such-folder"))
    with pytest.warns(UserWarning) as record:
        assert make_clip_score() is None
    msg = _one_warning(record, "CLIP score not computed")
    assert "no-such-folder" in msg and "huggingface-cli download" in msg
    monkeypatch.setenv("MEG_CLIP_MODEL", "someone/not-in-the-cache")
    with pytest.warns(UserWarning, match="not-in-the-cache"):
        assert make_clip_score() is None
    monkeypatch.setenv("MEG_CLIP_MODEL", "none")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make_clip_score() is None
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    monkeypatch.setenv("MEG_CLIP_MODEL", str(broken))
    with pytest.raises(MissingWeightsError) as e:
        make_clip_score()
    assert "could not be loaded" in str(e.value) and "\n" not in str(e.value)


class HashText(nn.Module):
    """A fixed random embedding per prompt (seeded by its CRC); records what it encoded."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, prompts):
        self.seen.extend(prompts)
        return torch.stack([torch.randn(8, generator=torch.Generator().manual_seed(
            zlib.crc32(p.encode()))) for p in prompts])


class ConvImage(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 5, stride=4)

    def forward(self, images):
        return self.conv(images).mean(dim=(2, 3))


def _sweep(make_cfg, tiny_pipe, **kw):
    from meg_lightning.data.datamodule import TensorLatentDataModule
    from meg_lightning.evaluation.sweep import read_results, run_sweep

    cfg = make_cfg("eval.schemes=[centralized,feature]", "eval.channels=[awgn,none]",
                   "eval.snrs_db=[0,20]", "eval.num_images=6", "eval.batch_size=4",
                   "eval.bootstrap=0", "eval.fid_features=pixels", "data.num_prompts=30")
    dm = TensorLatentDataModule(torch.randn(30, *LATENT), test_fraction=0.3)
    res = run_sweep(cfg, datamodule=dm, vae=tiny_pipe.vae, progress=False, **kw)
    return {r["cell"]: r for r in read_results(res.csv_path)}, dm


def test_sweep_writes_lpips_and_clip_columns_with_injected_networks(make_cfg, tiny_pipe,
                                                                   monkeypatch):
    monkeypatch.setenv("MEG_LPIPS_WEIGHTS", "/absent")  # injected networks: never looked up
    monkeypatch.setenv("MEG_CLIP_MODEL", "/absent")
    text = HashText()
    prompts = [f"prompt number {i}" for i in range(30)]
    with _no_missing_weights_warning():
        by, dm = _sweep(make_cfg, tiny_pipe, lpips=LPIPS(TinyFeatures(), name="tiny"),
                        clip_score=ClipScorer(ConvImage(), text, name="conv"), prompts=prompts)
    ds = dm.dataset("test")
    assert text.seen == [prompts[int(ds[k]["index"])] for k in range(6)]  # encoded once
    ref = by["feature_none_snrinf"]["clip_score_ref"]
    assert math.isfinite(ref) and {r["clip_score_ref"] for r in by.values()} == {ref}
    for cell in ("feature_none_snrinf", "centralized_none_snrinf"):  # I_g = I_0
        r = by[cell]
        assert r["lpips"] == pytest.approx(0, abs=1e-9) and r["lpips_net"] == "tiny"
        assert r["clip_score"] == pytest.approx(ref, abs=1e-4) and r["clip_model"] == "conv"
    lo, hi = by["centralized_awgn_snr0"], by["centralized_awgn_snr20"]
    assert lo["lpips"] > hi["lpips"] > 0 and lo["lpips_std"] > 0
    assert lo["clip_score"] != pytest.approx(ref) and lo["clip_score_std"] >= 0


def test_sweep_without_weights_leaves_the_columns_empty_and_warns(make_cfg, tiny_pipe,
                                                                  monkeypatch, tmp_path):
    monkeypatch.setenv("MEG_LPIPS_WEIGHTS", str(tmp_path / "alexnet.pth"))
    monkeypatch.setenv("MEG_CLIP_MODEL", str(tmp_path / "clip"))
    with pytest.warns(UserWarning) as record:
        by, _ = _sweep(make_cfg, tiny_pipe)
    _one_warning(record, "LPIPS not computed")
    _one_warning(record, "CLIP score not computed")
    for r in by.values():
        assert math.isnan(r["lpips"]) and math.isnan(r["lpips_std"]) and r["lpips_net"] is None
        assert math.isnan(r["clip_score"]) and math.isnan(r["clip_score_ref"])
        assert r["clip_model"] is None and math.isfinite(r["psnr_db"])
