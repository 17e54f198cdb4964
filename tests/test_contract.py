"""The plugin contract: everything a plugin needs comes from ``plm_bench``, the built-ins prove it,
and what it declares (options, protocols, TOML tasks, names) is checked before any run."""

from __future__ import annotations

import ast
import re
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

import plm_bench
from plm_bench import BenchError, MethodSpec, Option
from plm_bench.plugins.protocols import load_protocol, settings_table

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "plugins.md"
sys.path.insert(0, str(Path(__file__).parent))
from test_plugin_discovery import bench, fake_distribution  # noqa: E402


def deep_imports(path: Path) -> list[str]:
    """``plm_bench.x`` modules a file imports (at any depth of the code, TYPE_CHECKING included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("plm_bench."):
            found.append(f"{path.name}:{node.lineno} from {node.module}")
        elif isinstance(node, ast.Import):
            found += [f"{path.name}:{node.lineno} import {a.name}" for a in node.names
                      if a.name.startswith("plm_bench.")]
    return found


def test_built_in_plugins_import_only_the_package_top():
    """The built-ins do what a third party's plugin can: nothing deeper than ``from plm_bench import``."""
    offenders = [hit for path in sorted((ROOT / "plugins").glob("*.py")) for hit in deep_imports(path)]
    assert not offenders, f"built-in plugins reach past the contract: {offenders}"


def test_the_check_catches_a_deep_import(tmp_path):
    module = tmp_path / "plugin.py"
    module.write_text("from plm_bench import hookimpl\nif True:\n    from plm_bench.plugins.specs import HeadSpec\n")
    assert deep_imports(module) == ["plugin.py:3 from plm_bench.plugins.specs"]


def test_every_name_the_docs_import_is_exported():
    block = re.search(r"```python\nfrom plm_bench import \((.*?)\n\)\n", DOCS.read_text(), re.S).group(1)
    names = re.findall(r"\b([A-Za-z_][A-Za-z_0-9]*)\b,", re.sub(r"#.*", "", block))
    assert {"load_protocol", "load_task", "ProtocolSpec", "TransformerBackbone", "failed_record", "Option"} <= {*names}
    assert set(names) <= set(plm_bench.__all__)
    for name in plm_bench.__all__:
        getattr(plm_bench, name)
    assert re.fullmatch(r"\d+\.\d+", plm_bench.CONTRACT_VERSION)


def test_a_moved_import_keeps_working_with_a_warning_naming_the_new_path():
    from plm_bench.models import backbone

    with pytest.warns(DeprecationWarning, match="moved to plm_bench.models.transformer.TransformerBackbone"):
        moved = backbone.TransformerBackbone
    assert moved is plm_bench.TransformerBackbone
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from plm_bench.models.backbone import Backbone  # noqa: F401  (not moved: no warning)


def module_imports(root: Path) -> dict[str, set[str]]:
    """Each core module and the core modules it imports, in-function imports included,
    ``TYPE_CHECKING`` blocks (never run) left out."""
    modules = {("plm_bench." + ".".join(f.relative_to(root).with_suffix("").parts)).removesuffix(".__init__"): f
               for f in root.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        deps = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("plm_bench"):
                deps |= {m for m in (node.module, *(f"{node.module}.{a.name}" for a in node.names)) if m in modules}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in modules}
        graph[name] = deps - {"plm_bench", name}
    return graph


