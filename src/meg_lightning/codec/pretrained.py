"""Codecs shipped pretrained in the package (as CompressAI's ``pretrained=True``).

::

    src/meg_lightning/codec/weights/<model>/fc<fc>/
        codec.safetensors   the CodecModule's state dict
        codec.json          {"hyper_parameters": CodecModule(**hp), "recipe": the command line,
                             "data": what it was trained on, "train_seconds", "metrics"}

`meg eval` / `meg demo` use them for the ``meg-adaptive`` schemes when ``out_dir`` holds no
adaptive codec of that rate (or always, with ``eval.pretrained=true``). ``make pretrained-codecs``
reproduces them (:data:`RECIPE`): the latents of 4 noise seeds of each of `mini`'s 810 training
captions, the SNR-adaptive codec trained on them with the recipe below, exported with
:func:`export`. The acceptance table (docs/CODECS.md) is measured on 4 seeds of the 90 held-out
captions, which neither the mini model nor the codecs saw.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional, Sequence

from meg_lightning.errors import ConfigError, UserError

WEIGHTS = Path(__file__).resolve().parent / "weights"
#: the rates shipped per model
SHIPPED_FCS = (0.25, 0.5, 0.75)
#: data of the shipped mini codecs: prompt files written by :func:`write_prompt_files`
SEEDS_PER_CAPTION = 4
TRAIN_SEED, HELDOUT_SEED = 1, 2  # base seeds of the two caches (the demo's latents use 0)
PROMPT_ORDER_SEED = 11


def folder(model: str, fc: float, root: Path = WEIGHTS) -> Path:
    return root / model / f"fc{float(fc):g}"


def available(model: str) -> list[float]:
    """The rates with a shipped codec for ``model`` (ascending; [] for none)."""
    base = WEIGHTS / model
    if not base.is_dir():
        return []
    fcs = [float(p.name[2:]) for p in base.glob("fc*") if (p / "codec.safetensors").is_file()]
    return sorted(fcs)


def has_pretrained(model: str, fc: float) -> bool:
    return any(math.isclose(fc, f) for f in available(model))


def read_card(model: str, fc: float) -> dict[str, Any]:
    return json.loads((folder(model, fc) / "codec.json").read_text())


def load_pretrained(model: str, fc: float, latent_shape: Optional[Sequence[int]] = None,
                    map_location: Any = "cpu"):
    """The shipped :class:`~meg_lightning.codec.module.CodecModule` of ``model`` at rate ``fc``
    in eval mode; :class:`UserError` (saying which exist) when there is none."""
    from safetensors.torch import load_file

    from meg_lightning.codec.module import CodecModule

    if not has_pretrained(model, fc):
        have = ", ".join(f"{f:g}" for f in available(model)) or "none"
        raise UserError(f"no pretrained codec for model={model} at fc={fc:g} (shipped for this "
                        f"model: {have}): train one with `make train-codec-adaptive FC={fc:g}` "
                        "or name it in eval.adaptive_checkpoints")
    card = read_card(model, fc)
    hp = dict(card["hyper_parameters"])
    if latent_shape is not None and tuple(int(s) for s in latent_shape) != tuple(hp["latent_shape"]):
        raise ConfigError("latent_shape", tuple(latent_shape),
                          f"{tuple(hp['latent_shape'])}, the latent shape of the pretrained "
                          f"{model} codec")
    module = CodecModule(**hp)
    module.load_state_dict(load_file(str(folder(model, fc) / "codec.safetensors")))
    return module.to(map_location).eval()


def export(checkpoint: str | Path, model: str, *, recipe: str = "", data: Optional[dict] = None,
           train_seconds: Optional[float] = None, metrics: Optional[dict] = None,
           root: Path = WEIGHTS) -> Path:
    """Write a `meg train-codec` checkpoint as a shipped codec under ``root/<model>/fc<fc>``
    (state dict as safetensors, hyper-parameters and provenance as JSON, both atomically)."""
    import torch
    from safetensors.torch import save_file

    from meg_lightning.codec.module import CodecModule, read_checkpoint
    from meg_lightning.io import atomic_write_text

    ckpt = read_checkpoint(Path(checkpoint))
    hp = dict(ckpt["hyper_parameters"])
    out = folder(model, hp["fc"], root)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in ckpt["state_dict"].items()}
    tmp = out / "codec.safetensors.tmp"
    save_file(state, str(tmp))
    tmp.replace(out / "codec.safetensors")
    with torch.device("meta"):  # trainable parameters only (not buffers such as a KLT basis)
        n_params = sum(p.numel() for p in CodecModule(**hp).parameters())
    card = {"hyper_parameters": hp, "recipe": recipe, "data": data or {},
            "train_seconds": train_seconds, "metrics": metrics or {}, "parameters": int(n_params)}
    atomic_write_text(out / "codec.json", json.dumps(card, indent=1, default=str) + "\n")
    return out


def recipe_prompts(split: str, seeds: int = SEEDS_PER_CAPTION) -> list[str]:
    """`mini`'s captions of ``split`` (train: the 810 the model trained on; heldout: the 90 it
    never saw), each ``seeds`` times, every repetition in its own shuffled order. Each line of the
    cache gets its own noise seed, so a caption appears with ``seeds`` different latents."""
    import numpy as np

    from meg_lightning.mini.dataset import combinations

    captions = [a.caption for a in combinations(split)]
    rng = np.random.default_rng(PROMPT_ORDER_SEED + (split == "heldout"))
    return [captions[i] for _ in range(seeds) for i in rng.permutation(len(captions))]


def write_prompt_files(out: Path) -> list[Path]:
    """``prompts-train.txt`` and ``prompts-heldout.txt`` of :func:`recipe_prompts` in ``out``."""
    from meg_lightning.io import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for split in ("train", "heldout"):
        path = out / f"prompts-{split}.txt"
        atomic_write_text(path, "\n".join(recipe_prompts(split)) + "\n")
        paths.append(path)
    return paths


# -- the recipe that makes the shipped codecs (``make pretrained-codecs``) ------------------------
#: default folder of the recipe's prompt files, latent caches and training runs
RECIPE_DIR = Path("data/codec-mini")
#: `meg train-codec` settings of the adaptive recipe (the Makefile's ADAPTIVE_ARGS are the same:
#: tests/test_pretrained.py checks it). One model per rate serves AWGN and Rayleigh block fading
#: (4 blocks, half the samples at h = 1) over -12..26 dB; each sample's MSE is taken relative to
#: the optimal linear code's at its blocks' effective SNRs (CodecModule.sample_reference), so that
#: every SNR and fade counts alike; cosine LR over 300 epochs with the gradient norm clipped at 1
#: (without it fc 0.75 diverged at epoch ~90 and never recovered); the best and early-stopping
#: checkpoint by the mean over the validation SNRs of that ratio.
RECIPE = ["codec.arch=adaptive", "codec.loss=linear_ratio", "codec.val_loss=linear_ratio",
          "codec.lr=1e-3", "codec.schedule=cosine", "codec.val_snrs_db=[-10,0,10,20]",
          "codec.early_stop_patience=150", "channel.kind=rayleigh", "channel.num_blocks=4",
          "channel.train_snr_db=[-12,26]", "codec.awgn_fraction=0.5", "data.batch_size=64",
          "trainer.max_epochs=300", "trainer.gradient_clip_val=1.0"]


def recipe_width(fc: float) -> int:
    """``codec.width`` of the recipe at rate ``fc``: 64 up to fc 0.5, 128 above.

    fc 0.75 is capacity-limited at 0 dB: width 128 brings it from +1.90 to +1.42 dB over the OPTA
    bound on held-out captions and is better in every cell (docs/CODECS.md, sessions 10-12). fc
    0.25 and 0.5 stay at width 64 (fc 0.5 at 0 dB, +1.01 dB, is the one cell on the line there;
    width 128 at fc 0.5 is not measured yet). The Makefile's ``train-codec-adaptive`` uses the
    same rule."""
    return 64 if float(fc) <= 0.5 + 1e-9 else 128


def data_overrides(out: Path, split: str) -> list[str]:
    """`meg` settings of the recipe's latent cache of ``split`` (train | heldout) under ``out``."""
    seed = TRAIN_SEED if split == "train" else HELDOUT_SEED
    return ["model=mini", f"seed={seed}", f"data.prompts={out}/prompts-{split}.txt",
            f"data.num_prompts={len(recipe_prompts(split))}",
            f"data.cache_dir={out}/latents-{split}", "data.gen_batch_size=64",
            "data.val_fraction=0.1", "data.test_fraction=0.05", f"out_dir={out}/runs"]


