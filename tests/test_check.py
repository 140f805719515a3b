"""The validation toolkit (firmware_host.config._check) on its own: every
check's accept and reject edges, and every failure one line naming where."""

from __future__ import annotations

import ast
import datetime as dt
import math
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from firmware_host.config._check import (
    MAX_CONFIG_BYTES,
    Checker,
    OptionSpec,
    check_options,
    describe,
    expected_kind,
    is_integer,
    is_number,
    number_text,
    parse_toml,
    read_toml,
)
from firmware_host.errors import BoardError, ConfigError

pytestmark = pytest.mark.timeout(30)

PACKAGE = Path(__file__).resolve().parents[1] / "firmware_host"
HUGE = 10**400  # TOML reads a 400-digit integer as this; no float holds it


def fails(call: Any, *args: Any, **kwargs: Any) -> str:
    """The one-line message ``call`` fails with."""
    with pytest.raises(ConfigError) as info:
        call(*args, **kwargs)
    text = str(info.value)
    assert "\n" not in text and "\r" not in text
    return text


@pytest.fixture
def check() -> Checker:
    return Checker("f.toml")


# --------------------------------------------------------------------- values


def test_is_integer_refuses_bool_and_float() -> None:
    assert is_integer(0) and is_integer(-5) and is_integer(HUGE)
    assert not is_integer(True) and not is_integer(False)
    assert not is_integer(1.0) and not is_integer("1") and not is_integer(None)


def test_is_number_takes_ints_and_finite_floats_only() -> None:
    assert is_number(0) and is_number(5) and is_number(0.5) and is_number(-1e300)
    assert not is_number(True) and not is_number(False)
    assert not is_number(math.inf) and not is_number(-math.inf) and not is_number(math.nan)
    assert not is_number(HUGE)  # math.isfinite would raise OverflowError on it
    assert not is_number("1") and not is_number(None)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (False, "false"),
        ("fast", '"fast"'),
        ("two\nlines\u2028", '"two\\nlines\\u2028"'),
        (5, "5"),
        (10**29, str(10**29)),
        (10**30, "a very large integer"),
        pytest.param(-HUGE, "a very large integer", id="huge-int"),
        (0.5, "0.5"),
        (math.inf, "inf"),
        ({"a": 1}, "a table"),
        ([1], "an array"),
        ((1,), "an array"),
        (dt.date(2024, 1, 2), "a date/time (2024-01-02)"),
        (None, "a NoneType"),
    ],
)
def test_describe(value: object, text: str) -> None:
    assert describe(value) == text


def test_describe_bounds_a_long_string() -> None:
    assert describe("x" * 58) == '"' + "x" * 58 + '"'  # 60 characters: shown whole
    shown = describe("x" * 59)
    assert shown == '"' + "x" * 55 + '..."' and len(shown) == 60  # never longer


def test_number_text_and_expected_kind() -> None:
    assert (number_text(5), number_text(5.0), number_text(0.25)) == ("5", "5", "0.25")
    assert expected_kind(int) == "an integer" and expected_kind(float) == "a finite number"
    assert expected_kind(bool) == "true or false" and expected_kind(str) == "a string"
    assert expected_kind(bytes) == "a bytes"


# --------------------------------------------------------------------- the checker


def test_fail_names_source_and_key_and_drops_the_chained_cause(check: Checker) -> None:
    def fail_while_handling() -> None:
        try:
            raise OSError("noise")
        except OSError:
            check.fail("a.b", "what is wrong")

    with pytest.raises(ConfigError) as info:
        fail_while_handling()
    err = info.value
    assert str(err) == "f.toml: a.b: what is wrong"
    assert (err.source, err.key, err.message) == ("f.toml", "a.b", "what is wrong")
    assert err.__cause__ is None and err.__suppress_context__  # no "During handling..." in a traceback
    assert fails(check.fail, None, "no key") == "f.toml: no key"


def test_the_error_kind_is_the_checkers() -> None:
    with pytest.raises(BoardError, match=r"^b\.toml: rate: expected a finite number > 0, got 0$"):
        Checker("b.toml", BoardError).number(0, "rate", gt=0)


def test_table(check: Checker) -> None:
    assert check.table({"a": 1}, "t") == {"a": 1}
    assert fails(check.table, [], "t") == "f.toml: t: expected a table, got an array"
    assert fails(check.table, 3, None, "a table of settings") == "f.toml: expected a table of settings, got 3"


def test_keys(check: Checker) -> None:
    check.keys({"a": 1, "b": 2}, {"a", "b", "c"}, "[x]")
    check.keys({}, set(), None)
    assert fails(check.keys, {"a": 1, "z": 2}, {"b", "a"}, "[x]") == "f.toml: unknown key 'z' in [x] (known: a, b)"
    assert fails(check.keys, {"z": 2}, {"a"}, None) == "f.toml: unknown key 'z' at the top level (known: a)"


