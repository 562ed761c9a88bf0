"""Atomic writes: all or nothing, ordinary permissions, temp files cleaned."""

from __future__ import annotations

import os
import stat

import pytest

from meg_lightning.io import atomic_path, atomic_write_json, atomic_write_text, clean_tmp


def test_atomic_write_replaces_whole_file_with_plain_permissions(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["a.txt"]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_json(p, {"x": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert p.read_text().strip().startswith("{") and os.listdir(tmp_path) == ["a.json"]


def test_clean_tmp(tmp_path):
    (tmp_path / ".tmp-x.1").write_text("")
    (tmp_path / "keep").write_text("")
    assert clean_tmp(tmp_path) == 1 and os.listdir(tmp_path) == ["keep"]
