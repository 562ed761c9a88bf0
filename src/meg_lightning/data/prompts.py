"""Prompt sources: a built-in deterministic set (no download) and prompt files.

Built-in prompts are the product of small template vocabularies (in the spirit of the paper's
"colorful flowers on a field"), enumerated in a fixed order so prompt i never changes: 24
subjects x 12 settings x 8 styles = 2,304 distinct prompts.

Files: ``.txt`` (one prompt per line, blank lines skipped), ``.csv`` / ``.tsv`` (a header row with
the column ``data.prompt_column``), ``.jsonl`` (one object per line with that key).
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

from meg_lightning.errors import ConfigError, UserError

SUBJECTS = [
    "colorful flowers", "a red fox", "an old lighthouse", "a mountain lake", "a city skyline",
    "a bowl of fruit", "a sailing boat", "a snowy cabin", "a golden retriever", "a vintage car",
    "a hot air balloon", "a bamboo forest", "a desert canyon", "a steam train", "a coral reef",
    "a castle on a hill", "a field of sunflowers", "a tabby cat", "a wooden bridge",
    "a market street", "an astronaut", "a waterfall", "a windmill", "a cup of coffee",
]
SETTINGS = [
    "on a field", "at sunset", "in the rain", "under a starry sky", "in the morning fog",
    "in autumn", "in winter", "by the sea", "in a forest", "at night", "in spring",
    "on a sunny day",
]
STYLES = [
    "photograph", "oil painting", "watercolor", "digital art", "pencil sketch",
    "35mm film photo", "studio lighting", "impressionist painting",
]


def builtin_prompts(n: int) -> list[str]:
    """The first ``n`` built-in prompts (deterministic, all distinct)."""
    total = len(SUBJECTS) * len(SETTINGS) * len(STYLES)
    if not 0 < n <= total:
        raise ConfigError("data.num_prompts", n, f"1..{total} with the built-in prompt set "
                          "(or a prompt file in data.prompts)")
    out = []
    for i in range(n):
        # style varies fastest so neighbouring samples differ in style, subject slowest
        style = STYLES[i % len(STYLES)]
        setting = SETTINGS[(i // len(STYLES)) % len(SETTINGS)]
        subject = SUBJECTS[(i // (len(STYLES) * len(SETTINGS))) % len(SUBJECTS)]
        out.append(f"{subject} {setting}, {style}")
    return out


PACKAGE_PREFIX = "package:"  # data.prompts="package:<package>/<path>": a file inside an installed package


def resolve_prompt_path(path: str | Path) -> Path:
    """The file that ``data.prompts`` names: a path, or ``package:<package>/<path inside it>``.

    The ``package:`` form finds files shipped with an installed package wherever it is installed
    (the ``mini`` preset's captions: ``package:meg_lightning/mini/prompts.txt``), so a preset does
    not depend on the working directory.
    """
    text = str(path)
    if not text.startswith(PACKAGE_PREFIX):
        return Path(text).expanduser()
    package, _, inner = text[len(PACKAGE_PREFIX):].partition("/")
    expected = f"{PACKAGE_PREFIX}<installed package>/<file inside it>"
    if not package.isidentifier() or not inner:
        raise ConfigError("data.prompts", text, expected)
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("data.prompts", text, f"{expected} (no package {package!r})")
    # a namespace package (meg_lightning is one) may span several folders: take the one that
    # holds the file
    candidates = [Path(root) / inner for root in spec.submodule_search_locations]
    return next((c for c in candidates if c.is_file()), candidates[0])


def load_prompt_file(path: str | Path, column: str = "prompt") -> list[str]:
    """All prompts of a ``.txt`` / ``.csv`` / ``.tsv`` / ``.jsonl`` file, in file order.

    ``path`` may be ``package:<package>/<file>`` (:func:`resolve_prompt_path`).
    """
    p = resolve_prompt_path(path)
    if not p.is_file():
        raise ConfigError("data.prompts", str(path), "an existing prompt file")
    suffix = p.suffix.lower()
    data = p.read_bytes()
    if b"\0" in data:
        raise ConfigError("data.prompts", str(path), "a text file (it holds NUL bytes: binary?)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError("data.prompts", str(path), f"a UTF-8 text file (byte {e.start} is not "
                          "UTF-8; convert it, e.g. iconv -t utf-8)") from None
    if suffix == ".txt":
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    elif suffix in (".csv", ".tsv"):
        rows = list(csv.DictReader(text.splitlines(), delimiter="," if suffix == ".csv" else "\t"))
        if rows and column not in rows[0]:
            raise ConfigError("data.prompt_column", column,
                              f"a column of {p.name} (found {', '.join(rows[0])})")
        prompts = [r[column].strip() for r in rows if (r.get(column) or "").strip()]
    elif suffix == ".jsonl":
        prompts = []
        for ln, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"data.prompts={str(path)!r}: line {ln} is not valid JSON") from None
            if not isinstance(obj, dict) or column not in obj:
                raise ConfigError("data.prompt_column", column, f"a key of every object in {p.name} "
                                  f"(line {ln} lacks it)")
            if str(obj[column]).strip():
                prompts.append(str(obj[column]).strip())
    else:
        raise ConfigError("data.prompts", str(path), "a .txt, .csv, .tsv or .jsonl file")
    if not prompts:
        raise ConfigError("data.prompts", str(path), "a file with at least one prompt (it is empty)")
    return prompts


def get_prompts(source: str | None, n: int, column: str = "prompt") -> list[str]:
    """The first ``n`` prompts of ``source`` (a file path, or None for the built-in set)."""
    if source is None:
        return builtin_prompts(n)
    prompts = load_prompt_file(source, column)
    if len(prompts) < n:
        raise ConfigError("data.num_prompts", n, f"at most {len(prompts)}, the number of prompts "
                          f"in {source}")
    return prompts[:n]
