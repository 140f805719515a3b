"""Issue 2: a bad config is one clear line naming file and key, exit 2, no traceback."""

from __future__ import annotations

import pytest

from tests.conftest import cli

pytestmark = pytest.mark.timeout(60)

GOOD_DEVICE = '[[devices]]\nname = "a"\nport = "/dev/null"\ncodec = "fh1"\n'

CASES = {
    "unknown_key": ("[buffer]\ncapcity = 10\n", ["capcity"]),
    "wrong_type": ('[buffer]\ncapacity = "big"\n', ["buffer.capacity"]),
    "duplicate_device": (GOOD_DEVICE + GOOD_DEVICE, ["duplicate", "'a'"]),
    "unknown_codec": ('[[devices]]\nname = "a"\nport = "/dev/null"\ncodec = "morse"\n', ["codec", "morse"]),
    "toml_syntax": ("[buffer\ncapacity = 1\n", ["TOML"]),
    "unknown_board": ('[[devices]]\nname = "a"\nport = "/dev/null"\nboard = "nope"\n', ["board", "nope"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_exit_2_one_line(tmp_path, case):
    text, needles = CASES[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = cli("run", "-c", str(path), "--control", str(tmp_path / "s"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "bad.toml" in lines[0]
    for needle in needles:
        assert needle in lines[0]


def test_missing_config_file(tmp_path):
    result = cli("run", "-c", str(tmp_path / "missing.toml"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "missing.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_sink_option_is_a_usage_error(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[[sinks]]\ntype = "jsonl"\n')  # no path
    result = cli(
        "run", "-c", str(path), "--allow-empty", "--duration", "0", "--control", str(tmp_path / "s"), cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert "path" in result.stderr and "Traceback" not in result.stderr
