"""A domain feature extractor and attribute judge for the ``mini`` model's images.

A small CNN trained on the procedural shapes (:mod:`meg_lightning.mini.dataset`) to predict the
five caption attributes. It serves two purposes:

- **semantic accuracy**: the share of generated images whose attributes *all* match their prompt
  (:func:`semantic_accuracy`), a per-image check of what the image shows;
- **mini-FID**: its penultimate features (``num_features`` = 128) replace Inception-v3 in eq. (8)
  on this domain, ``FrechetInceptionDistance(feature=load_classifier())``. It is *not* the
  Inception FID of the paper and must never be reported as such.

    image (B, 3, 64, 64) --4 conv stages--> (B, 64, 4, 4) --flatten, linear--> features (B, 128)
        features --5 linear heads--> logits per attribute

It is trained with blur and noise augmentation so that it judges decoded (slightly soft) images
by their content, not by their sharpness.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from meg_lightning.errors import MissingWeightsError
from meg_lightning.io import atomic_path, atomic_write_json
from meg_lightning.mini import WEIGHTS_DIR
from meg_lightning.mini.dataset import ATTRIBUTES, IMAGE_SIZE, VOCABULARY, parse_caption

CLASSIFIER_WEIGHTS = WEIGHTS_DIR / "classifier.safetensors"
CLASSIFIER_CONFIG = WEIGHTS_DIR / "classifier.json"


class AttributeClassifier(nn.Module):
    """CNN: images -> penultimate features (``forward``) and attribute logits (``classify``).

    ``forward`` accepts what torchmetrics' FID passes: float images in [0, 1] (``normalize=True``)
    or uint8 images in [0, 255] (``normalize=False``); other sizes are resized to 64x64.
    """

    name = "mini-FID"  # how FIDs in its feature space are labelled (metrics.feature_name)

    def __init__(self, width: int = 32, num_features: int = 128):
        super().__init__()
        self.config = {"width": width, "num_features": num_features}
        self.num_features = num_features  # read by torchmetrics' FID instead of a probe image
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(3, w // 2, 3, stride=2, padding=1), nn.ReLU(),  # (B, w/2, 32, 32)
            nn.Conv2d(w // 2, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, w, 16, 16)
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 2w, 8, 8)
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 2w, 4, 4)
            # flattening keeps where things are: position is one of the attributes
            nn.Flatten(), nn.Linear(2 * w * 16, num_features), nn.ReLU())  # (B, num_features)
        self.heads = nn.ModuleDict({a: nn.Linear(num_features, len(VOCABULARY[a]))
                                    for a in ATTRIBUTES})

    @staticmethod
    def preprocess(images: Tensor) -> Tensor:
        """uint8 [0, 255] or float [0, 1] (B, 3, H, W) -> float [-1, 1] (B, 3, 64, 64)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        if x.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
            x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=True,
                              align_corners=False)
        return x * 2 - 1

    def forward(self, images: Tensor) -> Tensor:
        """Penultimate features (B, num_features): the mini-FID embedding."""

        p = next(self.parameters())
        return self.body(self.preprocess(images).to(p.device, p.dtype))

    def classify(self, images: Tensor) -> dict[str, Tensor]:
        """Logits per attribute: {name: (B, number of values)}."""

        h = self(images)
        return {a: head(h) for a, head in self.heads.items()}


def load_classifier(path: str | Path = CLASSIFIER_WEIGHTS) -> AttributeClassifier:
    """The shipped classifier (eval mode, CPU); ``path`` may point at another trained one."""

    path = Path(path)
    cfg_path = path.with_suffix(".json")
    if not path.is_file() or not cfg_path.is_file():
        raise MissingWeightsError(f"mini classifier weights not found at {str(path)!r} (and "
                                  f"{cfg_path.name} beside it): run `make train-mini` to train "
                                  "them")
    cfg = json.loads(cfg_path.read_text())
    model = AttributeClassifier(width=cfg["width"], num_features=cfg["num_features"])
    model.load_state_dict(load_file(str(path)))
    return model.eval().requires_grad_(False)


def save_classifier(model: AttributeClassifier, path: str | Path = CLASSIFIER_WEIGHTS,
                    metrics: dict | None = None) -> Path:
    """Weights as safetensors plus a json with the architecture (and optional metrics) beside it."""


    path = Path(path)
    with atomic_path(path) as tmp:
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp))
    atomic_write_json(path.with_suffix(".json"), {**model.config, "attributes": VOCABULARY,
                                                  **({"metrics": metrics} if metrics else {})})
    return path


