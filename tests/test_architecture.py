"""The package's shape: its layers and the absence of import circles (import-linter contracts in
pyproject.toml, imports inside functions included), imports at the top of files, and the
registries as the only lists of channel models, codec architectures and schemes."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO

SRC = REPO / "src" / "meg_lightning"


def test_the_import_contracts_hold():
    """lint-imports: no module imports a higher layer, no circle among sibling modules."""
    exe = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(exe), "--no-cache"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "2 kept, 0 broken" in out.stdout


def _deferred_imports(path: Path) -> list[tuple[int, str]]:
    """Imports inside functions or classes that do not say why they are deferred."""
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    line = lines[inner.lineno - 1]
                    if "PLC0415" not in line:
                        found.append((inner.lineno, line.strip()))
    return found


def test_imports_sit_at_the_top_of_files_unless_a_comment_says_why():
    offenders = {str(p.relative_to(SRC)): _deferred_imports(p) for p in SRC.rglob("*.py")}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, offenders


def test_no_consumer_keeps_a_list_of_channel_kinds():
    """The channel kinds are the registry's: no module checks a name against a list of them or
    spells that list in a message (the choices come from CHANNELS; a default value is config)."""
    pattern = re.compile(r"in \([\"']awgn[\"'],|awgn, rayleigh, none|\(\"awgn\", \"rayleigh\", \"none\"\)")
    hits = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if pattern.search(p.read_text())]
    assert hits == [], hits
