"""Process-level runtime settings shared by the stages."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run a block with ``n`` intra-op CPU threads, then restore the previous setting.

    For small tensors (FID on n x n Gram matrices, PPO's MLPs, tiny test models) extra threads
    cost more than they give, and on a shared CPU far more: each parallel region waits for a
    descheduled thread (docs/BENCHMARKS.md has the numbers).
    """

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def interruptible() -> Iterator[None]:
    """Run a command with SIGTERM handled like Ctrl-C: both raise KeyboardInterrupt, so every
    command stops the same way (files are written atomically; the CLI exits 130 and a rerun
    resumes). Restores the previous handlers afterwards (Lightning ignores SIGINT after an
    interrupt: the default comes back here)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):  # noqa: ARG001 - the signal handler signature
        _SIGNALLED.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    _SIGNALLED.clear()
    signal.signal(signal.SIGTERM, _raise)
    if before[signal.SIGINT] is signal.default_int_handler:  # an ignored SIGINT stays ignored
        signal.signal(signal.SIGINT, _raise)
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


#: the signals received inside ``interruptible`` (the CLI asks ``was_interrupted``)
_SIGNALLED: list[int] = []


def was_interrupted() -> bool:
    """Whether Ctrl-C or SIGTERM arrived inside ``interruptible``. A library can turn the
    KeyboardInterrupt raised in the middle of its code into another exception (TorchRL's PPO
    loss, interrupted inside a ``with`` on a TensorDict, raises "Converting a tensordict to
    boolean value is not permitted"); the CLI still reports such a failure as an interruption."""
    return bool(_SIGNALLED)


class _TruncationFilter:
    """Lets one tokenizer truncation warning through, shortened; drops the rest (a 5,000
    character prompt otherwise prints its whole cut tail, for every prompt)."""

    def __init__(self) -> None:
        self.seen = 0

    def filter(self, record) -> bool:
        msg = record.getMessage()
        if "truncated because" not in msg and "sequence length is longer" not in msg:
            return True
        self.seen += 1
        if self.seen > 1:
            return False
        record.msg = (msg[:160] + " ...") if len(msg) > 160 else msg
        record.args = ()
        record.msg += " (further truncation warnings are not shown)"
        return True


#: TorchRL's log level in a command (its INFO lines, e.g. "Initialized LazyTensorStorage ...",
#: say nothing to a user); the CLI sets it before TorchRL is imported, the user's value wins
TORCHRL_LEVEL = ("RL_LOGGING_LEVEL", "WARNING")


@contextmanager
def quiet_noise() -> Iterator[None]:
    """What a command should not print: tokenizer truncation warnings beyond the first, TorchRL's
    INFO lines (unless ``RL_LOGGING_LEVEL`` asks for them), and colour codes from TorchRL's log
    handler when stdout is not a terminal."""

    filt = _TruncationFilter()
    loggers = [logging.getLogger(n) for n in (
        "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion",
        "transformers.tokenization_utils_base", "transformers.tokenization_utils")]
    for lg in loggers:
        lg.addFilter(filt)
    plain = []
    if not sys.stdout.isatty():
        plain = _plain_torchrl_handlers()
    torchrl_log = logging.getLogger("torchrl")
    level = torchrl_log.level
    if "torchrl" in sys.modules and TORCHRL_LEVEL[0] not in os.environ:
        # imported before the CLI could set RL_LOGGING_LEVEL (a caller of cli.run)
        torchrl_log.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        torchrl_log.setLevel(level)
        for lg in loggers:
            lg.removeFilter(filt)
        for handler, fmt in plain:
            handler.setFormatter(fmt)


def _plain_torchrl_handlers() -> list:
    """Swap TorchRL's coloured log formatter for a plain one; returns (handler, old formatter)."""
    if "torchrl" not in sys.modules:
        import torchrl  # noqa: F401, PLC0415 - heavy; imported here for its log handler only
    swapped = []
    probe = logging.LogRecord("torchrl", logging.INFO, __file__, 0, "probe", (), None)
    for handler in logging.getLogger("torchrl").handlers:
        fmt = handler.formatter
        if fmt is not None and "\x1b[" in fmt.format(probe):
            swapped.append((handler, fmt))
            handler.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
    return swapped


#: the key that sets the batch size of each command's memory-hungry step
BATCH_KEYS = {"latents": "data.gen_batch_size", "train-codec": "data.batch_size",
              "eval": "eval.batch_size", "train-ppo": "ppo.num_envs / ppo.minibatch_size",
              "demo": "data.gen_batch_size, data.batch_size or eval.batch_size"}


def _torch_write_failed(text: str) -> bool:
    """torch.save's zip writer (PyTorchStreamWriter) when a write came up short."""
    return ("inline_container" in text and "unexpected pos" in text) or \
        "PytorchStreamWriter failed writing" in text


def _free_gib(path: str = ".") -> float:
    try:
        return shutil.disk_usage(path).free / 1024 ** 3
    except OSError:
        return float("nan")


def one_line_error(e: BaseException, command: str) -> tuple[int, str]:
    """(exit code, one line) for an unexpected exception: 2 with what to change when it is the
    user's to fix (disk full, permission denied, out of memory), else 1 with the exception."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {str(e.filename)!r}" if e.filename else ""
        return 2, (f"no space left on the device{where}: free some space or choose another "
                   "out_dir / data.cache_dir (a rerun resumes)")
    if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        where = f" on {str(e.filename)!r}" if e.filename else ""
        return 2, (f"permission denied{where}: expected a writable out_dir / data.cache_dir "
                   "and readable inputs")
    if isinstance(e, (FileNotFoundError, NotADirectoryError, IsADirectoryError)) and e.filename:
        return 2, (f"cannot use {str(e.filename)!r} ({e.strerror}): expected an existing input "
                   "and a creatable out_dir / data.cache_dir")
    text = str(e)
    if isinstance(e, RuntimeError) and _torch_write_failed(text):
        # torch.save's zip writer reports a full disk as "unexpected pos" / "failed writing file"
        return 2, (f"writing a file failed ({' '.join(text.split())[:120]}), most likely no space "
                   f"left on the device ({_free_gib():.1f} GiB free in the working folder): free "
                   "some space or choose another out_dir / data.cache_dir (a rerun resumes)")
    oom = isinstance(e, MemoryError) or isinstance(e, getattr(torch, "OutOfMemoryError", ())) \
        or "out of memory" in text.lower() or "can't allocate memory" in text.lower()
    if oom:
        key = BATCH_KEYS.get(command, "the batch size")
        return 2, f"out of memory: lower {key} (or free memory) and rerun"
    first = " ".join(text.split())[:300]
    return 1, f"{type(e).__name__}: {first}" if first else type(e).__name__
