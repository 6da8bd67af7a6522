"""Assertions shared by test files."""


def one_line_error(r, *needles) -> None:
    """A CLI result that failed with one `error: ...` line on stderr containing every needle."""
    assert r.exit_code != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
