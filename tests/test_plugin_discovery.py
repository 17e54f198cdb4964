"""Entry-point discovery: built-ins, third-party packages, broken and clashing plugins."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def fake_distribution(root: Path, dist: str, module: str, source: str) -> None:
    """A minimal installed distribution on ``root``: a module plus dist-info entry points."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[plm_bench]\n{module} = {module}\n")


def bench(*args: str, path: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, **env}
    if path:
        environ["PYTHONPATH"] = str(path)
    return subprocess.run([sys.executable, "-c", "from plm_bench.cli import main; main()", *args],
                          capture_output=True, text=True, env=environ, timeout=120)


def test_builtins_are_listed_with_their_distribution():
    result = bench("list")
    assert result.returncode == 0, result.stderr
    for name in ("onehot", "esm2-8m", "gb1", "mlp-protein", "frozen", "full", "local"):
        assert name in result.stdout
    assert "plm-bench" in result.stdout


def test_broken_plugin_is_reported_and_the_rest_work(tmp_path):
    fake_distribution(tmp_path, "broken-plugin", "broken_plugin", "raise RuntimeError('boom at import')\n")
    result = bench("list", path=tmp_path, COLUMNS="200")
    assert result.returncode == 0, result.stderr
    assert "broken-plugin:broken_plugin" in result.stderr and "boom at import" in result.stderr
    assert "onehot" in result.stdout


def test_two_plugins_registering_one_name_is_an_error_naming_both(tmp_path):
    fake_distribution(tmp_path, "clash-plugin", "clash_plugin", """
        from plm_bench import hookimpl
        from plm_bench.plugins.specs import HeadSpec

        @hookimpl
        def register_heads(register):
            register(HeadSpec("mlp-protein", ("protein",), lambda *a: None))
    """)
    result = bench("list", path=tmp_path, COLUMNS="300")
    assert result.returncode == 2
    assert "mlp-protein" in result.stderr
    assert "clash-plugin" in result.stderr and "plm-bench" in result.stderr
    assert "Traceback" not in result.stderr


def test_example_package_is_discovered_and_runs(tmp_path):
    """The example third-party package (installed in the test environment) appears and runs."""
    listing = bench("list", COLUMNS="200")
    assert "physchem" in listing.stdout, "pip install ./examples/plm-bench-example first"
    assert "plm-bench-example" in listing.stdout
    result = bench("run", "--backbone", "physchem", "--task", "example-hydrophobicity", "--epochs", "3",
                   "--store", str(tmp_path / "runs.sqlite"), COLUMNS="200")
    assert result.returncode == 0, result.stderr
    assert "finished" in result.stdout


def test_help_does_not_import_torch():
    code = "import sys; from plm_bench.cli import main; sys.argv=['bench','--help']\n" \
           "try: main()\nexcept SystemExit: pass\nassert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_misspelled_hook_marks_the_plugin_broken(tmp_path):
    fake_distribution(tmp_path, "typo-plugin", "typo_plugin", """
        from plm_bench import hookimpl

        @hookimpl
        def register_backbone(register):  # the hook is register_backbones
            pass
    """)
    result = bench("list", path=tmp_path, COLUMNS="300")
    assert result.returncode == 0, result.stderr
    assert "typo-plugin:typo_plugin" in result.stderr and "register_backbone" in result.stderr


def test_a_hook_raising_a_bench_error_is_broken_not_fatal(tmp_path):
    fake_distribution(tmp_path, "raising-plugin", "raising_plugin", """
        from plm_bench import hookimpl
        from plm_bench.errors import BenchError

        @hookimpl
        def register_heads(register):
            raise BenchError("my config file is missing")
    """)
    result = bench("list", path=tmp_path, COLUMNS="300")
    assert result.returncode == 0, result.stderr
    assert "raising-plugin:raising_plugin" in result.stderr and "my config file is missing" in result.stderr
    assert "mlp-protein" in result.stdout


def test_load_plugins_env_var_limits_third_party_plugins(tmp_path):
    fake_distribution(tmp_path, "broken-plugin", "broken_plugin", "raise RuntimeError('boom at import')\n")
    none = bench("list", path=tmp_path, COLUMNS="300", PLM_BENCH_LOAD_PLUGINS="")
    assert none.returncode == 0 and "boom" not in none.stderr
    assert "onehot" in none.stdout and "physchem" not in none.stdout  # built-ins always load
    chosen = bench("list", path=tmp_path, COLUMNS="300", PLM_BENCH_LOAD_PLUGINS="plm-bench-example")
    assert "physchem" in chosen.stdout and "boom" not in chosen.stderr
