"""The ``trainer.*`` settings (passed to ``lightning.Trainer`` as they are) checked before
Lightning sees them: names, types, sane ranges, an available accelerator; and a quiet Trainer.
Each failure is a one-line :class:`ConfigError` naming the key, the value and what was expected.
Also the progress bar of the commands' Trainers (:func:`progress_bar`: epochs counted from 1).
"""

from __future__ import annotations

import difflib
import inspect
import logging
import math
from contextlib import contextmanager
from typing import Any, Iterator

import lightning as L
from lightning.pytorch.accelerators import AcceleratorRegistry
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

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


def _epoch_text(trainer: L.Trainer) -> str:
    """``Epoch 3/20``: the epoch running, counted from 1, of ``max_epochs`` (Lightning writes
    ``Epoch 2/19``, 0-based, for the same epoch)."""
    total = trainer.max_epochs
    return f"Epoch {trainer.current_epoch + 1}" + (f"/{total}" if total and total > 0 else "")


def _without_version(items: dict) -> dict:
    """The bar's metrics without ``v_num`` (the logger's run id says nothing while training)."""
    items.pop("v_num", None)
    return items


class EpochRichProgressBar(RichProgressBar):
    """Lightning's rich progress bar with the epoch counted from 1 (``Epoch 20/20`` for the last
    of 20) and without the logger's version."""

    def _get_train_description(self, current_epoch: int) -> str:
        text = _epoch_text(self.trainer)
        if len(self.validation_description) > len(text):  # as Lightning's: no flicker
            text = f"{text:{len(self.validation_description)}}"
        return text

    def get_metrics(self, trainer, pl_module):
        return _without_version(super().get_metrics(trainer, pl_module))


class EpochTQDMProgressBar(TQDMProgressBar):
    """Lightning's tqdm progress bar with the epoch counted from 1 and without the version."""

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(_epoch_text(trainer))

    def get_metrics(self, trainer, pl_module):
        return _without_version(super().get_metrics(trainer, pl_module))


def progress_bar() -> L.Callback:
    """The progress bar of a command's Trainer: rich when installed (Lightning's own choice),
    else tqdm; epochs counted from 1."""
    return EpochRichProgressBar() if _RICH_AVAILABLE else EpochTQDMProgressBar()


def _accelerator_ok(name: Any) -> str | None:
    """None when ``name`` is an available accelerator, else what was expected."""
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
