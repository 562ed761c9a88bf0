"""Codecs shipped pretrained in the package (as CompressAI's ``pretrained=True``): loading them
by model and rate, and exporting a trained checkpoint as one.

::

    src/meg_lightning/codecs/weights/<model>/fc<fc>/
        codec.safetensors   the CodecModule's state dict
        codec.json          {"hyper_parameters": CodecModule(**hp), "recipe": the command line,
                             "data": what it was trained on, "train_seconds", "metrics"}

`meg eval` / `meg demo` use them for the schemes that evaluate the adaptive codecs when
``out_dir`` holds none of that rate (or always, with ``eval.pretrained=true``).
``meg pretrained-codecs`` (:mod:`meg_lightning.recipe`) reproduces them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from safetensors.torch import load_file, save_file

from meg_lightning.codecs.module import CodecModule, read_checkpoint, upgrade_hparams
from meg_lightning.errors import ConfigError, UserError
from meg_lightning.io import atomic_write_text

WEIGHTS = Path(__file__).resolve().parent / "weights"
#: the rates shipped per model
SHIPPED_FCS = (0.25, 0.5, 0.75)


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
    """The shipped :class:`~meg_lightning.codecs.module.CodecModule` of ``model`` at rate ``fc``
    in eval mode; :class:`UserError` (saying which exist) when there is none."""
    if not has_pretrained(model, fc):
        have = ", ".join(f"{f:g}" for f in available(model)) or "none"
        raise UserError(f"no pretrained codec for model={model} at fc={fc:g} (shipped for this "
                        f"model: {have}): train one with `make train-codec-adaptive FC={fc:g}` "
                        "or name it in eval.adaptive_checkpoints")
    card = read_card(model, fc)
    hp = upgrade_hparams(dict(card["hyper_parameters"]))
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
    ckpt = read_checkpoint(Path(checkpoint))
    hp = upgrade_hparams(dict(ckpt["hyper_parameters"]))
    out = folder(model, hp["codec"]["fc"], root)
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


