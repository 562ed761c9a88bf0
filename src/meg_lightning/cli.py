"""`meg <command> [key=value ...]`: the command-line entry point, the only place that reads argv.

Every stage is a command with the same ``key=value`` parsing, checks and exit codes: 0 success;
2 bad input or configuration (one line on stderr naming the key, the value and what was
expected; also a runtime failure that is the user's to fix: disk full, permission denied, out of
memory); 1 any other failure (one line; ``--debug`` or ``MEG_DEBUG=1`` shows the traceback); 130
interrupted (Ctrl-C or SIGTERM; rerunning the same command resumes). Every check runs before the
first file is written (:mod:`meg_lightning.preflight`).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import re
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Optional

from meg_lightning.errors import UserError

#: the config sections every command reads
COMMON = ("model", "seed", "out_dir", "logger", "wandb", "generation")


@dataclass(frozen=True)
class Command:
    """One ``meg`` command: ``target`` (``module:function``, called with the composed config),
    the config sections it reads (shown by ``--help``; with those of :data:`COMMON` it does not
    read in ``ignores``), its own settings section (``module:Class`` added to the config as
    ``section.*``) and its default YAML files under ``configs/``."""

    target: str
    help: str
    reads: tuple[str, ...]
    section: Optional[str] = None
    settings: Optional[str] = None
    defaults: tuple[str, ...] = ()
    ignores: tuple[str, ...] = ()

    def load(self, ref: Optional[str] = None) -> Any:
        """The object ``module:name`` (the command's function by default). Command modules are
        imported when their command runs: importing them all would make ``meg --help`` slow."""
        module, name = (ref or self.target).split(":")
        return getattr(importlib.import_module(module), name)


COMMANDS: dict[str, Command] = {
    "latents": Command("meg_lightning.data.cache:main",
                       "generate and cache SD latents for N prompts", ("data", "trainer"),
                       ignores=("out_dir", "logger", "wandb")),
    "train-codec": Command("meg_lightning.codecs.train:main",
                           "train the compression encoder/decoder through the channel",
                           ("data", "channel", "codec", "trainer")),
    "train-ppo": Command("meg_lightning.power.sweep:main",
                         "train the PPO power-allocation agent",
                         ("data", "channel", "codec", "ppo", "eval")),
    "eval": Command("meg_lightning.evaluation.sweep:main",
                    "PSNR/FID against SNR and fc for every scheme (resumable sweep)",
                    ("data", "channel", "codec", "eval")),
    "eval-multiuser": Command("meg_lightning.multiuser.sweep:main",
                              "users served per frame at a quality target: K users, TDMA / NOMA",
                              ("data", "channel", "codec", "eval"), section="users",
                              settings="meg_lightning.config:UsersConfig"),
    "train-alloc": Command("meg_lightning.multiuser.learn:main",
                           "learn the allocation across K users (PPO) against equal shares",
                           ("data", "ppo"), section="users",
                           settings="meg_lightning.config:UsersConfig"),
    "figures": Command("meg_lightning.evaluation.figures:main",
                       "regenerate every figure from saved results", ("eval", "codec")),
    "demo": Command("meg_lightning.demo:main",
                    "run every stage end to end on the offline default",
                    ("data", "channel", "codec", "ppo", "eval", "trainer"),
                    defaults=("demo.yaml",)),
    "bench": Command("meg_lightning.bench:main", "run the benchmarks under benchmarks/", ()),
    "train-mini": Command("meg_lightning.mini.train:main",
                          "train the shipped mini text-to-image model and its classifier",
                          (), section="mini", settings="meg_lightning.mini.train:MiniTrainConfig"),
    "rehearsal": Command("meg_lightning.rehearsal:main",
                         "every stage at SD-v1.5 size on random weights: time and peak memory",
                         (), section="rehearsal",
                         settings="meg_lightning.rehearsal:RehearsalConfig"),
    "pretrained-codecs": Command("meg_lightning.recipe:main",
                                "reproduce the codecs shipped for mini (the adaptive recipe)",
                                ("trainer",), section="recipe",
                                settings="meg_lightning.recipe:RecipeConfig"),
}

USAGE = "usage: meg <command> [key=value ...]   (meg --help, meg <command> --help)"


def compose_for(command: str, args: list[str]):
    """The validated config of ``meg <command> args``: the schema with the registered groups and
    the command's own section, its default YAML files, then ``args``."""
    from meg_lightning.compose import load_config  # noqa: PLC0415 - imports the registries
    from meg_lightning.config import config_dir  # noqa: PLC0415 - see above

    cmd = COMMANDS[command]
    sections = {cmd.section: cmd.load(cmd.settings)} if cmd.section else {}
    return load_config(args, defaults=[config_dir() / d for d in cmd.defaults],
                       sections=sections)


def _comment(cls: type, name: str) -> str:
    """The comment of field ``name`` in the source of dataclass ``cls`` (or its bases)."""
    for klass in cls.__mro__:
        try:
            src = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        m = re.search(rf"^\s*{re.escape(name)}\s*:[^\n#]*#\s*(.*)$((?:\n\s*#.*$)*)", src,
                      re.MULTILINE)
        if m:  # the comment, with the comment lines that continue it
            more = [line.strip().lstrip("#").strip() for line in m.group(2).splitlines()]
            return " ".join([m.group(1).strip(), *filter(None, more)])
    return ""


def _keys(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, 'value  # comment') rows of a composed config section."""
    rows: list[tuple[str, str]] = []
    for f in dataclasses.fields(obj):
        key, val = f"{prefix}{f.name}", getattr(obj, f.name)
        if dataclasses.is_dataclass(val):
            rows += _keys(val, key + ".")
            continue
        comment = _comment(type(obj), f.name)
        rows.append((key, f"{val!r}  # {comment}" if comment else repr(val)))
    return rows


def _help(command: Optional[str], args: list[str]) -> str:
    if command is None:
        lines = [USAGE, "", "commands:"]
        lines += [f"  {c:<18} {cmd.help}" for c, cmd in COMMANDS.items()]
        lines += ["", "common keys: model seed data.num_prompts data.prompts data.cache_dir codec.fc",
                  "             channel.kind channel.snr_db out_dir logger trainer.*",
                  "`meg <command> --help [model=<preset> ...]` lists the keys a command reads, "
                  "with their values",
                  "exit codes: 0 ok, 2 bad input/config, 1 other failure, 130 interrupted",
                  "--debug (or MEG_DEBUG=1): show the full traceback of a failure"]
        return "\n".join(lines)
    cmd = COMMANDS[command]
    cfg = compose_for(command, [a for a in args if "=" in a])
    sections = tuple(c for c in COMMON if c not in cmd.ignores) + cmd.reads \
        + ((cmd.section,) if cmd.section else ())
    lines = [f"usage: meg {command} [key=value ...]", "", cmd.help, "",
             f"keys it reads (values for model={cfg.model}"
             + (" and the given settings" if any("=" in a for a in args) else "") + "):"]
    for name in sections:
        val = getattr(cfg, name)
        if dataclasses.is_dataclass(val):
            lines += [f"  {k} = {v}" for k, v in _keys(val, name + ".")]
        elif name == "trainer":
            lines += [f"  trainer.{k} = {v!r}" for k, v in val.items()]
            lines.append("  trainer.<any lightning.Trainer argument>")
        else:
            comment = _comment(type(cfg), name)
            lines.append(f"  {name} = {val!r}" + (f"  # {comment}" if comment else ""))
    return "\n".join(lines)


def _debug(argv: list[str]) -> tuple[list[str], bool]:
    """Strip ``--debug`` from argv; debug mode is on with it or with ``MEG_DEBUG=1``."""
    env = os.environ.get("MEG_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    return [a for a in argv if a != "--debug"], env or "--debug" in argv


def run(argv: list[str]) -> int:
    """``meg argv``; returns the exit code."""
    from meg_lightning.runtime import interruptible, quiet_noise, was_interrupted  # noqa: PLC0415 - torch

    argv, debug = _debug(list(argv))
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_help(None, []))
        return 0 if argv else 2
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"meg: unknown command {command!r}: expected one of {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    try:
        with interruptible(), quiet_noise():
            if any(a in ("-h", "--help") for a in args):
                print(_help(command, args))
                return 0
            cfg = compose_for(command, args)
            from meg_lightning.preflight import check  # noqa: PLC0415 - imports lightning

            check(command, cfg)
            fn: Callable[[Any], Any] = COMMANDS[command].load()
            fn(cfg)
    except KeyboardInterrupt:
        print(f"meg {command}: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - sorted below
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
    from meg_lightning.runtime import one_line_error  # noqa: PLC0415 - imports torch

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
    # before TorchRL is imported (it reads the level then): no INFO lines unless asked for
    from meg_lightning.runtime import TORCHRL_LEVEL  # noqa: PLC0415 - imports torch

    os.environ.setdefault(*TORCHRL_LEVEL)
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