def reproduce(out: Path = RECIPE_DIR, fcs: Sequence[float] = SHIPPED_FCS,
              extra: Sequence[str] = (), export_to: Optional[Path] = None) -> dict[float, Path]:
    """The shipped codecs from scratch (each stage resumes): the prompt files, the two latent
    caches, ``meg train-codec`` with :data:`RECIPE` and :func:`recipe_width` per rate
    (``extra``: more ``key=value`` settings, e.g. a smaller ``trainer.max_epochs``, after the
    width, so they can change it), then :func:`export` to ``export_to`` (None: not exported).
    Returns fc -> the best checkpoint."""
    import time

    from meg_lightning.codec import train as codec_train
    from meg_lightning.config import data_id, load_config
    from meg_lightning.data import cache

    out = Path(out)
    cfgs = {split: load_config(data_overrides(out, split) + list(extra))
            for split in ("train", "heldout")}
    recipes = {fc: data_overrides(out, "train") + RECIPE + [f"codec.width={recipe_width(fc)}"]
               + list(extra) + [f"codec.fc={fc:g}"] for fc in fcs}
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


def main(argv: Optional[list[str]] = None) -> None:
    """``python -m meg_lightning.codec.pretrained [out=DIR] [fcs=0.25,0.5,0.75] [export=1]
    [key=value ...]``: :func:`reproduce`; ``export=1`` writes into the package's weights."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    own = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv
           if a.split("=", 1)[0] in ("out", "fcs", "export")}
    extra = [a for a in argv if a.split("=", 1)[0] not in own]
    fcs = [float(f) for f in own.get("fcs", ",".join(f"{f:g}" for f in SHIPPED_FCS)).split(",")]
    best = reproduce(Path(own.get("out", RECIPE_DIR)), fcs, extra,
                     export_to=WEIGHTS if own.get("export", "0") == "1" else None)
    for fc, path in best.items():
        print(f"fc={fc:g}: {path}")


def cli(argv: Optional[list[str]] = None) -> int:
    """:func:`main` with the CLI's exit codes: 130 on an interrupt (rerun to resume), one line
    and 2 for the user's errors (``--debug`` / ``MEG_DEBUG=1`` for the traceback)."""
    import sys

    from meg_lightning.cli import _debug, _report
    from meg_lightning.runtime import interruptible

    argv, debug = _debug(list(sys.argv[1:] if argv is None else argv))
    try:
        with interruptible():
            main(argv)
    except KeyboardInterrupt:
        print("pretrained-codecs: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one line, as the meg CLI
        return _report("pretrained-codecs", e, debug)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(cli())