def test_integer_edges(check: Checker) -> None:
    assert check.integer(0, "k", ge=0) == 0
    assert check.integer(1, "k", gt=0) == 1
    assert check.integer(0xEF, "k", ge=0, le=0xEF) == 0xEF
    assert check.integer(HUGE, "k") == HUGE  # no bound given, none applied
    assert fails(check.integer, -1, "k", ge=0) == "f.toml: k: expected an integer >= 0, got -1"
    assert fails(check.integer, 0, "k", gt=0) == "f.toml: k: expected an integer > 0, got 0"
    assert fails(check.integer, 0xF0, "k", ge=0, le=0xEF) == "f.toml: k: expected an integer from 0 to 239, got 240"
    assert fails(check.integer, 11, "k", le=10) == "f.toml: k: expected an integer <= 10, got 11"


@pytest.mark.parametrize(("value", "shown"), [(True, "true"), (False, "false"), (1.0, "1.0"), ("1", '"1"')])
def test_integer_refuses_non_integers_bool_included(check: Checker, value: object, shown: str) -> None:
    assert fails(check.integer, value, "k") == f"f.toml: k: expected an integer, got {shown}"


def test_number_edges(check: Checker) -> None:
    value = check.number(5, "k")
    assert value == 5.0 and type(value) is float  # an int is accepted where a float is expected
    assert check.number(0, "k", ge=0) == 0.0
    assert check.number(1e-9, "k", gt=0) == 1e-9
    assert fails(check.number, -0.5, "k", ge=0) == "f.toml: k: expected a finite number >= 0, got -0.5"
    assert fails(check.number, 0.0, "k", gt=0) == "f.toml: k: expected a finite number > 0, got 0.0"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        (math.nan, "nan"),
        pytest.param(HUGE, "a very large integer", id="huge-int"),
        (True, "true"),
        ("5", '"5"'),
    ],
)
def test_number_refuses_non_finite_and_non_numbers(check: Checker, value: object, shown: str) -> None:
    assert fails(check.number, value, "k") == f"f.toml: k: expected a finite number, got {shown}"


def test_string(check: Checker) -> None:
    assert check.string("x", "k") == "x"
    assert fails(check.string, "", "k") == 'f.toml: k: expected a non-empty string, got ""'
    assert fails(check.string, "a\x00b", "k", "a path") == 'f.toml: k: expected a path, got "a\\u0000b"'
    assert fails(check.string, 3, "k") == "f.toml: k: expected a non-empty string, got 3"


def test_one_of(check: Checker) -> None:
    assert check.one_of("b", "k", ("a", "b")) == "b"
    assert fails(check.one_of, "c", "k", ("a", "b")) == 'f.toml: k: expected one of a, b, got "c"'
    assert fails(check.one_of, ["a"], "k", ("a", "b")) == "f.toml: k: expected one of a, b, got an array"


def test_name(check: Checker) -> None:
    assert check.name("a" * 64, "k", "device") == "a" * 64
    assert check.name("imu-0_x.y", "k", "device") == "imu-0_x.y"
    for bad in ("a" * 65, "", "imu 0", "ünï", 3):
        assert fails(check.name, bad, "k", "board").startswith("f.toml: k: expected a board name (1 to 64 letters")


@pytest.mark.parametrize(("value", "parsed"), [(0, 0), (0xFFFF, 0xFFFF), ("0x0483", 0x483), ("374B", 0x374B)])
def test_usb_id_accepts(check: Checker, value: object, parsed: int) -> None:
    assert check.usb_id(value, "vid") == parsed


@pytest.mark.parametrize("value", [-1, 0x10000, True, 1.0, "0x", "0x12345", "0xZZ", "", None])
def test_usb_id_refuses(check: Checker, value: object) -> None:
    text = fails(check.usb_id, value, "vid")
    assert text.startswith("f.toml: vid: expected a USB id: an integer from 0 to 0xFFFF")
    assert text.endswith(f"got {describe(value)}")


def test_codec_option_keys(check: Checker) -> None:
    check.codec_option_keys("fh1", ["max_payload"], "")
    check.codec_option_keys("cbor", ["anything"], "")  # a plugin codec's options pass
    assert (
        fails(check.codec_option_keys, "fh1", ["max_line"], "devices[0].")
        == "f.toml: devices[0].max_line: codec 'fh1' has no option 'max_line' (it takes: max_payload)"
    )
    assert (
        fails(check.codec_option_keys, "nmea", ["max_line"], "")
        == "f.toml: max_line: codec 'nmea' has no option 'max_line' (it takes: no options)"
    )


# --------------------------------------------------------------------- TOML files


def test_read_toml(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[buffer]\ncapacity = 5\n", encoding="utf-8")
    assert read_toml(path) == (str(path), {"buffer": {"capacity": 5}})
    assert read_toml(str(path))[1] == {"buffer": {"capacity": 5}}


def test_read_toml_size_bound_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b"#" + b"x" * (MAX_CONFIG_BYTES - 2) + b"\n")
    assert read_toml(path)[1] == {}  # exactly MAX_CONFIG_BYTES: accepted
    path.write_bytes(b"#" + b"x" * (MAX_CONFIG_BYTES - 1) + b"\n")
    assert fails(read_toml, path) == (
        f"{path}: file is larger than 1 MiB; expected a TOML file of at most {MAX_CONFIG_BYTES} bytes"
    )


