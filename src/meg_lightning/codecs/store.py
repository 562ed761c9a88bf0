"""Where the trained codecs a run evaluates come from: a checkpoint named in the config, the run
that `meg train-codec` left in ``out_dir``, or the codec shipped for the model. The sweep, the
power-control env and the demo ask here (by the codec's folder, a scheme's ``learned``)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Optional

from meg_lightning.codecs import pretrained
from meg_lightning.codecs.module import CodecModule, load_codec, read_checkpoint, upgrade_hparams
from meg_lightning.codecs.train import configured_checkpoint, run_dir
from meg_lightning.config import MegConfig, data_id
from meg_lightning.errors import ConfigError, UserError

#: the trained-codec folders (a scheme's ``learned``): the eval key naming a checkpoint per rate,
#: and whether the codecs shipped for the model stand in when out_dir has none
LEARNED = {"codec": ("codec_checkpoints", False), "codec-adaptive": ("adaptive_checkpoints", True)}


def _named_entry(cfg: MegConfig, fc: float, key: str) -> Optional[tuple[str, Path]]:
    """(the key as the user wrote it, e.g. ``eval.codec_checkpoints["0.50"]``, the path) of
    ``eval.<key>[fc]`` (codec_checkpoints | adaptive_checkpoints), or None when it names none
    for that rate."""
    for rate, path in getattr(cfg.eval, key).items():
        try:
            if math.isclose(float(rate), fc):
                return f'eval.{key}["{rate}"]', Path(path)
        except ValueError:
            raise ConfigError(f"eval.{key}.{rate}", path,
                              "keys that are compression rates, e.g. "
                              f"'eval.{key}={{\"0.5\": <ckpt>}}'") from None
    return None


def named_source(cfg: MegConfig, learned: str, fc: float) -> Optional[tuple[str, Path]]:
    """(config key, path) of the checkpoint the config names for folder ``learned`` at rate
    ``fc``: ``eval.<key>[fc]``, else (for ``codec``) ``codec.checkpoint`` when ``codec.fc`` is
    that rate; None when it names none (the codec then comes from out_dir or the package)."""
    key, shipped = LEARNED[learned]
    entry = _named_entry(cfg, fc, key)
    if entry is None and not shipped:
        configured = configured_checkpoint(cfg, fc)
        if configured is not None:
            entry = "codec.checkpoint", configured
    return entry


def check_named(label: str, path: Path, fc: float,
                train: str = "meg train-codec codec.fc={fc}") -> None:
    """A checkpoint the user named (``label``: the key they set) exists and holds a codec of rate
    ``fc``: else one ConfigError naming that key, its path, what it holds and what the run needs
    (``train``: how to make one). Its latent shape is checked where it is loaded."""
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no such file"
        raise ConfigError(label, str(path), f"an existing codec checkpoint (.ckpt) of rate "
                          f"{fc:g} ({what})")
    hp = upgrade_hparams(dict(read_checkpoint(path).get("hyper_parameters") or {}))
    rate = (hp.get("codec") or {}).get("fc")
    if rate is not None and not math.isclose(float(rate), fc, abs_tol=1e-9):
        raise ConfigError(label, str(path), f"a codec of rate {fc:g}: this checkpoint is one "
                          f"of rate {float(rate):g} (name it under that rate, or train one with "
                          f"`{train.format(fc=f'{fc:g}')}`)")


def codec_source(cfg: MegConfig, learned: str, fc: float) -> tuple[Path, str]:
    """Which codec of folder ``learned`` evaluates rate ``fc``, and where it comes from
    (``named`` | ``out_dir`` | ``shipped``): ``eval.<key>[fc]``; else the run `meg train-codec`
    left in ``{out_dir}/<learned>/fc<fc>`` (``best.ckpt``, else ``last.ckpt``; for ``codec``
    also ``codec.checkpoint`` when ``codec.fc`` is that rate; not with ``eval.pretrained`` for
    the adaptive codecs); else the codec shipped for the model (:mod:`meg_lightning.codecs.
    pretrained`). A one-line UserError says how to get one when there is none."""
    key, shipped = LEARNED[learned]
    named = named_source(cfg, learned, fc)
    if named is not None:
        return named[1], "named"
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
    named = named_source(cfg, learned, fc) if origin == "named" else None
    label = named[0] if named else "out_dir"
    if named:
        check_named(label, path, fc, train="make train-codec-adaptive FC={fc}"
                    if LEARNED[learned][1] else "meg train-codec codec.fc={fc}")
    if origin == "shipped":
        codec = pretrained.load_pretrained(cfg.model, fc, latent_shape)
    else:
        codec = load_codec(path, latent_shape=latent_shape, fc=fc,
                           data_id=data_id(cfg) if origin == "out_dir" else None)
    if LEARNED[learned][1] and not codec.adaptive:
        raise ConfigError(label, str(path),
                          "a codec trained with codec.arch=adaptive (this one is "
                          f"arch={codec.codec_cfg.arch}; evaluate it as scheme meg)")
    return codec if device is None else codec.to(device)
