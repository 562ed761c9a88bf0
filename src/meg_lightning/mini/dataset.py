"""Procedural captioned shapes: the training data of the ``mini`` text-to-image model (v2).

Every image is one flat-coloured shape on a striped background of a named colour, 64x64 RGB,
drawn in code (no download) and captioned from its attributes::

    "a small red triangle on a blue background, top left"
       size  color shape       background       position

Attribute vocabulary (deliberately small, so that a model trained on a 2-core CPU can learn it):
3 shapes x 6 colors x 5 backgrounds (any color but the shape's) x 2 sizes x 5 positions = 900
combinations.

**What the caption fixes and what it leaves to chance.** As in Stable Diffusion, the caption fixes
*what* is drawn and the noise seed decides much of *how* (v1 jittered the shape by a few pixels
only, so two seeds of one prompt gave nearly the same image). Per image, drawn from the seed:

- the exact centre, uniform over a 12x12 px square around the named corner (+-6 px; the centre
  region is +-2 px, so regions stay 4 px apart and the position name is never ambiguous);
- the extent within its size class (small 20-25 px, large 28-34 px);
- the rotation (squares any angle in [0, 90), triangles any angle in [0, 360));
- a background of soft stripes: orientation in [0, 180) degrees, period 24-48 px, phase, and
  depth 0.3-0.45 (the background colour mixed towards black for light colours, white for dark);
- both colours jittered by +-10 per channel.

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
SIZES = {"small": (20, 25), "large": (28, 34)}  # name -> extent range in pixels (diameter, side)
# (below ~20 px, 2.5 latent cells, the x8 VAE rounds small squares into circles)
POSITIONS = {  # name -> (x, y) of the region's centre in pixels, +- jitter on each coordinate
    "top left": (20, 20, 6),
    "top right": (44, 20, 6),
    "bottom left": (20, 44, 6),
    "bottom right": (44, 44, 6),
    "center": (32, 32, 2),
}
ROTATION = {"circle": 0.0, "square": 90.0, "triangle": 360.0}  # rotation drawn in [0, this) deg
STRIPE_PERIOD = (24.0, 48.0)  # background stripe period range, pixels (>= 3 latent cells)
STRIPE_DEPTH = (0.3, 0.45)  # how far the stripes mix the background towards black / white
COLOR_JITTER = 10  # +- per RGB channel, shape and background independently

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


def _shape_mask(shape: str, cx: float, cy: float, extent: float, angle: float = 0.0
                ) -> np.ndarray:
    """Coverage in [0, 1] of each pixel by the shape, (H, W), from a SUPERSAMPLE-x finer grid.

    ``angle`` (degrees) rotates the shape about its centre (cx, cy), the centroid of its area.
    """
    n = IMAGE_SIZE * SUPERSAMPLE
    # sub-pixel sample centres, in pixel units
    c = (np.arange(n) + 0.5) / SUPERSAMPLE
    gx, gy = np.meshgrid(c, c)  # (n, n) each; y grows downwards as in image rows
    # rotate the sample grid by -angle about the centre: the shape turns by +angle
    a = np.deg2rad(angle)
    x = cx + np.cos(a) * (gx - cx) + np.sin(a) * (gy - cy)
    y = cy - np.sin(a) * (gx - cx) + np.cos(a) * (gy - cy)
    h = extent / 2
    if shape == "circle":
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= h * h
    elif shape == "square":
        inside = (np.abs(x - cx) <= h) & (np.abs(y - cy) <= h)
    elif shape == "triangle":
        # apex up (before rotation), base = height = extent, centred on its centroid (a third of
        # the height above the base), so that "position" means the same for every rotation
        top, bottom = cy - 2 * extent / 3, cy + extent / 3
        half_width = h * (y - top) / extent  # grows linearly from 0 at the apex to h at the base
        inside = (y >= top) & (y <= bottom) & (np.abs(x - cx) <= half_width)
    else:
        raise ValueError(f"shape={shape!r}: expected one of {', '.join(SHAPES)}")
    # (n, n) -> (H, SUPERSAMPLE, W, SUPERSAMPLE) -> (H, W): fraction of covered sub-pixels
    return inside.reshape(IMAGE_SIZE, SUPERSAMPLE, IMAGE_SIZE, SUPERSAMPLE).mean(axis=(1, 3))


def _stripes(bg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The background (H, W, 3) float: colour ``bg`` with soft stripes of random orientation,
    period, phase and depth, mixed towards black (light colours) or white (dark colours)."""
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(*STRIPE_PERIOD)
    phase = rng.uniform(0, 2 * np.pi)
    depth = rng.uniform(*STRIPE_DEPTH)
    c = np.arange(IMAGE_SIZE) + 0.5
    x, y = np.meshgrid(c, c)  # (H, W)
    # tanh(3 sin): nearly square stripes with soft edges (~period/6 px wide), which a x8 VAE keeps
    wave = 0.5 + 0.5 * np.tanh(3 * np.sin(2 * np.pi * (x * np.cos(theta) + y * np.sin(theta))
                                          / period + phase))
    towards = 0.0 if bg @ np.array([0.299, 0.587, 0.114]) > 127.5 else 255.0  # luma
    m = (depth * wave)[..., None]  # (H, W, 1)
    return (1 - m) * bg + m * towards


def render(attrs: Attributes, rng: np.random.Generator) -> np.ndarray:
    """One image (H, W, 3) uint8 of ``attrs`` with everything the caption leaves open drawn
    from ``rng`` (module docstring)."""
    x0, y0, jitter = POSITIONS[attrs.position]
    cx = x0 + rng.uniform(-jitter, jitter)
    cy = y0 + rng.uniform(-jitter, jitter)
    extent = rng.uniform(*SIZES[attrs.size])
    angle = rng.uniform(0, ROTATION[attrs.shape]) if ROTATION[attrs.shape] else 0.0
    fg = _jitter_color(COLORS[attrs.color], rng)
    bg = _stripes(_jitter_color(COLORS[attrs.background], rng).astype(float), rng)
    mask = _shape_mask(attrs.shape, cx, cy, extent, angle)[..., None]  # (H, W, 1)
    return np.round(mask * fg + (1 - mask) * bg).astype(np.uint8)


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
