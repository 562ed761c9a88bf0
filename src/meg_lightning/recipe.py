"""``meg pretrained-codecs`` (``make pretrained-codecs``): the recipe that makes the codecs shipped
for ``mini`` (:mod:`meg_lightning.codecs.pretrained`).

The latents of 4 noise seeds of each of `mini`'s 810 training captions, the SNR-adaptive codec
trained on them with :data:`RECIPE` and :func:`recipe_width` per rate, exported with
:func:`~meg_lightning.codecs.pretrained.export` (``recipe.export=true``). The acceptance table
(docs/CODECS.md) is measured on 4 seeds of the 90 held-out captions, which neither the mini model
nor the codecs saw. Every stage resumes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from meg_lightning.codecs import train as codec_train
from meg_lightning.codecs.pretrained import SHIPPED_FCS, WEIGHTS, export
from meg_lightning.compose import load_config
from meg_lightning.config import MegConfig, data_id
from meg_lightning.data import cache
from meg_lightning.errors import ConfigError
from meg_lightning.io import atomic_write_text
from meg_lightning.mini.dataset import combinations

#: data of the shipped mini codecs: prompt files written by :func:`write_prompt_files`
SEEDS_PER_CAPTION = 4
TRAIN_SEED, HELDOUT_SEED = 1, 2  # base seeds of the two caches (the demo's latents use 0)
PROMPT_ORDER_SEED = 11
#: default folder of the recipe's prompt files, latent caches and training runs
RECIPE_DIR = Path("data/codec-mini")

#: `meg train-codec` settings of the adaptive recipe (the Makefile's ADAPTIVE_ARGS are the same:
#: tests/test_pretrained.py checks it). One model per rate serves AWGN and Rayleigh block fading
#: (4 blocks, half the samples at h = 1) over -12..26 dB; each sample's MSE is taken relative to
#: the optimal linear code's at its segments' effective SNRs (CodecModule.sample_reference), so
#: that every SNR and fade counts alike; cosine LR over 300 epochs with the gradient norm clipped
#: at 1 (without it fc 0.75 diverges); the best and early-stopping checkpoint by the mean over the
#: validation SNRs of that ratio.
RECIPE = ["codec.arch=adaptive", "codec.loss=linear_ratio", "codec.val_loss=linear_ratio",
          "codec.lr=1e-3", "codec.schedule=cosine", "codec.val_snrs_db=[-10,0,10,20]",
          "codec.early_stop_patience=150", "channel.kind=rayleigh", "channel.num_blocks=4",
          "channel.train_snr_db=[-12,26]", "codec.awgn_fraction=0.5", "data.batch_size=64",
          "trainer.max_epochs=300", "trainer.gradient_clip_val=1.0"]


@dataclass
class RecipeConfig:
    """``recipe.*``: where the recipe works, which rates it trains, and what it exports."""

    out: str = str(RECIPE_DIR)  # prompt files, latent caches and training runs (resumable)
    fcs: list[float] = field(default_factory=lambda: list(SHIPPED_FCS))  # the rates to train
    export: bool = False  # write the trained codecs into the package (replacing the shipped ones)
    extra: list[str] = field(default_factory=list)  # more key=value settings for every stage,
    # applied after the recipe's (e.g. ['trainer.max_epochs=5'] for a short rehearsal)

    def validate(self, p: str) -> None:
        if not self.fcs or not all(isinstance(f, (int, float)) and math.isfinite(f)
                                   and 0 < f <= 1 for f in self.fcs):
            raise ConfigError(f"{p}.fcs", list(self.fcs), "a non-empty list of numbers in (0, 1]")
        if not str(self.out).strip():
            raise ConfigError(f"{p}.out", self.out, "a folder path")
        for e in self.extra:
            if "=" not in str(e) or str(e).startswith("="):
                raise ConfigError(f"{p}.extra", list(self.extra), "a list of key=value settings")


def recipe_width(fc: float) -> int:
    """``codec.adaptive.width`` of the recipe at rate ``fc``: 64 up to fc 0.5, 128 above (fc 0.75
    is capacity-limited at 0 dB, where width 128 is better in every held-out cell; docs/CODECS.md).
    The Makefile's ``train-codec-adaptive`` uses the same rule."""
    return 64 if float(fc) <= 0.5 + 1e-9 else 128


