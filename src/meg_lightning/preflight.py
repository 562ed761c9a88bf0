"""Checks a command runs before it writes anything (the CLI calls :func:`check` first).

What the config schema cannot check alone: ``trainer.*`` against ``lightning.Trainer`` (names,
types, sane ranges, an available accelerator), the folders a command writes (a folder, not a
file; writable; creatable), and the files it reads (a prompt file that is UTF-8 text, a results
CSV with the columns and types `meg eval` writes), and for `meg eval` that every per-scheme
setting names a swept scheme. Each failure is a :class:`ConfigError`: one line naming the key,
the value and what was expected.
"""

from __future__ import annotations

import os
from pathlib import Path

from meg_lightning.config import MegConfig
from meg_lightning.data.prompts import load_prompt_file, resolve_prompt_path
from meg_lightning.errors import ConfigError
from meg_lightning.evaluation.results import read_results
from meg_lightning.trainer import check_trainer


def check_dir(key: str, path: str | Path) -> None:
    """``path`` can hold a command's outputs: an existing writable folder, or one that can be
    created (its nearest existing parent is a writable folder)."""
    p = Path(path).expanduser()
    if p.exists() or p.is_symlink():
        if not p.is_dir():
            raise ConfigError(key, str(path), f"a folder ({str(p)!r} is a file)")
        if not os.access(p, os.W_OK | os.X_OK):
            raise ConfigError(key, str(path), f"a writable folder ({str(p)!r} is read-only)")
        return
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(key, str(path), f"a folder path ({str(parent)!r} is a file)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(key, str(path), f"a folder that can be created ({str(parent)!r} is "
                          "read-only)")


def check_prompt_file(cfg: MegConfig) -> None:
    """``data.prompts``: an existing UTF-8 text prompt file that parses (``package:`` paths
    resolve inside the installed package, as where it is read: data.prompts.load_prompt_file)."""
    path = cfg.data.prompts
    if path is None:
        return
    if resolve_prompt_path(path).is_dir():
        raise ConfigError("data.prompts", path, "a prompt file (it is a folder)")
    load_prompt_file(path, cfg.data.prompt_column)


def output_dirs(command: str, cfg: MegConfig) -> list[tuple[str, Path]]:
    """(key, folder) for every folder ``command`` writes into."""
    out = Path(cfg.out_dir)
    cache = ("data.cache_dir", Path(cfg.data.cache_dir))
    section = getattr(cfg, COMMANDS_SECTION.get(command, ""), None)
    return {
        "latents": [cache],
        "train-codec": [("out_dir", out), ("out_dir", out / "codec"),
                        ("out_dir", out / "codec" / f"fc{cfg.codec.fc:g}")],
        "train-ppo": [("out_dir", out), ("out_dir", out / "ppo")],
        "eval": [("out_dir", out), ("out_dir", out / "eval"),
                 ("out_dir", out / "eval" / "examples")],
        "eval-multiuser": [("out_dir", out), ("out_dir", out / "multiuser")],
        "train-alloc": [("out_dir", out), ("out_dir", out / "alloc")],
        "figures": [("out_dir", out), ("out_dir", out / "figures")],
        "demo": [("out_dir", out), cache],
        "train-mini": [("mini.out_dir", Path(section.out_dir))] if section else [],
        "rehearsal": [("rehearsal.out", Path(section.out))] if section else [],
        "pretrained-codecs": [("recipe.out", Path(section.out))] if section else [],
    }.get(command, [])


#: the commands with a settings section of their own (cli.COMMANDS)
COMMANDS_SECTION = {"train-mini": "mini", "rehearsal": "rehearsal", "pretrained-codecs": "recipe"}


def check_figures_inputs(cfg: MegConfig) -> None:
    """`meg figures`: the results file, when present, is one `meg eval` wrote."""
    results = Path(cfg.out_dir) / "eval" / cfg.eval.results
    if results.is_dir():
        raise ConfigError("eval.results", cfg.eval.results, f"a file ({str(results)!r} is a folder)")
    if results.is_file():
        read_results(results)
    elif not (Path(cfg.out_dir) / "ppo" / "fig10.csv").is_file():
        # nothing to draw: most likely a mistyped out_dir; do not create it
        raise ConfigError("out_dir", cfg.out_dir, f"a folder with saved results (eval/"
                          f"{cfg.eval.results} or ppo/fig10.csv): run `meg eval` there first")


def check_eval_tables(cfg: MegConfig) -> None:
    """`meg eval`: every scheme named in ``eval.scheme_fcs`` / ``eval.scheme_channels`` is swept
    (in ``eval.schemes``, by that exact name: ``meg+dm``'s entry is not ``meg``'s); an entry for
    a scheme the sweep leaves out would be ignored without a word."""
    swept = list(cfg.eval.schemes)
    for key in ("scheme_fcs", "scheme_channels"):
        for name, value in getattr(cfg.eval, key).items():
            if name not in swept:
                raise ConfigError(f"eval.{key}.{name}", value,
                                  f"an entry for a scheme in eval.schemes={swept} (add {name} "
                                  f"there or drop this entry)")


def check(command: str, cfg: MegConfig) -> MegConfig:
    """Every check of ``command`` that needs no model or data; returns the config it checked."""
    if cfg.trainer:
        check_trainer(dict(cfg.trainer))
    for key, folder in output_dirs(command, cfg):
        check_dir(key, folder)
    check_prompt_file(cfg)
    if command == "figures":
        check_figures_inputs(cfg)
    if command == "eval":
        check_eval_tables(cfg)
    if command == "train-alloc" and cfg.users.k < 2:
        raise ConfigError("users.k", cfg.users.k, "an integer >= 2 (the users sharing the frame)")
    return cfg