def test_the_config_is_in_no_import_cycle():
    """config -> models.embedding_files -> run.protocol -> ... -> results.records -> config was one."""
    graph = module_imports(ROOT / "harness")
    seen, todo = set(), ["plm_bench.config"]
    while todo:
        for dep in graph[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    assert "plm_bench.config" not in seen
    assert not {m for m in seen if m.startswith(("plm_bench.run", "plm_bench.results"))}


def test_options_are_declared_checked_and_bare_defaults_still_work():
    spec = MethodSpec("m", default_lr=1e-3, options={"rank": Option(4, "Rank.", min=1), "mode": "a", "k": 2,
                                                     "names": ()})
    assert isinstance(spec.options["mode"], Option) and spec.options["k"].accepts() == "int"
    assert spec.resolve_options({"rank": 8, "names": "a,b"}) == {"k": 2, "mode": "a", "names": ["a", "b"], "rank": 8}
    for given, message in [({"rank": 0}, r"option rank=0: expected int >= 1"), ({"k": "x"}, "expected int"),
                           ({"rnak": 2}, r"has no option 'rnak' .*did you mean 'rank'\?")]:
        with pytest.raises(BenchError, match=message):
            spec.resolve_options(given)
    unset = MethodSpec("u", default_lr=1e-3, options={"size": Option(None, "Unset: the method picks.", type=int)})
    assert unset.resolve_options({}) == {"size": None} and unset.resolve_options({"size": 3}) == {"size": 3}
    with pytest.raises(BenchError, match="option size='3': expected int"):
        unset.resolve_options({"size": "3"})
    grown = MethodSpec("m", default_lr=1e-3, options={"new": Option("x", as_before="x")},
                       options_as_before={"old": 1})
    assert grown.as_before == {"old": 1, "new": "x"}


def test_several_method_options_after_one_flag():
    import click

    from plm_bench.cli.common import config_options

    @click.command()
    @config_options(only=("method_options", "seed"))
    def show(method_options: dict, seed: int) -> None:
        click.echo(f"{sorted(method_options.items())} {seed}")

    result = CliRunner().invoke(show, ["--method-option", "rank=8", "alpha=2", "--seed", "3",
                                       "--method-option", "ffn=true"])
    assert result.output.strip() == "[('alpha', 2), ('ffn', True), ('rank', 8)] 3", result.output


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_a_protocol_extends_another_and_states_only_what_it_changes(tmp_path, monkeypatch):
    from plm_bench import plugins

    quick = load_protocol(write(tmp_path / "quick.toml", """
        name = "quick"
        extends = "harness"
        [[rules]]
        settings = {epochs = 2, method_options = {rank = 8}}
    """))
    monkeypatch.setitem(plugins.catalog().items["protocol"], "quick", quick)
    run = {"task": "gb1", "level": "protein", "family": "esm2", "backbone": "esm2-8m", "method": "lora"}
    harness = plugins.get("protocol", "harness").settings_for(**run)
    assert quick.settings_for(**run) == {**harness, "epochs": 2,
                                         "method_options": {**harness.get("method_options", {}), "rank": 8}}
    loop = load_protocol(write(tmp_path / "loop.toml", 'name = "loop"\nextends = "quick"\n'))
    monkeypatch.setitem(plugins.catalog().items["protocol"], "loop", loop)
    monkeypatch.setitem(plugins.catalog().items["protocol"], "quick", quick.__class__(
        "quick", quick.rules, extends="loop"))
    with pytest.raises(BenchError, match="extends forms a cycle quick -> loop -> quick"):
        plugins.get("protocol", "quick").settings_for(**run)
    with pytest.raises(BenchError, match="unknown key 'extend'; did you mean 'extends'"):
        load_protocol(write(tmp_path / "typo.toml", 'name = "typo"\nextend = "harness"\n'))


def test_the_docs_table_of_protocol_settings_is_current():
    text = DOCS.read_text()
    start, end = "<!-- protocol-settings:start -->\n", "<!-- protocol-settings:end -->"
    current = text[text.index(start) + len(start):text.index(end)]
    assert current == settings_table(), (
        "docs/plugins.md's protocol settings table is stale: paste the output of "
        "`python -c 'from plm_bench.plugins.protocols import settings_table; print(settings_table(), end=\"\")'`")


def test_lookups_say_did_you_mean_and_name_broken_plugins(tmp_path):
    fake_distribution(tmp_path, "half-plugin", "half_plugin", """
        from plm_bench import HeadSpec, MethodSpec, hookimpl

        @hookimpl
        def register_heads(register):
            register(HeadSpec("half-head", ("protein",), lambda *a: None))

        @hookimpl
        def register_methods(register):
            register(MethodSpec("half-method", default_lr=1e-3))
            raise RuntimeError("boom half-way")
    """)
    fake_distribution(tmp_path, "nameless-plugin", "nameless_plugin", """
        from plm_bench import hookimpl

        @hookimpl
        def register_heads(register):
            register(42)
    """)
    listing = bench("list", "--check", path=tmp_path, COLUMNS="200")
    assert listing.returncode == 1
    assert "half-plugin:half_plugin" in listing.stderr and "boom half-way" in listing.stderr
    assert "register() got 42, which has no name" in listing.stderr
    assert "half-head" not in listing.stdout and "half-method" not in listing.stdout  # it registered nothing
    assert bench("list", "--check", COLUMNS="200").returncode == 0  # without it: nothing broken
    run = bench("run", "--backbone", "onehot", "--task", "gb1", "--method", "half-method", path=tmp_path,
                COLUMNS="300")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "unknown method 'half-method'" in run.stderr and "half-plugin:half_plugin" in run.stderr
    assert "may provide it" in run.stderr
    typo = bench("run", "--backbone", "onehot", "--task", "gb1", "--method", "lroa", COLUMNS="300")
    assert "did you mean 'lora'?" in typo.stderr


CHARGE_TOML = """
    name = "mini-charge"
    level = "protein"
    type = "regression"
    metric = "spearman"
    format = "csv"
    label_column = "charge"
    split_column = "split"
    [[sources]]
    file = "data.csv"
"""


def charge_rows(n: int = 60) -> str:
    import random

    rng = random.Random(0)
    rows = ["sequence,charge,split"]
    for i in range(n):
        s = "".join(rng.choice("ACDEKRST") for _ in range(rng.randint(8, 20)))
        rows.append(f"{s},{s.count('K') + s.count('R') - s.count('D') - s.count('E')},"
                    f"{'train' if i < 40 else 'valid' if i < 50 else 'test'}")
    return "\n".join(rows) + "\n"


def test_a_grid_runs_a_task_given_by_its_toml_path(tmp_path):
    (tmp_path / "tasks").mkdir()
    write(tmp_path / "tasks" / "charge.toml", CHARGE_TOML)
    (tmp_path / "tasks" / "data.csv").write_text(charge_rows())
    write(tmp_path / "grid.toml", """
        backbones = ["onehot"]
        tasks = ["tasks/charge.toml"]
        methods = ["frozen"]
        seeds = [1]
        [settings]
        epochs = 2
    """)
    result = bench("grid", str(tmp_path / "grid.toml"), "--store", str(tmp_path / "s.sqlite"), COLUMNS="200")
    assert result.returncode == 0, result.stderr
    assert re.search(r"mini-charge@[0-9a-f]{12}", result.stdout + result.stderr)


def test_profile_runs_without_a_batch_size(tmp_path):
    result = bench("profile", "--backbone", "esm2-8m", "--init", "random", "--method", "lora", "--no-envelope",
                   "--steps", "1", "--length", "16", "--device", "cpu", "--store", str(tmp_path / "s.sqlite"),
                   COLUMNS="200")
    assert result.returncode == 0, result.stderr


def test_the_example_package_builds_lists_and_runs_through_the_contract(tmp_path):
    """Acceptance: a TOML task, a method with a declared integer option, a head and a protocol that
    extends the harness's, from a package that imports only ``plm_bench``."""
    example = ROOT / "examples" / "plm-bench-example" / "plm_bench_example"
    assert not [hit for path in example.glob("*.py") for hit in deep_imports(path)]
    listing = bench("list", "--check", COLUMNS="250")
    assert listing.returncode == 0, listing.stderr
    for name in ("example-charge", "bitfit", "max-pool", "example-quick"):
        assert re.search(rf"{name}\s.*plm-bench-example", listing.stdout), name
    methods = bench("list", "method", COLUMNS="250").stdout
    assert "top=0 (int >= 0) Train only the last k bias vectors" in methods
    refused = bench("run", "--backbone", "physchem", "--task", "example-charge", "--method", "bitfit",
                    "--method-option", "top=-1", COLUMNS="250")
    assert refused.returncode == 2 and "option top=-1: expected int >= 0" in refused.stderr
    fetch = bench("data", "fetch", "example-charge", "--data-dir", str(tmp_path), COLUMNS="250")
    assert fetch.returncode == 2 and "beside its definition" in fetch.stderr  # nothing to fetch
    assert "example-charge" not in bench("data", "list", "--data-dir", str(tmp_path), COLUMNS="250").stdout
    store = tmp_path / "s.sqlite"
    result = bench("run", "--backbone", "physchem", "--task", "example-charge", "--method", "bitfit",
                   "--method-option", "top=1", "--head", "max-pool", "--protocol", "example-quick",
                   "--store", str(store), COLUMNS="250")
    assert result.returncode == 0, result.stderr
    from plm_bench.results.store import Store

    records = Store(store).records()
    assert [r["config"]["seed"] for r in records] == [1, 2]  # the protocol's seeds = 2
    assert {r["config"]["epochs"] for r in records} == {3}  # its epochs; the rest is the harness's
    assert {r["config"]["batch_size"] for r in records} == {8}
    # top=1: the last bias vector only (physchem's mix, 3 values) and the head (3 weights + 1 bias)
    assert {r["parameters"]["trainable"] for r in records} == {3 + 4}


def test_a_shipped_toml_task_reads_its_files_beside_it_and_checks_them(tmp_path, monkeypatch):
    import hashlib

    from plm_bench import load_task
    from plm_bench.tasks.sources import ALLOW_UNVERIFIED

    monkeypatch.delenv(ALLOW_UNVERIFIED, raising=False)
    data = charge_rows().encode()
    (tmp_path / "data.csv").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    path = write(tmp_path / "charge.toml", CHARGE_TOML + f'    sha256 = "{digest}"\n')
    task = load_task(path, data="beside")
    assert task.name == "mini-charge" and task.root == tmp_path  # its declared name: no digest
    splits = task.load(tmp_path / "elsewhere")  # the data folder plays no part
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [40, 10, 10]
    assert splits["train"][0].label == float(charge_rows().splitlines()[1].split(",")[1])
    (tmp_path / "data.csv").write_bytes(data.replace(b"train", b"valid", 1))
    with pytest.raises(BenchError, match="data.csv is corrupt .its checksum differs"):
        load_task(path, data="beside").load(tmp_path)
    unverified = write(tmp_path / "loose.toml", CHARGE_TOML)
    with pytest.raises(BenchError, match="allow-unverified"):
        load_task(unverified, data="beside").load(tmp_path)
    in_data_dir = load_task(path)
    assert in_data_dir.root is None
    with pytest.raises(BenchError, match="data=.*use one of data-dir, beside"):
        load_task(path, data="package")


def test_leaderboard_names_say_did_you_mean():
    from plm_bench.results.leaderboard import check_name

    with pytest.raises(BenchError, match=r"--where rnak: unknown setting; did you mean 'rank'\?"):
        check_name("--where", "rnak", ["backbone", "task"], ["rank", "alpha"])


def test_moved_task_internals_keep_working_with_one_warning_each():
    with pytest.warns(DeprecationWarning) as caught:
        from plm_bench_plugins.formats import FORMATS
        from plm_bench_plugins.tasks import task_from_file
    assert [str(w.message).split(" moved")[0] for w in caught] == [
        "plm_bench_plugins.formats.FORMATS", "plm_bench_plugins.tasks.task_from_file"]
    from plm_bench.tasks import formats, loading

    assert FORMATS is formats.FORMATS and task_from_file is loading.custom_task
