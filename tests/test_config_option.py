"""`--config FILE`: a path that is not a readable YAML file is one `error: ...` line (exit 2), like every
other user mistake, not click's three-line usage text.

Run: .venv/bin/python -m pytest tests/test_config_option.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest

from checks import one_line_error

COMMANDS = [("ingest",), ("train", "sft"), ("sample",), ("eval",)]


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_missing_config_file(cli, tmp_path, cmd):
    missing = tmp_path / "nope.yaml"
    r = cli(*cmd, "--config", missing)
    one_line_error(r, f"error: {missing}: no such file;", "--config")
    assert r.exit_code == 2
    assert "Usage:" not in r.stderr


def test_config_that_is_a_folder(cli, tmp_path):
    r = cli("ingest", "--config", tmp_path)
    one_line_error(r, f"{tmp_path}: is a folder;", "--config takes a YAML file")
    assert r.exit_code == 2


def test_unreadable_config_file(cli, tmp_path, monkeypatch):
    cfg = tmp_path / "locked.yaml"
    cfg.write_text("source: x\n", encoding="utf-8")
    real = Path.read_text

    def read_text(self, *a, **kw):  # chmod 000 does not stop root, so refuse the read here
        if self == cfg:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **kw)

    monkeypatch.setattr(Path, "read_text", read_text)
    r = cli("ingest", "--config", cfg)
    one_line_error(r, f"{cfg}: cannot read the config file (permission denied)")
    assert r.exit_code == 2


def test_config_not_utf8(cli, tmp_path):
    cfg = tmp_path / "latin.yaml"
    cfg.write_bytes("source: caf\u00e9\n".encode("latin-1"))
    r = cli("ingest", "--config", cfg)
    one_line_error(r, f"{cfg}: the config file is not UTF-8 text")
    assert r.exit_code == 2