_DEFAULT: AttributeClassifier | None = None


def _default() -> AttributeClassifier:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_classifier()
    return _DEFAULT


@torch.no_grad()
def predict_attributes(images: Tensor, classifier: AttributeClassifier | None = None,
                       batch_size: int = 256) -> dict[str, Tensor]:
    """Predicted value index per attribute: {name: (B,) long}, in VOCABULARY order."""

    model = classifier or _default()
    out: dict[str, list[Tensor]] = {a: [] for a in ATTRIBUTES}
    for i in range(0, len(images), batch_size):
        for a, logits in model.classify(images[i:i + batch_size]).items():
            out[a].append(logits.argmax(-1).cpu())
    return {a: torch.cat(v) for a, v in out.items()}


@torch.no_grad()
def predict_from_features(features: Tensor, classifier: AttributeClassifier | None = None
                          ) -> dict[str, Tensor]:
    """:func:`predict_attributes` from the classifier's own features (B, num_features) (its
    ``forward``, the mini-FID embedding), without running its body again."""

    model = classifier or _default()
    p = next(model.heads.parameters())
    h = features.to(p.device, p.dtype)
    return {a: head(h).argmax(-1).cpu() for a, head in model.heads.items()}


def attribute_matches(images: Tensor | None, prompts: Sequence[str],
                      classifier: AttributeClassifier | None = None, *,
                      features: Tensor | None = None) -> dict[str, Tensor]:
    """Per attribute, whether image i shows what prompt i names: {name: (B,) bool}. With
    ``features`` (the classifier's forward of the images) the body is not run again."""

    n = len(features) if features is not None else len(images)
    if n != len(prompts):
        raise ValueError(f"got {n} images for {len(prompts)} prompts: expected one each")
    pred = (predict_from_features(features, classifier) if features is not None
            else predict_attributes(images, classifier))
    target = torch.tensor([parse_caption(p).indices for p in prompts], dtype=torch.long)  # (B, 5)
    return {a: pred[a] == target[:, j] for j, a in enumerate(ATTRIBUTES)}


def all_match(images: Tensor | None, prompts: Sequence[str],
              classifier: AttributeClassifier | None = None, *,
              features: Tensor | None = None) -> Tensor:
    """Per image, whether all five of its attributes match its prompt's: (B,) bool."""

    matches = attribute_matches(images, prompts, classifier, features=features)
    return torch.stack(list(matches.values())).all(0)


def semantic_accuracy(images: Tensor, prompts: Sequence[str],
                      classifier: AttributeClassifier | None = None) -> float:
    """Share of images whose five attributes all match their prompt's (parsed from the caption)."""
    return float(all_match(images, prompts, classifier).float().mean())


def prompt_judge(prompts: Sequence[str], extractor: Any = None
                 ) -> Callable[[Tensor, Tensor], Tensor]:
    """(images, indices into ``prompts``) -> (b,) bool: whether each image's five attributes all
    match its prompt's (the shipped classifier).

    When ``extractor`` (the FID feature extractor) is that classifier (mini-FID), the judge is
    built on it and also judges from its features (``judge.from_features(features, index)``,
    ``judge.features_of is extractor``), so a caller runs the classifier once per batch."""
    shared = isinstance(extractor, AttributeClassifier)
    clf = extractor if shared else load_classifier()

    def judge(images: Tensor, index: Tensor) -> Tensor:
        return all_match(images.cpu(), [prompts[int(i)] for i in index], clf)

    def from_features(features: Tensor, index: Tensor) -> Tensor:
        return all_match(None, [prompts[int(i)] for i in index], clf, features=features)

    judge.features_of = clf if shared else None
    judge.from_features = from_features
    return judge


def domain_features(model: Optional[str], kind: str = "auto"
                    ) -> Optional[Callable[[], AttributeClassifier]]:
    """The domain feature extractor to inject into
    :func:`meg_lightning.metrics.make_feature_extractor`: the shipped classifier (mini-FID) for
    the ``mini`` model, or for any model when ``eval.fid_features`` (``kind``) asks for ``mini``;
    None otherwise."""
    return load_classifier if model == "mini" or kind == "mini" else None
