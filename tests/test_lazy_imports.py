"""`import toolkit` and `toolkit --help` stay light: no torch, vllm, faiss or argilla.

Run: .venv/bin/python -m pytest tests/test_lazy_imports.py -q
"""

import subprocess
import sys

HEAVY = ["torch", "vllm", "faiss", "argilla", "transformers", "sentence_transformers", "trl", "datasets"]


def _loaded_after(code: str) -> set[str]:
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted(m for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    import json

    return set(json.loads(out.strip().splitlines()[-1]))


def test_import_toolkit_is_light():
    mods = _loaded_after("import toolkit, toolkit.core.columns, toolkit.core.grades")
    assert not [m for m in HEAVY if m in mods]


def test_help_of_every_command_is_light():
    code = (
        "from toolkit.cli import cli\n"
        "import contextlib, io\n"
        "names = list(cli.commands)\n"
        "for args in [['--help']] + [[n, '--help'] for n in names]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            cli(args, standalone_mode=False)\n"
        "        except SystemExit:\n"
        "            pass\n"
    )
    mods = _loaded_after(code)
    assert not [m for m in HEAVY if m in mods]


def test_console_script_runs():
    import shutil

    exe = shutil.which("toolkit") or str(__import__("pathlib").Path(sys.executable).with_name("toolkit"))
    r = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "ingest" in r.stdout and "split" in r.stdout


def test_every_option_of_every_command_has_help_text():
    """`toolkit STAGE --help` explains every option (the README's promise)."""
    import click

    from toolkit.cli import cli

    def commands(cmd, path):
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                yield from commands(sub, [*path, name])
        else:
            yield " ".join(path), cmd

    found = list(commands(cli, []))
    missing = [(name, p.opts[-1]) for name, cmd in found for p in cmd.params if isinstance(p, click.Option) and not p.hidden and not p.help]
    assert len(found) > 20 and missing == []
