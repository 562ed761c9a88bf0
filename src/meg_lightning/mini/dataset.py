"""Procedural captioned shapes: the training data of the ``mini`` text-to-image model.

Every image is one flat-coloured shape on a flat-coloured background, 64x64 RGB, drawn in code
(no download) and captioned from its attributes::

    "a small red triangle on a blue background, top left"
       size  color shape       background       position

Attribute vocabulary (deliberately small, so that a model trained on a 2-core CPU can learn it):
3 shapes x 6 colors x 5 backgrounds (any color but the shape's) x 2 sizes x 5 positions = 900
combinations. Within a combination, centre (+-3 px), extent (+-2 px) and both colors (+-10 per
channel) are jittered, so a combination is a small distribution of images, not one picture.

Held-out set: a combination with value indices (shape, color, background, size, position) is held
out for evaluation iff their sum is 1 modulo 10 (:func:`is_heldout`): 90 combinations (10%) that
never appear in training. The rule is a "diagonal" through the attribute grid, so every pair of
attribute values of a held-out prompt still occurs in training: the model must compose known
parts, not invent unseen ones.

Everything is deterministic: sample i of a split drawn with seed s depends only on (s, split, i).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

PROMPT_FILE = Path(__file__).resolve().parent / "prompts.txt"  # the `mini` preset's data.prompts
IMAGE_SIZE = 64  # pixels per side
SUPERSAMPLE = 4  # shapes are drawn on a 4x finer grid and averaged down (anti-aliased edges)

SHAPES = ("circle", "square", "triangle")
COLORS = {  # name -> RGB; far apart so the names stay unambiguous after jitter and decoding
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 215, 40),
    "white": (240, 240, 240),
    "black": (20, 20, 20),
}
SIZES = {"small": 22, "large": 32}  # name -> extent in pixels (circle diameter, square side, ...)
# (below ~20 px, 2.5 latent cells, the x8 VAE rounds small squares into circles)
POSITIONS = {  # name -> (x, y) of the shape's centre in pixels
    "top left": (20, 20),
    "top right": (44, 20),
    "bottom left": (20, 44),
    "bottom right": (44, 44),
    "center": (32, 32),
}
CENTER_JITTER = 3  # +- pixels on each coordinate of the centre
SIZE_JITTER = 2  # +- pixels on the extent
COLOR_JITTER = 10  # +- per RGB channel, shape and background independently
LIGHT_DEPTH = (0.8, 1.0)
CONTRAST_KEEP = 0.8  # depth factor where the light brings the background towards the shape
LIGHT_RADIUS = (1.2, 1.2)  # distance (image half-widths) at which a bright spot / a light is gone

ATTRIBUTES = ("shape", "color", "background", "size", "position")  # label order everywhere
VOCABULARY: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "color": tuple(COLORS),
    "background": tuple(COLORS),
    "size": tuple(SIZES),
    "position": tuple(POSITIONS),
}
HELDOUT_MODULUS, HELDOUT_RESIDUE = 10, 1  # held out iff sum of value indices % 10 == 1
SPLITS = ("train", "heldout", "all")  # "all": both (the classifier is a judge: it sees everything)


@dataclass(frozen=True)
class Attributes:
    """The five attributes of one image; ``caption`` and :func:`parse_caption` are inverses."""

    shape: str  # one of SHAPES
    color: str  # the shape's color, a key of COLORS
    background: str  # the background color, a key of COLORS other than ``color``
    size: str  # a key of SIZES
    position: str  # a key of POSITIONS

    def __post_init__(self) -> None:
        for name, value in zip(ATTRIBUTES, astuple(self)):
            if value not in VOCABULARY[name]:
                raise ValueError(f"{name}={value!r}: expected one of {', '.join(VOCABULARY[name])}")
        if self.color == self.background:
            raise ValueError(f"color={self.color!r} equals background: a shape must differ from "
                             "its background")

    @property
    def caption(self) -> str:
        return (f"a {self.size} {self.color} {self.shape} on a {self.background} background, "
                f"{self.position}")

    @property
    def indices(self) -> tuple[int, ...]:
        """Value index of each attribute, in ATTRIBUTES order (the classifier's labels)."""
        return tuple(VOCABULARY[name].index(v) for name, v in zip(ATTRIBUTES, astuple(self)))

    @classmethod
    def from_indices(cls, indices: Sequence[int]) -> "Attributes":
        return cls(*(VOCABULARY[name][int(i)] for name, i in zip(ATTRIBUTES, indices)))


def parse_caption(caption: str) -> Attributes:
    """The attributes a caption names (inverse of ``Attributes.caption``; case and spacing free)."""
    words = caption.lower().replace(",", " , ").split()
    expected = "'a <size> <color> <shape> on a <color> background, <position>'"
    try:
        if words[0] != "a" or words[4:6] != ["on", "a"] or words[7:9] != ["background", ","]:
            raise ValueError
        return Attributes(shape=words[3], color=words[2], background=words[6], size=words[1],
                          position=" ".join(words[9:]))
    except (ValueError, IndexError):
        raise ValueError(f"caption {caption!r} does not follow {expected}") from None


def is_heldout(attrs: Attributes) -> bool:
    """Whether ``attrs`` belongs to the evaluation-only combinations (module docstring)."""
    return sum(attrs.indices) % HELDOUT_MODULUS == HELDOUT_RESIDUE


def all_combinations() -> list[Attributes]:
    """The 900 valid combinations in a fixed order (shape slowest, position fastest)."""
    out = []
    for shape in SHAPES:
        for color in COLORS:
            for background in COLORS:
                if background == color:
                    continue
                for size in SIZES:
                    for position in POSITIONS:
                        out.append(Attributes(shape, color, background, size, position))
    return out


def combinations(split: str) -> list[Attributes]:
    """The combinations of ``split`` (train | heldout | all), in the order of all_combinations."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    if split == "all":
        return all_combinations()
    return [a for a in all_combinations() if is_heldout(a) == (split == "heldout")]


def heldout_prompts() -> list[str]:
    """The 90 evaluation prompts; none of them is ever a training caption."""
    return [a.caption for a in combinations("heldout")]


def prompt_file_lines() -> list[str]:
    """All 900 captions in a fixed shuffled order (the content of ``prompts.txt``).

    Shuffled so that the first N prompts of the latent cache (``data.num_prompts``) cover every
    attribute rather than N variations of "a small red circle".
    """
    captions = [a.caption for a in all_combinations()]
    order = np.random.default_rng(0).permutation(len(captions))
    return [captions[i] for i in order]


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    digest = hashlib.sha256(f"meg-mini:{seed}:{split}:{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _jitter_color(rgb: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    return np.clip(np.asarray(rgb) + rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, 3), 0, 255)


def _shape_mask(shape: str, cx: float, cy: float, extent: float) -> np.ndarray:
    """Coverage in [0, 1] of each pixel by the shape, (H, W), from a SUPERSAMPLE-x finer grid."""
    n = IMAGE_SIZE * SUPERSAMPLE
    # sub-pixel sample centres, in pixel units
    c = (np.arange(n) + 0.5) / SUPERSAMPLE
    x, y = np.meshgrid(c, c)  # (n, n) each; y grows downwards as in image rows
    h = extent / 2
    if shape == "circle":
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= h * h
    elif shape == "square":
        inside = (np.abs(x - cx) <= h) & (np.abs(y - cy) <= h)
    elif shape == "triangle":
        # apex up, base = height = extent, centred on its bounding box
        top, bottom = cy - h, cy + h
        half_width = h * (y - top) / extent  # grows linearly from 0 at the apex to h at the base
        inside = (y >= top) & (y <= bottom) & (np.abs(x - cx) <= half_width)
    else:
        raise ValueError(f"shape={shape!r}: expected one of {', '.join(SHAPES)}")
    # (n, n) -> (H, SUPERSAMPLE, W, SUPERSAMPLE) -> (H, W): fraction of covered sub-pixels
    return inside.reshape(IMAGE_SIZE, SUPERSAMPLE, IMAGE_SIZE, SUPERSAMPLE).mean(axis=(1, 3))


def render(attrs: Attributes, rng: np.random.Generator) -> np.ndarray:
    """One image (H, W, 3) uint8 of ``attrs`` with jitter drawn from ``rng``."""
    x0, y0 = POSITIONS[attrs.position]
    cx = x0 + rng.uniform(-CENTER_JITTER, CENTER_JITTER)
    cy = y0 + rng.uniform(-CENTER_JITTER, CENTER_JITTER)
    extent = SIZES[attrs.size] + rng.uniform(-SIZE_JITTER, SIZE_JITTER)
    fg = _jitter_color(COLORS[attrs.color], rng)
    bg = _lit_background(_jitter_color(COLORS[attrs.background], rng), attrs, rng)  # (H, W, 3)
    mask = _shape_mask(attrs.shape, cx, cy, extent)[..., None]  # (H, W, 1)
    return np.round(mask * fg + (1 - mask) * bg).astype(np.uint8)


def _luma(rgb) -> float:
    r, g, b = (float(v) for v in rgb)
    return 0.299 * r + 0.587 * g + 0.114 * b


def _lit_background(bg: np.ndarray, attrs: Attributes, rng: np.random.Generator) -> np.ndarray:
    """The background colour ``bg`` (jittered ``attrs.background``) lit by a spot light at a random place: (H, W, 3) float.

    The light sits at a point drawn uniformly over the image; its weight falls linearly with
    the distance, w = max(1 - distance / LIGHT_RADIUS, 0) (image half-widths), and the depth is
    uniform in LIGHT_DEPTH. The light moves the background away from the shape's colour ``fg``,
    so the outline keeps its contrast (brightness of the nominal COLORS): behind a darker shape the background is blended towards
    white by w x depth (a bright spot), behind a brighter shape it is darkened by (1 - w) x depth
    (lit near the light, shaded far from it). A black background can only be lit and a white one
    only shaded, which brings them towards the shape: their depth is scaled by CONTRAST_KEEP.
    The shape itself stays flat. The caption never states the light: it is what the noise seed
    decides, as the layout and lighting of an SD-v1.5 image.
    """
    lx, ly = rng.uniform(-1, 1, 2)  # where the light is, in image coordinates [-1, 1]
    depth = rng.uniform(*LIGHT_DEPTH)
    c = (np.arange(IMAGE_SIZE) + 0.5) / IMAGE_SIZE * 2 - 1  # pixel centres in [-1, 1]
    x, y = np.meshgrid(c, c)
    bg = bg.astype(np.float64)
    black, white = attrs.background == "black", attrs.background == "white"
    lighten = black or (not white and
                        _luma(COLORS[attrs.color]) < _luma(COLORS[attrs.background]))
    radius = LIGHT_RADIUS[0] if lighten else LIGHT_RADIUS[1]
    w = np.maximum(1 - np.hypot(x - lx, y - ly) / radius, 0)[..., None]  # (H, W, 1)
    if black or white:
        depth *= CONTRAST_KEEP
    if lighten:
        return bg + w * depth * (255 - bg)
    return bg * (1 - (1 - w) * depth)


def sample(split: str, index: int, seed: int = 0) -> tuple[np.ndarray, Attributes]:
    """Sample ``index`` of ``split``: a uniformly drawn combination of the split, rendered."""
    combos = _combos(split)
    rng = _rng(seed, split, index)
    attrs = combos[int(rng.integers(len(combos)))]
    return render(attrs, rng), attrs


@functools.lru_cache(maxsize=None)
def _combos(split: str) -> tuple[Attributes, ...]:
    return tuple(combinations(split))


def make_images(split: str, num: int, seed: int = 0, start: int = 0
                ) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """Samples start..start+num-1: images (N, 3, 64, 64) uint8, captions, labels (N, 5) long."""
    images, captions, labels = [], [], []
    for i in range(start, start + num):
        img, attrs = sample(split, i, seed)
        images.append(torch.from_numpy(img).permute(2, 0, 1))  # (H, W, 3) -> (3, H, W)
        captions.append(attrs.caption)
        labels.append(attrs.indices)
    return torch.stack(images), captions, torch.tensor(labels, dtype=torch.long)


class ShapesDataset(Dataset):
    """``num_samples`` captioned images of ``split``, rendered on access (deterministic).

    Items are dicts: ``pixel_values`` (3, 64, 64) float in [-1, 1] (the VAE's input range),
    ``caption`` (str) and ``labels`` (5,) long, the attribute indices in ATTRIBUTES order.
    """

    def __init__(self, num_samples: int, split: str = "train", seed: int = 0):
        if num_samples <= 0:
            raise ValueError(f"num_samples={num_samples!r}: expected a positive integer")
        combinations(split)  # validates the split name
        self.num_samples, self.split, self.seed = num_samples, split, seed

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        img, attrs = sample(self.split, index, self.seed)
        pixels = torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1  # (3, H, W) in [-1, 1]
        return {"pixel_values": pixels, "caption": attrs.caption,
                "labels": torch.tensor(attrs.indices, dtype=torch.long)}
