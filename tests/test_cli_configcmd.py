"""``firmware-host config check`` validates what ``run`` would without opening
anything (exit 0 and one OK line, or exit 2 and one line per problem), and
``config sample`` prints a commented config that ``config check`` accepts."""

from __future__ import annotations

import socket
import tomllib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from firmware_host.config.schema import TOP_KEYS
from tests.conftest import cli

pytestmark = pytest.mark.timeout(60)


def check(tmp_path: Path, text: str, *args: str) -> tuple[int, list[str], str]:
    path = tmp_path / "gw.toml"
    path.write_text(text)
    result = cli("config", "check", "-c", str(path), *args, cwd=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stderr.strip().splitlines(), result.stdout


def test_the_sample_is_accepted_by_check(tmp_path: Path) -> None:
    sample = cli("config", "sample", cwd=tmp_path)
    assert sample.returncode == 0 and sample.stderr == ""
    assert sample.stdout.count("\n# ") + sample.stdout.count("  # ") > 10  # it explains itself
    tables = tomllib.loads(sample.stdout)
    assert set(tables) == TOP_KEYS - {"plugins"}  # every table but the commented-out plugin
    code, errors, out = check(tmp_path, sample.stdout)
    assert code == 0, errors
    assert errors == [] and out.count("\n") == 1 and "gw.toml: OK" in out


def test_several_problems_one_line_each_exit_2(tmp_path: Path) -> None:
    text = "\n".join(
        [
            "[buffer]\ncapacity = 0",
            "[shutdown]\ngrace = 1e-9",
            '[[devices]]\nname = "a"\nport = "sockt://127.0.0.1:1"\ncodec = "fh1"',
            '[[devices]]\nname = "b"\nport = "/dev/ttyUSB0"\ncodec = "fh1"\nmax_payload = 2000000',
            '[[devices]]\nname = "c"\nport = "/dev/ttyUSB1"\ncodec = "fh1"\nbaudrate = 2147483648',
            '[[sinks]]\ntype = "jsonl"',
            "[plugins.stats]\ninterval = 5e-324",
            "[plugins.nosuchplugin]",
        ]
    )
    code, errors, out = check(tmp_path, text + "\n", "--summary", str(tmp_path / "missing" / "s.json"))
    assert code == 2 and out == ""
    assert all(line.startswith("firmware-host: ") for line in errors), errors
    expected = [
        "buffer.capacity",
        "shutdown.grace",
        'devices[0].port: unknown URL scheme "sockt"',
        "devices[1].max_payload",
        "devices[2].baudrate",
        "sinks[0]: sink 'jsonl': option 'path': required option is missing",
        "plugins.stats.interval",
        "plugins.nosuchplugin",
        "does not exist",
    ]
    for needle in expected:
        assert sum(needle in line for line in errors) == 1, (needle, errors)
    assert len(errors) == len(expected)


def test_check_opens_no_port_and_no_sink(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        text = (
            f'[[devices]]\nname = "a"\nport = "socket://127.0.0.1:{port}"\ncodec = "lines"\n'
            f'[[sinks]]\ntype = "sqlite"\npath = "{tmp_path / "frames.db"}"\n'
            f'[[sinks]]\ntype = "jsonl"\npath = "{tmp_path / "out" / "frames.jsonl"}"\n'
            "[plugins.sqlite]\n"
        )
        code, errors, out = check(tmp_path, text)
        assert code == 0, errors
        assert "1 devices, 2 sinks, 1 plugins" in out
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.accept()  # nobody connected
    assert not (tmp_path / "frames.db").exists() and not (tmp_path / "out").exists()


def test_a_plugin_sink_type_needs_its_plugin(tmp_path: Path) -> None:
    code, errors, _ = check(tmp_path, '[[sinks]]\ntype = "sqlite"\npath = "x.db"\n')
    assert code == 2 and len(errors) == 1 and "unknown sink type 'sqlite'" in errors[0]


#: (the config, the options beside it, what its one problem line says)
ONE_PROBLEM: list[tuple[str, tuple[str, ...], str]] = [
    ("[buffer\n", (), "TOML syntax error"),
    ('[[sinks]]\ntype = "jsonl"\npath = "f"\n', ("--control", "/tmp/" + "x" * 120), "longer than 107 bytes"),
    ('[[sinks]]\ntype = "jsonl"\npath = "f"\n', ("--summary", "/nonexistent-dir/s.json"), "does not exist"),
    (
        '[[devices]]\nname = "a"\nport = "loop://"\ncodec = "fh1"\n[[sinks]]\ntype = "jsonl"\npath = "f"\n',
        (),
        "loop://",
    ),
    ("[log]\nformat = 'xml'\n[[sinks]]\ntype = 'jsonl'\npath = 'f'\n", (), "log.format"),
    ("", (), "no sinks"),
]


@pytest.fixture(scope="module")
def one_problem_checks(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[Future[tuple[int, list[str], str]]]]:
    """``config check`` of every ONE_PROBLEM case, each in its own directory, all
    started at once: they are independent, so the module waits for the slowest."""
    with ThreadPoolExecutor(len(ONE_PROBLEM)) as pool:
        yield [pool.submit(check, tmp_path_factory.mktemp("check"), text, *args) for text, args, _ in ONE_PROBLEM]


@pytest.mark.parametrize(("text", "args", "needle"), ONE_PROBLEM)
def test_one_problem_is_one_line(
    one_problem_checks: list[Future[tuple[int, list[str], str]]], text: str, args: tuple[str, ...], needle: str
) -> None:
    code, errors, out = one_problem_checks[ONE_PROBLEM.index((text, args, needle))].result(timeout=60)
    assert code == 2 and out == ""
    assert len(errors) == 1 and needle in errors[0], errors


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    result = cli("config", "check", "-c", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "nope.toml: no such file" in result.stderr


def test_check_needs_a_file(tmp_path: Path) -> None:
    result = cli("config", "check", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--config" in result.stderr
