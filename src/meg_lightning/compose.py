"""The configuration of a run, composed from the schema and the registries.

:func:`load_config` is :func:`meg_lightning.config.compose` with the config groups that come
from registered classes (``channel.<kind>.*`` from :data:`meg_lightning.channels.CHANNELS`,
``codec.<arch>.*`` from :data:`meg_lightning.codecs.ARCHS`) and the checks of every name a
config gives a registry (``eval.schemes``, ``eval.channels``, ...). It sits above the registries,
so the bottom layer (``config``) never imports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

from meg_lightning.channels import CHANNELS
from meg_lightning.codecs import ARCHS
from meg_lightning.config import MegConfig, compose
from meg_lightning.errors import ConfigError
from meg_lightning.schemes import names as scheme_names
from meg_lightning.schemes import scheme_class

GROUPS = {"channel": ("kind", CHANNELS), "codec": ("arch", ARCHS)}


def check_names(cfg: MegConfig) -> None:
    """Every scheme and channel kind the sweep names is registered (one line otherwise)."""
    ev, known = cfg.eval, scheme_names()
    kinds = CHANNELS.names()
    for s in ev.schemes:
        if s not in known:
            raise ConfigError("eval.schemes", list(ev.schemes), f"a list from {', '.join(known)}")
    for c in ev.channels:
        if c not in kinds:
            raise ConfigError("eval.channels", list(ev.channels), f"a list from {', '.join(kinds)}")
    for key, table in (("scheme_fcs", ev.scheme_fcs), ("scheme_channels", ev.scheme_channels)):
        for name in table:
            if name not in known:
                raise ConfigError(f"eval.{key}", name, f"scheme names from {', '.join(known)} "
                                  "as keys")
    for name, fcs in ev.scheme_fcs.items():
        if not scheme_class(name).uses_fc:
            rated = ", ".join(n for n in known if scheme_class(n).uses_fc and "+" not in n)
            raise ConfigError(f"eval.scheme_fcs.{name}", fcs, f"no entry: {name} has no "
                              f"compression rate (schemes with one: {rated}, and their X+dm)")
    for name, chosen in ev.scheme_channels.items():
        chosen = list(chosen) if isinstance(chosen, (list, tuple)) else [chosen]
        if any(c not in kinds for c in chosen):
            raise ConfigError(f"eval.scheme_channels.{name}", chosen,
                              f"a non-empty list from {', '.join(kinds)}")


def check_power_channel(cfg: MegConfig) -> None:
    """``ppo.channel`` is a registered channel model with fading (power control needs gains)."""
    kind = cfg.ppo.channel
    fading = [k for k, cls in CHANNELS.items() if cls.fading]
    if kind not in fading:
        raise ConfigError("ppo.channel", kind, f"a fading channel model: one of {', '.join(fading)}")


def load_config(overrides: Sequence[str] = (), *, defaults: Sequence[Path] = (),
                sections: Optional[Mapping[str, type]] = None) -> MegConfig:
    """Compose the config of a run: the schema with every registered group (and a command's own
    ``sections``), the preset, a command's ``defaults`` (YAML files), then the ``key=value``
    overrides; everything checked."""
    return compose(overrides, groups=GROUPS, defaults=defaults, sections=sections,
                   checks=(check_names, check_power_channel))
