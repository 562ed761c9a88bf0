"""Where the trained codecs a run evaluates come from: a checkpoint named in the config, the run
that `meg train-codec` left in ``out_dir``, or the codec shipped for the model. The sweep, the
power-control env and the demo ask here (by the codec's folder, a scheme's ``learned``)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Optional

from meg_lightning.codecs import pretrained
from meg_lightning.codecs.module import CodecModule, load_codec
from meg_lightning.codecs.train import configured_checkpoint, run_dir
from meg_lightning.config import MegConfig, data_id
from meg_lightning.errors import ConfigError, UserError

#: the trained-codec folders (a scheme's ``learned``): the eval key naming a checkpoint per rate,
#: and whether the codecs shipped for the model stand in when out_dir has none
LEARNED = {"codec": ("codec_checkpoints", False), "codec-adaptive": ("adaptive_checkpoints", True)}


def _named_checkpoint(cfg: MegConfig, fc: float, key: str) -> Optional[Path]:
    """``eval.<key>[fc]`` (codec_checkpoints | adaptive_checkpoints), or None when it names none
    for that rate."""
    for rate, path in getattr(cfg.eval, key).items():
        try:
            if math.isclose(float(rate), fc):
                return Path(path)
        except ValueError:
            raise ConfigError(f"eval.{key}.{rate}", path,
                              "keys that are compression rates, e.g. "
                              f"'eval.{key}={{\"0.5\": <ckpt>}}'") from None
    return None


def codec_source(cfg: MegConfig, learned: str, fc: float) -> tuple[Path, str]:
    """Which codec of folder ``learned`` evaluates rate ``fc``, and where it comes from
    (``named`` | ``out_dir`` | ``shipped``): ``eval.<key>[fc]``; else the run `meg train-codec`
    left in ``{out_dir}/<learned>/fc<fc>`` (``best.ckpt``, else ``last.ckpt``; for ``codec``
    also ``codec.checkpoint`` when ``codec.fc`` is that rate; not with ``eval.pretrained`` for
    the adaptive codecs); else the codec shipped for the model (:mod:`meg_lightning.codecs.
    pretrained`). A one-line UserError says how to get one when there is none."""
    key, shipped = LEARNED[learned]
    named = _named_checkpoint(cfg, fc, key)
    if named is not None:
        return named, "named"
    if not shipped:
        configured = configured_checkpoint(cfg, fc)
        if configured is not None:
            return configured, "named"
    arch = "adaptive" if learned == "codec-adaptive" else cfg.codec.arch
    folder = run_dir(dataclasses.replace(cfg, codec=dataclasses.replace(cfg.codec, fc=fc,
                                                                        arch=arch)))
    if not (shipped and cfg.eval.pretrained):
        for name in ("best.ckpt", "last.ckpt"):
            if (folder / name).is_file():
                return folder / name, "out_dir"
    if shipped and pretrained.has_pretrained(cfg.model, fc):
        return pretrained.folder(cfg.model, fc) / "codec.safetensors", "shipped"
    train = (f"`make train-codec-adaptive FC={fc:g}`" if shipped
             else f"`meg train-codec codec.fc={fc:g}`")
    have = ""
    if shipped:
        rates = ", ".join(f"{f:g}" for f in pretrained.available(cfg.model)) or "none"
        have = f" and none ships for model={cfg.model} (shipped rates: {rates})"
    where = "" if shipped and cfg.eval.pretrained else f"{str(folder)!r} holds no checkpoint"
    raise UserError(f"no trained codec for fc={fc:g}: {where}{have}; run {train} first or set "
                    f"'eval.{key}={{\"{fc:g}\": <.ckpt>}}'")


def load_learned_codec(cfg: MegConfig, learned: str, fc: float, latent_shape,
                       device=None) -> CodecModule:
    """The codec of :func:`codec_source`, in eval mode on ``device``: a shipped one as it is (its
    card records its data); one in ``out_dir`` must have been trained on this run's latents; a
    named one must be of rate ``fc`` (and, for ``codec-adaptive``, an adaptive codec)."""
    path, origin = codec_source(cfg, learned, fc)
    key = LEARNED[learned][0]
    if origin == "shipped":
        codec = pretrained.load_pretrained(cfg.model, fc, latent_shape)
    else:
        try:
            codec = load_codec(path, latent_shape=latent_shape, fc=fc,
                               data_id=data_id(cfg) if origin == "out_dir" else None)
        except ConfigError as e:
            if origin != "named" or e.key != "codec.fc":
                raise
            raise ConfigError(f"eval.{key}.{fc:g}", str(path),
                              f"a codec of rate {fc:g} (this checkpoint is for fc={e.expected.split(',')[0]})"
                              ) from None
    if LEARNED[learned][1] and not codec.adaptive:
        raise ConfigError(f"eval.{key}.{fc:g}", str(path),
                          "a codec trained with codec.arch=adaptive (this one is "
                          f"arch={codec.codec_cfg.arch}; evaluate it as scheme meg)")
    return codec if device is None else codec.to(device)
