"""MEG-mini: the procedural dataset, the word-level tokenizer, the shipped pipeline and classifier,
and a smoke run of the training code (tiny sizes)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from meg_lightning.mini import PIPELINE_DIR, WEIGHTS_DIR
from meg_lightning.mini.dataset import (ATTRIBUTES, COLORS, POSITIONS, Attributes,
                                        ShapesDataset, all_combinations, combinations,
                                        heldout_prompts, is_heldout, make_images, parse_caption)


@pytest.fixture(scope="module")
def classifier():
    from meg_lightning.mini.classifier import load_classifier

    return load_classifier()


# ----------------------------------------------------------------------------- dataset
def test_dataset_is_deterministic():
    a, ca, la = make_images("train", 16, seed=3)
    b, cb, lb = make_images("train", 16, seed=3)
    assert torch.equal(a, b) and ca == cb and torch.equal(la, lb)
    c, _, _ = make_images("train", 16, seed=4)
    assert not torch.equal(a, c)
    # sample i does not depend on what else is drawn
    d, cd, _ = make_images("train", 4, seed=3, start=12)
    assert torch.equal(d, a[12:]) and cd == ca[12:]
    assert a.shape == (16, 3, 64, 64) and a.dtype == torch.uint8
    item = ShapesDataset(16, "train", seed=3)[5]
    assert item["caption"] == ca[5]
    torch.testing.assert_close(item["pixel_values"], a[5].float() / 127.5 - 1)


def test_captions_and_labels_agree():
    combos = all_combinations()
    assert len(combos) == len(set(combos)) == 3 * 6 * 5 * 2 * 5
    for attrs in combos:
        assert parse_caption(attrs.caption) == attrs
        assert Attributes.from_indices(attrs.indices) == attrs
    _, captions, labels = make_images("all", 64, seed=0)
    for caption, label in zip(captions, labels):
        assert parse_caption(caption).indices == tuple(label.tolist())


def _nearest_color(rgb: np.ndarray) -> str:
    names = list(COLORS)
    d = [np.abs(rgb.astype(float) - np.array(COLORS[n])).sum() for n in names]
    return names[int(np.argmin(d))]


def test_images_show_what_the_caption_says():
    images, captions, _ = make_images("all", 64, seed=1)
    for img, caption in zip(images.permute(0, 2, 3, 1).numpy(), captions):  # (H, W, 3)
        attrs = parse_caption(caption)
        x, y = POSITIONS[attrs.position]
        # the shape covers its nominal centre (triangles: a bit below it, where they are wide)
        assert _nearest_color(img[y + 2, x]) == attrs.color, caption
        # the image corner farthest from the shape is background: its colour under the light
        # (v2), i.e. the nominal colour blended towards black or white
        corner = (0 if y > 32 else 63, 0 if x > 32 else 63)  # (row, column)
        assert _on_light_ramp(img[corner], COLORS[attrs.background]), caption


def _on_light_ramp(rgb, nominal, tol: float = 12.0) -> bool:
    """Whether ``rgb`` is ``nominal`` (+- colour jitter) darkened or lightened by some amount."""
    p, c = np.asarray(rgb, float), np.asarray(nominal, float)
    t = np.linspace(0, 1, 201)[:, None]
    ramp = np.concatenate([c * (1 - t), c + t * (255 - c)])  # towards black, towards white
    return float(np.abs(ramp - p).max(1).min()) <= tol


def test_parse_caption_rejects_other_text():
    with pytest.raises(ValueError, match="a red fox"):
        parse_caption("a red fox at sunset")
    with pytest.raises(ValueError, match="purple"):
        parse_caption("a small purple circle on a blue background, top left")
    with pytest.raises(ValueError, match="differ"):
        Attributes("circle", "red", "red", "small", "center")


def test_heldout_prompts_never_appear_in_training():
    heldout = set(heldout_prompts())
    train = {a.caption for a in combinations("train")}
    assert len(heldout) == 90 and len(train) == 810 and not heldout & train
    assert all(is_heldout(parse_caption(p)) for p in heldout)
    _, captions, _ = make_images("train", 2000, seed=0)
    assert not heldout & set(captions)
    # ... but every pair of attribute values of a held-out prompt occurs in training
    seen = {(i, a.indices[i], j, a.indices[j]) for a in combinations("train")
            for i, j in itertools.combinations(range(len(ATTRIBUTES)), 2)}
    for p in heldout:
        idx = parse_caption(p).indices
        for i, j in itertools.combinations(range(len(ATTRIBUTES)), 2):
            assert (i, idx[i], j, idx[j]) in seen, p
    with pytest.raises(ValueError, match="split='test'"):
        combinations("test")


def test_prompt_file_lists_every_combination():
    from meg_lightning.mini.dataset import PROMPT_FILE, prompt_file_lines

    lines = PROMPT_FILE.read_text().splitlines()
    assert lines == prompt_file_lines()
    assert sorted(lines) == sorted(a.caption for a in all_combinations())


# ----------------------------------------------------------------------------- tokenizer
def test_tokenizer_maps_every_word_to_one_token():
    from meg_lightning.mini.model import MAX_LENGTH, caption_words, mini_tokenizer

    tok = mini_tokenizer()
    for word in caption_words():
        assert len(tok.tokenize(word)) == 1, (word, tok.tokenize(word))
    ids = [tok.convert_tokens_to_ids(tok.tokenize(w)) for w in caption_words()]
    assert len({i[0] for i in ids}) == len(caption_words())  # distinct ids
    longest = max((a.caption for a in all_combinations()), key=len)
    enc = tok(longest).input_ids
    assert len(enc) == len(longest.replace(",", " ,").split()) + 2 <= MAX_LENGTH  # + BOS, EOS
    assert enc[0] == tok.bos_token_id and enc[-1] == tok.eos_token_id
    # other text still tokenizes (character fall-back), nothing is silently dropped
    assert len(tok.tokenize("fox")) == 3


def test_shipped_tokenizer_equals_the_built_one():
    from transformers import CLIPTokenizer

    from meg_lightning.mini.model import mini_tokenizer

    shipped = CLIPTokenizer.from_pretrained(PIPELINE_DIR / "tokenizer")
    built = mini_tokenizer()
    for p in heldout_prompts()[:10] + ["", "a red fox"]:
        assert shipped(p).input_ids == built(p).input_ids


# ----------------------------------------------------------------------------- shipped pipeline
def test_mini_preset():
    from meg_lightning.compose import load_config

    cfg = load_config(["model=mini"])
    assert (cfg.generation.height, cfg.generation.width) == (64, 64)
    assert cfg.data.cache_dir == "data/latents/mini" and cfg.codec.arch == "mlp"
    assert cfg.generation.guidance_scale > 1  # the model is trained for classifier-free guidance


def test_shipped_pipeline_loads_offline_and_generates(make_cfg):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from meg_lightning.generation import (decode_latents, generate_latents, latent_shape,
                                          load_pipeline, vae_scale_factor)

    cfg = make_cfg("model=mini", "generation.num_inference_steps=3")
    pipe = load_pipeline(cfg)
    assert isinstance(pipe.unet, UNet2DConditionModel) and isinstance(pipe.vae, AutoencoderKL)
    assert isinstance(pipe.text_encoder, CLIPTextModel)
    assert isinstance(pipe.tokenizer, CLIPTokenizer)
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert vae_scale_factor(pipe.vae) == 8 and latent_shape(pipe, cfg.generation) == (4, 8, 8)
    assert pipe.vae.config.scaling_factor != 1.0  # computed from the latent std, not a default
    assert next(pipe.unet.parameters()).dtype == torch.float32
    z = generate_latents(pipe, [heldout_prompts()[0]], [7], cfg.generation)
    assert z.shape == (1, 4, 8, 8) and torch.isfinite(z).all()
    image = decode_latents(pipe.vae, z)
    assert image.shape == (1, 3, 64, 64)


def test_seed_dependence_pairs_images_of_one_prompt():
    from meg_lightning.mini.train import seed_dependence

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 8, 8, generator=g), torch.rand(3, 8, 8, generator=g)
    images = torch.stack([a[0], a[1], b, a[0]])  # prompts p, q, p, q
    dep = seed_dependence(images, ["p", "q", "p", "q"])
    mse = ((a[0] - b) ** 2).mean().item(), ((a[1] - a[0]) ** 2).mean().item()
    expected = np.mean([10 * np.log10(1 / m) for m in mse])
    assert dep["pairs"] == 2 and dep["prompts"] == 2
    assert dep["psnr_mean"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="two images of one prompt"):
        seed_dependence(images[:2], ["p", "q"])


def test_shipped_weights_are_small_and_in_the_wheel():
    files = [p for p in WEIGHTS_DIR.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    assert total < 10 * 2**20, f"{total / 2**20:.1f} MiB of weights: keep the package small"
    names = {p.name for p in files}
    assert {"model_index.json", "classifier.safetensors", "classifier.json"} <= names
    assert not any(p.suffix in (".bin", ".pt", ".ckpt") for p in files)  # safetensors only
    metrics = json.loads((WEIGHTS_DIR / "metrics.json").read_text())
    assert metrics["eval"]["heldout"]["semantic_accuracy"] >= 0.9


# ----------------------------------------------------------------------------- classifier
def test_classifier_is_accurate_on_fresh_images(classifier):
    from meg_lightning.mini.classifier import predict_attributes, semantic_accuracy

    images, captions, labels = make_images("all", 400, seed=987654)  # a seed training never used
    pred = predict_attributes(images, classifier)
    assert set(pred) == set(ATTRIBUTES) and pred["shape"].shape == (400,)
    for j, a in enumerate(ATTRIBUTES):
        assert (pred[a] == labels[:, j]).float().mean() >= 0.97, a
    assert semantic_accuracy(images, captions, classifier) >= 0.95
    # wrong prompts score low: shift every caption's shape by one
    wrong = [Attributes.from_indices(((l[0] + 1) % 3, *l[1:].tolist())).caption for l in labels]
    assert semantic_accuracy(images, wrong, classifier) < 0.05


def test_classifier_is_a_fid_feature_extractor(classifier):
    from torchmetrics.image.fid import FrechetInceptionDistance

    images, _, _ = make_images("all", 32, seed=5)
    f_uint8 = classifier(images)
    f_float = classifier(images.float() / 255)
    assert f_uint8.shape == (32, classifier.num_features)
    torch.testing.assert_close(f_uint8, f_float)
    for normalize, real, fake in ((True, images[:16].float() / 255, images[16:].float() / 255),
                                  (False, images[:16], images[16:])):
        fid = FrechetInceptionDistance(feature=classifier, normalize=normalize)
        fid.update(real, real=True)
        fid.update(fake, real=False)
        assert torch.isfinite(fid.compute())
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        classifier(images[:, :1])


def test_mini_fid_is_the_default_for_mini_and_named_so():
    from meg_lightning.compose import load_config
    from meg_lightning.errors import ConfigError
    from meg_lightning.metrics import feature_name, make_feature_extractor
    from meg_lightning.mini.classifier import AttributeClassifier, domain_features

    for kind, model in (("auto", "mini"), ("mini", "tiny"), ("mini", None)):
        ext = make_feature_extractor(kind, domain_features(model, kind))
        assert isinstance(ext, AttributeClassifier), (kind, model)
        assert feature_name(ext) == "mini-FID" and "ncept" not in feature_name(ext)
    assert load_config(["eval.fid_features=mini"]).eval.fid_features == "mini"
    assert domain_features("tiny") is None  # auto on another model: Inception or pixels
    with pytest.raises(ConfigError, match="eval.fid_features='mini'"):
        make_feature_extractor("mini")  # the metrics layer cannot make mini's own features
    with pytest.raises(ConfigError, match="one of auto, inception, pixels, mini"):
        load_config(["eval.fid_features=clip"])


def test_sweep_on_mini_reports_mini_fid_and_semantic_accuracy(make_cfg):
    """The real judge in the sweep: I_0 of the shipped model matches its prompts, an identical
    image keeps that accuracy, and -30 dB centralised transmission destroys it."""
    from meg_lightning.data import cache
    from meg_lightning.evaluation.sweep import read_results, run_sweep

    cfg = make_cfg("model=mini", "data.num_prompts=24", "data.test_fraction=0.5",
                   "data.val_fraction=0.1", "eval.schemes=[centralized,feature]",
                   "eval.channels=[none,awgn]", "eval.snrs_db=[-30]", "eval.num_images=12",
                   "eval.bootstrap=0")
    cache.main(cfg)
    res = run_sweep(cfg, progress=False)
    by = {r["cell"]: r for r in read_results(res.csv_path)}
    ref = by["feature_none_snrinf"]["semantic_accuracy_ref"]
    assert ref >= 0.9  # held-out accuracy of the shipped model is 1.0 (docs/MINI.md)
    assert by["feature_none_snrinf"]["semantic_accuracy"] == ref  # the same images
    assert by["centralized_awgn_snr-30"]["semantic_accuracy"] <= 0.25
    assert {r["fid_features"] for r in by.values()} == {"mini-FID"}
    assert by["feature_none_snrinf"]["fid"] < 1e-6 < by["centralized_awgn_snr-30"]["fid"]


def test_semantic_accuracy_checks_lengths(classifier):
    from meg_lightning.mini.classifier import semantic_accuracy

    images, captions, _ = make_images("all", 4, seed=0)
    with pytest.raises(ValueError, match="4 images for 3 prompts"):
        semantic_accuracy(images, captions[:3], classifier)


def test_judging_from_mini_fid_features_equals_judging_the_images(classifier, make_cfg):
    """The sweep runs the classifier once per batch (its features serve FID and the judge): the
    verdicts from those features equal those from the images, on right and wrong prompts."""
    from meg_lightning.evaluation.inputs import _default_judge, judge_batch
    from meg_lightning.metrics import extract_features
    from meg_lightning.mini.classifier import all_match

    images, captions, labels = make_images("all", 48, seed=31337)
    wrong = [Attributes.from_indices(((l[0] + 1) % 3, *l[1:].tolist())).caption
             if i % 2 else c for i, (c, l) in enumerate(zip(captions, labels))]
    feats = extract_features(classifier, images.float() / 255)  # float64, as the sweep keeps them
    for prompts in (captions, wrong):
        direct = all_match(images, prompts, classifier)
        assert torch.equal(all_match(None, prompts, classifier, features=feats), direct)
    assert all_match(images, wrong, classifier).float().mean() <= 0.6  # the wrong half fails
    # the default judge shares an AttributeClassifier extractor, and only that one
    cfg = make_cfg("model=mini", "data.num_prompts=48")
    judge = _default_judge(cfg, classifier)
    assert judge.features_of is classifier
    assert _default_judge(cfg, torch.nn.Identity()).features_of is None
    index = torch.arange(16)
    x = images[:16].float() / 255
    torch.testing.assert_close(judge_batch(judge, x, index, classifier, feats[:16]),
                               judge(x, index))
    calls = []
    judge.from_features = lambda f, i: calls.append(i) or torch.zeros(len(i), dtype=torch.bool)
    judge_batch(judge, x, index, torch.nn.Identity(), feats[:16])  # another extractor: images
    assert not calls
    judge_batch(judge, x, index, classifier, feats[:16])
    assert len(calls) == 1


# ----------------------------------------------------------------------------- training code
def _smoke_config(tmp_path, **kw):
    from meg_lightning.mini.model import MiniModelConfig
    from meg_lightning.mini.train import MiniTrainConfig

    small = MiniModelConfig(vae_channels=[8, 8, 8, 8], unet_channels=[16, 16], unet_groups=8,
                            text_dim=16, unet_head_dim=4)
    return MiniTrainConfig(out_dir=str(tmp_path / "run"), weights_dir=str(tmp_path / "weights"),
                           model=small, vae_steps=3, vae_batch_size=4, num_latents=16,
                           unet_steps=3, unet_batch_size=8, classifier_steps=3,
                           classifier_batch_size=8, eval_inference_steps=2, num_threads=1,
                           eval_samples_per_prompt=1, checkpoint_every=2, **kw)


def test_training_smoke_run_saves_a_loadable_pipeline(tmp_path):
    from meg_lightning.config import MegConfig
    from meg_lightning.generation import load_pipeline
    from meg_lightning.mini.classifier import load_classifier
    from meg_lightning.mini.train import main

    cfg = _smoke_config(tmp_path)
    report = main(cfg)
    assert set(report) >= {"vae", "unet", "classifier", "eval"}
    assert report["vae"]["scaling_factor"] > 0
    assert 0 <= report["eval"]["heldout"]["semantic_accuracy"] <= 1
    assert report["eval"]["heldout"]["prompts"] == 90
    weights = tmp_path / "weights"
    assert (weights / "metrics.json").exists()
    pipe = load_pipeline(MegConfig(model=str(weights / "pipeline")), torch.device("cpu"))
    assert pipe.vae.config.scaling_factor == pytest.approx(report["vae"]["scaling_factor"])
    assert load_classifier(weights / "classifier.safetensors").num_features == 128
    # rerunning skips finished stages (resumable), returning the same numbers
    again = main(_smoke_config(tmp_path, stages=["vae", "unet", "classifier"]))
    assert again["vae"] == report["vae"] and again["unet"] == report["unet"]


def test_training_defaults_are_the_shipped_run():
    """`make train-mini` with no arguments is the run that made the shipped weights (its config is
    saved in metrics.json; a full rerun reproduced the pipeline bit for bit, docs/MINI.md)."""
    from dataclasses import asdict

    from meg_lightning.mini.train import MiniTrainConfig

    shipped = json.loads((WEIGHTS_DIR / "metrics.json").read_text())["config"]
    defaults = asdict(MiniTrainConfig())
    assert {k: defaults[k] for k in shipped} == shipped


def test_train_mini_command_rejects_bad_keys_before_writing(capsys, tmp_path):
    from meg_lightning.cli import run

    out = f"mini.out_dir={tmp_path / 'mini'}"
    for arg, needle in (("mini.unet_steps=-1", "mini.unet_steps=-1"),
                        ("mini.no_such_key=1", "mini.no_such_key"),
                        ("mini.stages=[vae,fly]", "mini.stages="),
                        ("mini.vae_lr=fast", "mini.vae_lr='fast'")):
        assert run(["train-mini", out, arg]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "mini").exists()


def _two_seeds(prompts: list[str]) -> torch.Tensor:
    from meg_lightning.compose import load_config
    from meg_lightning.mini.train import generate_reference_images

    gen = load_config(["model=mini"]).generation
    return torch.cat([generate_reference_images(PIPELINE_DIR, prompts, seed=s,
                                                steps=gen.num_inference_steps,
                                                guidance=gen.guidance_scale, batch_size=90)
                      for s in (0, 1)])


def _check_seed_and_semantics(prompts: list[str], classifier, max_psnr_db: float) -> dict:
    from meg_lightning.mini.classifier import semantic_accuracy
    from meg_lightning.mini.train import seed_dependence

    images, both = _two_seeds(prompts), prompts * 2
    dep = seed_dependence(images, both)
    assert dep["pairs"] == len(prompts) and dep["psnr_mean"] <= max_psnr_db, dep
    assert semantic_accuracy(images, both, classifier) >= 0.9
    assert semantic_accuracy(images, both[1:] + both[:1], classifier) <= 0.1  # wrong prompts
    return dep


def test_the_seed_decides_what_the_caption_does_not(classifier):
    """Mini v2: two seeds of one prompt give different pictures while both keep every attribute
    the caption states, and the same images fail against the wrong prompts. A sample of 15
    held-out prompts (its mean PSNR scatters by ~1-2 dB around the full set's 14.6 dB; v1:
    27.8 dB), so the bound here is loose; the slow test checks all 90 held-out prompts."""
    _check_seed_and_semantics(heldout_prompts()[::6], classifier, max_psnr_db=18.0)


@pytest.mark.slow
def test_the_seed_decides_on_every_heldout_prompt(classifier):
    """The acceptance figure of mini v2 on all 90 held-out prompts x 2 seeds: mean PSNR between
    the two images of a prompt <= 15 dB (docs/MINI.md: 14.6 dB over 270 pairs of 4 seeds)."""
    _check_seed_and_semantics(heldout_prompts(), classifier, max_psnr_db=15.0)


@pytest.mark.slow
def test_heldout_reference_images_match_their_prompts(classifier):
    """I_0 (no channel) for every held-out prompt, with the preset's sampler: >= 90% all-correct."""
    from meg_lightning.compose import load_config
    from meg_lightning.mini.classifier import semantic_accuracy
    from meg_lightning.mini.train import generate_reference_images

    gen = load_config(["model=mini"]).generation
    prompts = heldout_prompts() * 2
    images = generate_reference_images(PIPELINE_DIR, prompts, seed=0,
                                       steps=gen.num_inference_steps,
                                       guidance=gen.guidance_scale, batch_size=90)
    acc = semantic_accuracy(images, prompts, classifier)
    print(f"held-out semantic accuracy of I_0: {acc:.3f} over {len(prompts)} images")
    assert acc >= 0.9