def recipe_prompts(split: str, seeds: int = SEEDS_PER_CAPTION) -> list[str]:
    """`mini`'s captions of ``split`` (train: the 810 the model trained on; heldout: the 90 it
    never saw), each ``seeds`` times, every repetition in its own shuffled order. Each line of the
    cache gets its own noise seed, so a caption appears with ``seeds`` different latents."""
    captions = [a.caption for a in combinations(split)]
    rng = np.random.default_rng(PROMPT_ORDER_SEED + (split == "heldout"))
    return [captions[i] for _ in range(seeds) for i in rng.permutation(len(captions))]


def write_prompt_files(out: Path) -> list[Path]:
    """``prompts-train.txt`` and ``prompts-heldout.txt`` of :func:`recipe_prompts` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for split in ("train", "heldout"):
        path = out / f"prompts-{split}.txt"
        atomic_write_text(path, "\n".join(recipe_prompts(split)) + "\n")
        paths.append(path)
    return paths


def data_overrides(out: Path, split: str) -> list[str]:
    """`meg` settings of the recipe's latent cache of ``split`` (train | heldout) under ``out``."""
    seed = TRAIN_SEED if split == "train" else HELDOUT_SEED
    return ["model=mini", f"seed={seed}", f"data.prompts={out}/prompts-{split}.txt",
            f"data.num_prompts={len(recipe_prompts(split))}",
            f"data.cache_dir={out}/latents-{split}", "data.gen_batch_size=64",
            "data.val_fraction=0.1", "data.test_fraction=0.05", f"out_dir={out}/runs"]


def recipe_overrides(out: Path, fc: float, extra: Sequence[str] = ()) -> list[str]:
    """The `meg train-codec` command line of the codec at rate ``fc`` (``extra`` after the
    width, so it can change it)."""
    return (data_overrides(out, "train") + RECIPE + [f"codec.adaptive.width={recipe_width(fc)}"]
            + list(extra) + [f"codec.fc={fc:g}"])


def reproduce(out: Path = RECIPE_DIR, fcs: Sequence[float] = SHIPPED_FCS,
              extra: Sequence[str] = (), export_to: Optional[Path] = None) -> dict[float, Path]:
    """The shipped codecs from scratch (each stage resumes): the prompt files, the two latent
    caches, ``meg train-codec`` with :func:`recipe_overrides` per rate, then
    :func:`~meg_lightning.codecs.pretrained.export` to ``export_to`` (None: not exported).
    Returns fc -> the best checkpoint. Every stage's config is checked before the first write."""
    out = Path(out)
    cfgs = {split: load_config(data_overrides(out, split) + list(extra))
            for split in ("train", "heldout")}
    recipes = {fc: recipe_overrides(out, fc, extra) for fc in fcs}
    train_cfgs = {fc: load_config(r) for fc, r in recipes.items()}  # all checked first
    write_prompt_files(out)
    for split in ("train", "heldout"):
        cache.main(cfgs[split])
    best = {}
    for fc, cfg in train_cfgs.items():
        t0 = time.perf_counter()
        best[fc] = codec_train.main(cfg)  # the best checkpoint (last.ckpt if none monitored)
        seconds = time.perf_counter() - t0
        if export_to is not None:
            export(best[fc], "mini", root=export_to, recipe=" ".join(recipes[fc]),
                   data={"train": f"{len(recipe_prompts('train'))} latents: "
                                  f"{SEEDS_PER_CAPTION} seeds x the 810 training captions of "
                                  f"mini, base seed {TRAIN_SEED} (train split of that cache)",
                         "data_id": data_id(cfg)},
                   train_seconds=round(seconds, 1))
    return best


def main(cfg: MegConfig) -> dict[float, Path]:
    """``meg pretrained-codecs``: :func:`reproduce` with ``recipe.*``."""
    r = cfg.recipe
    best = reproduce(Path(r.out), [float(f) for f in r.fcs], list(r.extra),
                     export_to=WEIGHTS if r.export else None)
    for fc, path in best.items():
        print(f"meg pretrained-codecs: fc={fc:g}: {path}")
    return best