def test_parse_toml_size_bound_and_error_kind() -> None:
    with pytest.raises(BoardError, match=r"^b\.toml: file is larger than 1 MiB"):
        parse_toml("b.toml", b" " * (MAX_CONFIG_BYTES + 1), BoardError)
    assert parse_toml("b.toml", b"a = 1\n") == {"a": 1}


def test_read_toml_refuses_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b"a = 1 # \xff\n")
    assert fails(read_toml, path) == f"{path}: not valid UTF-8 (byte 8); TOML files must be UTF-8"


@pytest.mark.timeout(5)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_read_toml_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    os.mkfifo(path)  # no writer: a blocking open would hang until the timeout
    assert fails(read_toml, path) == f"{path}: not a regular file, expected a TOML file"


def test_read_toml_file_errors(tmp_path: Path) -> None:
    assert fails(read_toml, tmp_path / "none.toml") == f"{tmp_path / 'none.toml'}: no such file"
    assert fails(read_toml, tmp_path) == f"{tmp_path}: is a directory, expected a TOML file"
    with pytest.raises(BoardError, match="no such file"):
        read_toml(tmp_path / "none.toml", BoardError)


def test_read_toml_syntax_error_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("a = \n[b\n", encoding="utf-8")
    assert fails(read_toml, path).startswith(f"{path}: TOML syntax error: ")


# --------------------------------------------------------------------- option tables


def option_error(key: str, message: str) -> ConfigError:
    return ConfigError(message, source="o", key=key)


SPEC: OptionSpec = {"path": (str, ...), "interval": (float, 1.0), "count": (int, 3), "sync": (bool, False)}


def test_check_options_fills_defaults_and_keeps_given_values() -> None:
    assert check_options({"path": "p"}, SPEC, option_error) == {"path": "p", "interval": 1.0, "count": 3, "sync": False}
    # types only: ranges, and what a string may hold, are the owner's to judge
    given = {"path": "", "interval": 0.5, "count": -1, "sync": True}
    assert check_options(given, SPEC, option_error) == given
    assert check_options({"path": "a\nb"}, SPEC, option_error)["path"] == "a\nb"
    assert check_options({}, {"x": (float, None)}, option_error) == {"x": None}  # defaults are not checked


def test_check_options_accepts_an_int_as_a_float() -> None:
    interval = check_options({"path": "p", "interval": 2}, SPEC, option_error)["interval"]
    assert interval == 2.0 and type(interval) is float


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"path": "p", "intervall": 1}, "o: intervall: unknown option (known: count, interval, path, sync)"),
        ({"path": "p", "b": 1, "a": 1}, "o: a: unknown option (known: count, interval, path, sync)"),
        ({}, "o: path: required option is missing"),
        ({"path": 3}, "o: path: expected a string, got 3"),
        ({"path": "p", "count": True}, "o: count: expected an integer, got true"),
        ({"path": "p", "count": 1.0}, "o: count: expected an integer, got 1.0"),
        ({"path": "p", "interval": False}, "o: interval: expected a finite number, got false"),
        ({"path": "p", "interval": "fast"}, 'o: interval: expected a finite number, got "fast"'),
        ({"path": "p", "interval": math.inf}, "o: interval: expected a finite number, got inf"),
        ({"path": "p", "interval": math.nan}, "o: interval: expected a finite number, got nan"),
        ({"path": "p", "interval": HUGE}, "o: interval: expected a finite number, got a very large integer"),
        ({"path": "p", "sync": 1}, "o: sync: expected true or false, got 1"),
    ],
)
def test_check_options_refuses(options: dict[str, object], message: str) -> None:
    assert fails(check_options, options, SPEC, option_error) == message


def test_check_options_bounds_a_shown_value() -> None:
    text = fails(check_options, {"n": "line\n" * 10_000}, {"n": (int, 0)}, option_error)
    assert len(text) < 100


def test_check_options_with_an_empty_spec() -> None:
    assert check_options({}, {}, option_error) == {}
    assert fails(check_options, {"x": 1}, {}, option_error) == "o: x: unknown option (known: none)"


# --------------------------------------------------------------------- layering


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_the_toolkit_imports_only_the_standard_library_and_errors() -> None:
    for module in imported_modules(PACKAGE / "config" / "_check.py"):
        assert module == "firmware_host.errors" or module.split(".")[0] in sys.stdlib_module_names, module


def test_boards_does_not_import_schema() -> None:
    assert not {
        m for m in imported_modules(PACKAGE / "config" / "boards.py") if m.startswith("firmware_host.config.")
    } - {"firmware_host.config._check", "firmware_host.config.payloads"}


def test_codecs_stay_pure() -> None:
    allowed = {"firmware_host.frames", "firmware_host.errors", "firmware_host.config._check"}
    for path in sorted((PACKAGE / "codecs").glob("*.py")):
        for module in imported_modules(path):
            if module.startswith("firmware_host.") and not module.startswith("firmware_host.codecs"):
                assert module in allowed, f"{path.name} imports {module}"
