"""Checks a command runs before it writes anything (the CLI calls :func:`check` first).

What the config schema cannot check alone: ``trainer.*`` against ``lightning.Trainer`` (names,
types, sane ranges, an available accelerator), the folders a command writes (a folder, not a
file; writable; creatable), and the files it reads (a prompt file that is UTF-8 text, a results
CSV with the columns and types `meg eval` writes). Each failure is a :class:`ConfigError`: one
line naming the key, the value and what was expected.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from meg_lightning.config import MegConfig
from meg_lightning.errors import ConfigError

#: Trainer arguments the commands set themselves (a value from the command line would be a string)
OWNED_TRAINER_KEYS = {"logger": "logger=<wandb|csv|tensorboard|none>",
                      "callbacks": "a Python caller (not settable from the command line)",
                      "plugins": "a Python caller (not settable from the command line)",
                      "profiler": "a Python caller (not settable from the command line)"}

#: trainer key -> (predicate, expected); checked before Lightning sees the value
_POS_INT = (lambda v: _is_int(v) and v >= 1, "a positive integer")
TRAINER_RULES: dict[str, tuple[Any, str]] = {
    # -1 (train forever) and None (Lightning's default of 1000) never end a codec run usefully
    "max_epochs": _POS_INT,
    "min_epochs": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "max_steps": (lambda v: _is_int(v) and (v == -1 or v >= 1), "-1 (no limit) or an integer >= 1"),
    "min_steps": (lambda v: v is None or _is_int(v) and v >= 0, "an integer >= 0 or null"),
    "log_every_n_steps": _POS_INT,
    "check_val_every_n_epoch": (lambda v: v is None or _is_int(v) and v >= 1,
                                "a positive integer or null"),
    "accumulate_grad_batches": _POS_INT,
    "num_nodes": _POS_INT,
    "num_sanity_val_steps": (lambda v: _is_int(v) and v >= -1, "an integer >= -1"),
    "devices": (lambda v: v == "auto" or _is_int(v) and (v >= 1 or v == -1)
                or isinstance(v, str) and v.strip().lstrip("-").isdigit() and int(v) != 0
                or isinstance(v, (list, tuple)) and len(v) > 0 and all(_is_int(d) and d >= 0
                                                                      for d in v),
                "auto, a positive integer, -1 (all) or a list of device indices"),
    "gradient_clip_val": (lambda v: v is None or _number(v) and v >= 0, "a number >= 0 or null"),
    "fast_dev_run": (lambda v: isinstance(v, bool) or _is_int(v) and v >= 0,
                     "true, false or an integer >= 0"),
    "default_root_dir": (lambda v: v is None or isinstance(v, str) and v.strip() != "",
                         "a folder path"),
}
for _k in ("limit_train_batches", "limit_val_batches", "limit_test_batches",
           "limit_predict_batches", "overfit_batches", "val_check_interval"):
    TRAINER_RULES[_k] = (lambda v: v is None or _is_int(v) and v >= 0
                         or _number(v) and 0 <= v <= 1,
                         "an integer >= 0 (batches) or a fraction in [0, 1]")
TRAINER_RULES["reload_dataloaders_every_n_epochs"] = (lambda v: _is_int(v) and v >= 0,
                                                      "an integer >= 0")
TRAINER_RULES["deterministic"] = (lambda v: v is None or isinstance(v, bool) or v == "warn",
                                  "true, false, warn or null")
for _k in ("enable_progress_bar", "enable_checkpointing", "enable_model_summary", "benchmark",
           "inference_mode", "use_distributed_sampler", "detect_anomaly", "barebones",
           "sync_batchnorm"):
    TRAINER_RULES[_k] = (lambda v: v is None or isinstance(v, bool), "true or false")

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's banners ("GPU available: ...") while a Trainer is only being checked."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric",
                                              "lightning.pytorch.utilities.rank_zero",
                                              "lightning.fabric.utilities.rank_zero")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _accelerator_ok(name: Any) -> str | None:
    """None when ``name`` is an available accelerator, else what was expected."""
    from lightning.pytorch.accelerators import AcceleratorRegistry

    names = sorted(AcceleratorRegistry.available_accelerators())
    expected = f"auto or one of {', '.join(names)}"
    if name == "auto":
        return None
    if not isinstance(name, str) or name.lower() not in (*names, "gpu"):
        return expected

    def usable(n: str) -> bool:
        try:
            return bool(AcceleratorRegistry.get(n).is_available())
        except Exception:  # noqa: BLE001 - e.g. the TPU check raises without torch_xla
            return False

    name = name.lower()
    available = [n for n in (("cuda", "mps") if name == "gpu" else (name,))
                 if n in names and usable(n)]
    if not available:
        ok = [n for n in names if usable(n)]
        return f"an accelerator available on this machine: auto or {', '.join(ok)}"
    return None


def check_trainer(trainer: dict[str, Any]) -> None:
    """``trainer.*`` against ``lightning.Trainer``: known names, types and ranges, an available
    accelerator; then a Trainer is built (and dropped) so that whatever Lightning itself refuses
    is refused here, before any file is written."""
    import lightning as L

    params = inspect.signature(L.Trainer.__init__).parameters
    for key, value in trainer.items():
        if key in OWNED_TRAINER_KEYS:
            raise ConfigError(f"trainer.{key}", value, OWNED_TRAINER_KEYS[key])
        if key not in params or key == "self":
            close = difflib.get_close_matches(key, [p for p in params if p != "self"], n=1)
            hint = f" (did you mean trainer.{close[0]}?)" if close else ""
            raise ConfigError(f"trainer.{key}", value, f"an argument of lightning.Trainer{hint}")
        rule = TRAINER_RULES.get(key)
        if rule is not None and not rule[0](value):
            raise ConfigError(f"trainer.{key}", value, rule[1])
    if "accelerator" in trainer:
        bad = _accelerator_ok(trainer["accelerator"])
        if bad:
            raise ConfigError("trainer.accelerator", trainer["accelerator"], bad)
    lo, hi = trainer.get("min_epochs"), trainer.get("max_epochs")
    if _is_int(lo) and _is_int(hi) and lo > hi:
        raise ConfigError("trainer.min_epochs", lo, f"at most trainer.max_epochs={hi}")
    try:
        with quiet_lightning():
            L.Trainer(**{**trainer, "logger": False, "enable_checkpointing": False,
                         "enable_progress_bar": False, "enable_model_summary": False})
    except Exception as e:  # noqa: BLE001 - Lightning's own refusal, reported as one line
        msg = " ".join(str(e).split())
        key = next((k for k in trainer if k in msg), None)
        name = f"trainer.{key}" if key else "trainer"
        value = trainer[key] if key else dict(trainer)
        raise ConfigError(name, value, f"a value lightning.Trainer accepts ({msg[:200]})") from None


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
    from meg_lightning.data.prompts import load_prompt_file, resolve_prompt_path

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
    return {
        "latents": [cache],
        "train-codec": [("out_dir", out), ("out_dir", out / "codec"),
                        ("out_dir", out / "codec" / f"fc{cfg.codec.fc:g}")],
        "train-ppo": [("out_dir", out), ("out_dir", out / "ppo")],
        "eval": [("out_dir", out), ("out_dir", out / "eval"),
                 ("out_dir", out / "eval" / "examples")],
        "figures": [("out_dir", out), ("out_dir", out / "figures")],
        "demo": [("out_dir", out), cache],
    }.get(command, [])


def check_figures_inputs(cfg: MegConfig) -> None:
    """`meg figures`: the results file, when present, is one `meg eval` wrote."""
    from meg_lightning.evaluation.sweep import read_results

    results = Path(cfg.out_dir) / "eval" / cfg.eval.results
    if results.is_dir():
        raise ConfigError("eval.results", cfg.eval.results, f"a file ({str(results)!r} is a folder)")
    if results.is_file():
        read_results(results)
    elif not (Path(cfg.out_dir) / "ppo" / "fig10.csv").is_file():
        # nothing to draw: most likely a mistyped out_dir; do not create it
        raise ConfigError("out_dir", cfg.out_dir, f"a folder with saved results (eval/"
                          f"{cfg.eval.results} or ppo/fig10.csv): run `meg eval` there first")


def check(command: str, cfg: MegConfig) -> MegConfig:
    """Every check of ``command`` that needs no model or data; returns the config it checked
    (the demo's own, composed on its defaults)."""
    if command == "demo":
        from meg_lightning.cli import current_overrides
        from meg_lightning.demo import demo_config

        cfg = demo_config(current_overrides())
    if cfg.trainer:
        check_trainer(dict(cfg.trainer))
    for key, folder in output_dirs(command, cfg):
        check_dir(key, folder)
    check_prompt_file(cfg)
    if command == "figures":
        check_figures_inputs(cfg)
    return cfg
