"""A third-party plugin as a real installed distribution.

A tiny project (its own in-tree PEP 517 backend, so no network and no
``wheel`` package are needed) is ``pip install --target``-ed once per
session; ``firmware-host`` then runs in a subprocess with that directory on
PYTHONPATH, as it would after ``pip install fhp-demo``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from firmware_host import VirtualPort, discover_plugins
from tests.conftest import REPO, cli, cli_popen, read_jsonl, toml_config
from tests.test_plugins import assert_law, plugin_entry, task_entry

pytestmark = pytest.mark.timeout(60)

TICK = 0.05  # the demo plugin's interval in the run below
RUN_FOR = 2.0

BACKEND = '''
"""Just enough of PEP 517 to build this project's wheel."""
import base64, hashlib, os, zipfile

NAME, DIST, VERSION = "fhp_demo", "fhp-demo", "1.2.3"
ENTRY_POINTS = "[firmware_host.plugins]\\ndemo = fhp_demo\\nbroken = fhp_demo.broken\\n"


def _record(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    info = f"{NAME}-{VERSION}.dist-info"
    files = {}
    for module in sorted(os.listdir(NAME)):
        if module.endswith(".py"):
            with open(os.path.join(NAME, module), "rb") as f:
                files[f"{NAME}/{module}"] = f.read()
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\\nName: {DIST}\\nVersion: {VERSION}\\n".encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\\nGenerator: tiny\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    files[f"{info}/entry_points.txt"] = ENTRY_POINTS.encode()
    name = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as whl:
        for path, data in files.items():
            whl.writestr(path, data)
        record = [_record(p, d) for p, d in files.items()] + [f"{info}/RECORD,,"]
        whl.writestr(f"{info}/RECORD", "\\n".join(record) + "\\n")
    return name
'''

PLUGIN = '''
"""fhp-demo: a third-party firmware-host plugin."""
from firmware_host import PluginContext


def setup(ctx: PluginContext) -> None:
    options = ctx.take_options({"interval": (float, 1.0)})
    ctx.info["ticks"] = 0

    async def tick() -> None:
        ctx.info["ticks"] += 1

    ctx.every(options["interval"], tick, missed="skip", timeout=1.0, name="tick")
'''

BROKEN = """
raise ImportError("fhp_demo.broken needs libfoo, which is not installed")
"""


@pytest.fixture(scope="session")
def demo_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the installed ``fhp-demo`` distribution."""
    root = tmp_path_factory.mktemp("fhp-demo")
    project, site = root / "project", root / "site"
    (project / "fhp_demo").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        textwrap.dedent("""
        [build-system]
        requires = []
        build-backend = "tinybackend"
        backend-path = ["."]
    """),
        encoding="utf-8",
    )
    (project / "tinybackend.py").write_text(BACKEND, encoding="utf-8")
    (project / "fhp_demo" / "__init__.py").write_text(PLUGIN, encoding="utf-8")
    (project / "fhp_demo" / "broken.py").write_text(BROKEN, encoding="utf-8")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--target",
            str(site),
            str(project),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "fhp_demo-1.2.3.dist-info" / "entry_points.txt").exists()
    return site


def site_env(site: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(REPO), str(site)])}


def test_installed_plugin_is_discovered_in_process(demo_site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(demo_site))  # also invalidates the import caches
    found = discover_plugins()
    assert found["demo"].source == "fhp-demo 1.2.3" and found["demo"].value == "fhp_demo"
    assert callable(found["demo"].load().setup)
    with pytest.raises(ImportError, match="libfoo"):
        found["broken"].load()


def test_plugins_command_lists_the_installed_plugin(demo_site: Path, tmp_path: Path) -> None:
    proc = cli("plugins", "--json", env=site_env(demo_site))
    assert proc.returncode == 0, proc.stderr
    demo = plugin_entry(json.loads(proc.stdout), "demo")
    assert demo == {**demo, "enabled": False, "source": "fhp-demo 1.2.3", "state": "disabled"}

    cfg = toml_config(tmp_path / "c.toml", "[plugins.demo]\ninterval = 0.5\n\n[plugins.broken]\n")
    proc = cli("plugins", "-c", str(cfg), "--json", env=site_env(demo_site))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    demo, broken = plugin_entry(report, "demo"), plugin_entry(report, "broken")
    assert (demo["enabled"], demo["state"]) == (True, "ready")
    assert [(t["name"], t["interval"], t["missed_policy"], t["runs"]) for t in demo["tasks"]] == [
        ("tick", 0.5, "skip", 0)
    ]
    assert broken["state"] == "failed" and "libfoo" in broken["error"]

    proc = cli("plugins", "-c", str(cfg), env=site_env(demo_site))
    assert proc.returncode == 0, proc.stderr
    assert "fhp-demo 1.2.3" in proc.stdout and "tick" in proc.stdout


def test_installed_plugin_runs_at_its_interval_with_low_jitter(
    demo_site: Path, tmp_path: Path, short_tmp: Path, record_property: Any
) -> None:
    """Enabled from the config, its task runs every TICK s in a real ``run``;
    an entry point whose import fails is reported and the run goes on."""
    port = VirtualPort(str(short_tmp / "bench0"))
    jsonl, summary_path = tmp_path / "frames.jsonl", tmp_path / "summary.json"
    cfg = toml_config(
        tmp_path / "gw.toml",
        textwrap.dedent(f'''
        [control]
        socket = "{short_tmp / "c.sock"}"
        [buffer]
        flush_interval = 0.1
        [[devices]]
        name = "bench0"
        port = "{port.path}"
        codec = "lines"
        [[sinks]]
        type = "jsonl"
        path = "{jsonl}"
        [plugins.demo]
        interval = {TICK}
        [plugins.broken]
    '''),
    )
    try:
        proc = cli_popen(
            "run",
            "-c",
            str(cfg),
            "--duration",
            str(RUN_FOR),
            "-q",
            "--summary",
            str(summary_path),
            env=site_env(demo_site),
        )
        sent = 0
        while proc.poll() is None:  # a device talking at 50 Hz for the whole run
            sent += port.write_nowait(f"reading {sent}\n".encode()) > 0
            time.sleep(0.02)
        _out, err = proc.communicate(timeout=30)
    finally:
        port.close()
    assert proc.returncode == 0, err
    status = json.loads(summary_path.read_text(encoding="utf-8"))
    assert_law(status)
    dev = status["devices"]["bench0"]
    assert dev["frames"] > 0 and dev["flushed"] == dev["frames"] and len(read_jsonl(jsonl)) == dev["flushed"]

    broken = plugin_entry(status, "broken")
    assert broken["state"] == "failed" and "libfoo" in broken["error"] and broken["failures"] == 1
    assert "plugin broken: import failed" in err

    demo = plugin_entry(status, "demo")
    assert demo["source"] == "fhp-demo 1.2.3" and demo["state"] == "stopped"
    tick = task_entry(status, "demo", "tick")
    expected = RUN_FOR / TICK
    assert 0.7 * expected <= tick["runs"] <= expected + 1, tick
    assert demo["info"]["ticks"] == tick["runs"]
    assert tick["failures"] == 0 and tick["overruns"] == 0
    jitter = tick["jitter_ms"]
    print(
        f"\ntick jitter over {jitter['samples']} runs: p50 {jitter['p50']} ms, p99 {jitter['p99']} ms, "
        f"max {jitter['max']} ms"
    )
    record_property("tick_jitter_p50_ms", jitter["p50"])
    record_property("tick_jitter_p99_ms", jitter["p99"])
    # a shared CI machine is not idle: 50 ms here; the 5 ms idle target is the benchmark's
    assert jitter["p99"] < 50, jitter
