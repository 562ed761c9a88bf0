"""Prompt sources: the built-in set and prompt files."""

from __future__ import annotations

import pytest

from meg_lightning.data.prompts import builtin_prompts, get_prompts, load_prompt_file
from meg_lightning.errors import ConfigError, UserError


def test_builtin_set_is_large_distinct_and_stable():
    p = builtin_prompts(2304)
    assert len(set(p)) == 2304 >= 1000
    assert builtin_prompts(10) == p[:10]  # prompt i does not depend on N
    assert p[0] == "colorful flowers on a field, photograph"
    with pytest.raises(ConfigError, match="data.num_prompts=2305"):
        builtin_prompts(2305)


@pytest.mark.parametrize("name, text", [
    ("p.txt", "a cat\n\n  a dog  \n"),
    ("p.csv", "id,prompt\n1,a cat\n2,a dog\n"),
    ("p.tsv", "prompt\tid\na cat\t1\na dog\t2\n"),
    ("p.jsonl", '{"prompt": "a cat"}\n\n{"prompt": "a dog", "x": 1}\n'),
])
def test_prompt_files(tmp_path, name, text):
    f = tmp_path / name
    f.write_text(text)
    assert load_prompt_file(f) == ["a cat", "a dog"]
    assert get_prompts(str(f), 1) == ["a cat"]


def test_prompt_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="an existing prompt file"):
        load_prompt_file(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(ConfigError, match="it is empty"):
        load_prompt_file(tmp_path / "empty.txt")
    (tmp_path / "p.csv").write_text("text\na cat\n")
    with pytest.raises(ConfigError, match="data.prompt_column='prompt'.*found text"):
        load_prompt_file(tmp_path / "p.csv")
    (tmp_path / "p.yaml").write_text("- a\n")
    with pytest.raises(ConfigError, match=r"\.txt, \.csv"):
        load_prompt_file(tmp_path / "p.yaml")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(UserError, match="line 1"):
        load_prompt_file(tmp_path / "bad.jsonl")
    (tmp_path / "two.txt").write_text("a\nb\n")
    with pytest.raises(ConfigError, match="data.num_prompts=3: expected at most 2"):
        get_prompts(str(tmp_path / "two.txt"), 3)


def test_mini_prompts_resolve_from_the_installed_package(tmp_path, monkeypatch):
    """`model=mini` run outside the repository still finds its captions (package resource)."""
    from meg_lightning.compose import load_config
    from meg_lightning.data.prompts import get_prompts, resolve_prompt_path
    from meg_lightning.errors import ConfigError
    from meg_lightning.mini.dataset import PROMPT_FILE

    monkeypatch.chdir(tmp_path)
    cfg = load_config(["model=mini"])
    assert cfg.data.prompts.startswith("package:")
    assert resolve_prompt_path(cfg.data.prompts) == PROMPT_FILE
    assert get_prompts(cfg.data.prompts, 900) == PROMPT_FILE.read_text().splitlines()
    for bad in ("package:no_such_pkg_xyz/prompts.txt", "package:meg_lightning/none.txt",
                "package:meg_lightning", "package:/x.txt"):
        with pytest.raises(ConfigError, match="data.prompts"):
            get_prompts(bad, 4)


def test_a_prompt_file_that_is_not_utf8_is_a_config_error(tmp_path):
    f = tmp_path / "p.txt"
    f.write_bytes(b"a cat\n\xff\xfe binary\n")
    with pytest.raises(ConfigError, match=r"data.prompts=.*UTF-8 text file \(byte 6"):
        load_prompt_file(f)
