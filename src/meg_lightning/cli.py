"""`meg <command> [key=value ...]`: the command-line entry point.

Exit codes: 0 success; 2 bad input or configuration (one line on stderr naming the key, the value
and what was expected; also a runtime failure that is the user's to fix: disk full, permission
denied, out of memory); 1 any other failure (one line; ``--debug`` or ``MEG_DEBUG=1`` shows the
traceback); 130 interrupted (Ctrl-C or SIGTERM; rerunning the same command resumes).
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from dataclasses import fields, is_dataclass
from typing import Any, Callable

from meg_lightning.errors import UserError

# command -> (module, function, one-line help). Each function takes a validated MegConfig.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "latents": ("meg_lightning.data.cache", "main", "generate and cache SD latents for N prompts"),
    "train-codec": ("meg_lightning.codec.train", "main",
                    "train the compression encoder/decoder through the channel"),
    "train-ppo": ("meg_lightning.power.train", "main", "train the PPO power-allocation agent"),
    "eval": ("meg_lightning.evaluation.sweep", "main",
             "PSNR/FID against SNR and fc for every scheme (resumable sweep)"),
    "figures": ("meg_lightning.evaluation.figures", "main", "regenerate every figure from saved results"),
    "demo": ("meg_lightning.demo", "main", "run every stage end to end on the offline default"),
    "bench": ("meg_lightning.bench", "main", "run the benchmarks under benchmarks/"),
}

_OVERRIDES: list[str] = []


def current_overrides() -> list[str]:
    """The ``key=value`` arguments of the running command (for commands that re-compose)."""
    return list(_OVERRIDES)


USAGE = "usage: meg <command> [key=value ...]   (meg --help, meg <command> --help)"


def _keys(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, 'type = default  # comment') rows of the config schema."""
    import inspect

    from meg_lightning import config as C

    rows: list[tuple[str, str]] = []
    src = inspect.getsource(C)
    for f in fields(obj):
        key = f"{prefix}{f.name}"
        val = getattr(obj, f.name)
        if is_dataclass(val):
            rows += _keys(val, key + ".")
            continue
        comment = ""
        for line in src.splitlines():
            s = line.strip()
            if s.startswith(f"{f.name}:") and "#" in s:
                comment = s.split("#", 1)[1].strip()
                break
        rows.append((key, f"{val!r}  # {comment}" if comment else repr(val)))
    return rows


def _help(command: str | None) -> str:
    if command is None:
        lines = [USAGE, "", "commands:"]
        lines += [f"  {c:<12} {h}" for c, (_, _, h) in COMMANDS.items()]
        lines += ["", "common keys: model seed data.num_prompts data.prompts data.cache_dir codec.fc",
                  "             channel.kind channel.snr_db out_dir logger trainer.*",
                  "exit codes: 0 ok, 2 bad input/config, 1 other failure, 130 interrupted",
                  "--debug (or MEG_DEBUG=1): show the full traceback of a failure"]
        return "\n".join(lines)
    from meg_lightning.config import MegConfig

    lines = [f"usage: meg {command} [key=value ...]", "", COMMANDS[command][2], "", "keys (default):"]
    lines += [f"  {k} = {v}" for k, v in _keys(MegConfig())]
    lines.append("  trainer.<any lightning.Trainer argument>")
    return "\n".join(lines)


def _debug(argv: list[str]) -> tuple[list[str], bool]:
    """Strip ``--debug`` from argv; debug mode is on with it or with ``MEG_DEBUG=1``."""
    env = os.environ.get("MEG_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    return [a for a in argv if a != "--debug"], env or "--debug" in argv


def run(argv: list[str]) -> int:
    argv, debug = _debug(list(argv))
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_help(None))
        return 0 if argv else 2
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"meg: unknown command {command!r}: expected one of {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    if any(a in ("-h", "--help") for a in args):
        print(_help(command))
        return 0
    from meg_lightning.config import load_config
    from meg_lightning.runtime import interruptible, quiet_noise

    module, func, _ = COMMANDS[command]
    _OVERRIDES[:] = args
    try:
        with interruptible(), quiet_noise():
            cfg = load_config(args)
            from meg_lightning.preflight import check

            check(command, cfg)
            fn: Callable[[Any], Any] = getattr(importlib.import_module(module), func)
            fn(cfg)
    except KeyboardInterrupt:
        print(f"meg {command}: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - sorted below
        from meg_lightning.runtime import was_interrupted

        if was_interrupted():  # a library turned the KeyboardInterrupt into another error
            if debug:
                traceback.print_exc()
            print(f"meg {command}: interrupted (rerun the same command to resume)",
                  file=sys.stderr)
            return 130
        return _report(command, e, debug)
    return 0


def _report(command: str, e: Exception, debug: bool) -> int:
    """Print the one line for an exception that ended a command; return the exit code."""
    from meg_lightning.runtime import one_line_error

    if debug:
        traceback.print_exc()
    if isinstance(e, UserError):
        print(f"meg {command}: error: {e}", file=sys.stderr)
        return e.exit_code
    # the CLI's last resort: one line (exit 2 when the user can fix it), or the traceback
    code, line = one_line_error(e, command)
    hint = "" if debug else " (rerun with --debug or MEG_DEBUG=1 for the traceback)"
    print(f"meg {command}: error: {line}{hint if code == 1 else ''}", file=sys.stderr)
    return code


def main() -> None:
    os.environ.setdefault("WANDB_MODE", "offline")
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
