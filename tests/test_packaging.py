"""A built wheel works outside the checkout: registry.toml, tasks/ and plugins ship inside it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHECK = """
import plm_bench, plm_bench_plugins, sys
from plm_bench.plugins.discovery import catalog
from plm_bench.files import registry_path
site = sys.argv[1]
assert plm_bench.__file__.startswith(site), plm_bench.__file__
assert plm_bench_plugins.__file__.startswith(site), plm_bench_plugins.__file__
assert str(registry_path()).startswith(site), registry_path()
items = catalog().items
assert "gb1" in items["task"] and "esm2-8m" in items["backbone"], items
assert not catalog().broken, catalog().broken
print("wheel ok")
"""


def test_built_wheel_finds_registry_tasks_and_plugins(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(wheels), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("plm_bench-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    # The wheel's copy comes first on the path; run from elsewhere so the checkout is not importable.
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", CHECK, str(site)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "wheel ok" in result.stdout
