"""packaging/firmware-host.service: hardened, Type=notify, and accepted by
``systemd-analyze verify`` where systemd is installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

UNIT = Path(__file__).resolve().parent.parent / "packaging" / "firmware-host.service"


def directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_unit_is_hardened_and_notifies() -> None:
    d = directives()
    expected = {
        "Type": ["notify"],
        "DynamicUser": ["yes"],
        "SupplementaryGroups": ["dialout"],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["yes"],
        "NoNewPrivileges": ["yes"],
        "StateDirectory": ["firmware-host"],
        "RuntimeDirectory": ["firmware-host"],
        "Restart": ["on-failure"],
    }
    for key, value in expected.items():
        assert d.get(key) == value, key
    assert d["WatchdogSec"] and d["ExecStart"][0].startswith("/")
    # the control socket lives in the RuntimeDirectory
    assert "--control /run/firmware-host/control.sock" in d["ExecStart"][0]


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    # verify checks that ExecStart= exists: point it at this environment's firmware-host
    exe = Path(sys.executable).parent / "firmware-host"
    if not exe.exists():
        pytest.skip(f"no firmware-host script next to {sys.executable} (pip install -e .)")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/firmware-host", str(exe)))
    done = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=50)
    # a bad directive is only a warning ("Unknown key", "Failed to parse"): none may name the unit
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if UNIT.name in line]
    assert done.returncode == 0 and complaints == [], done.stdout + done.stderr
