"""The package layout: layer-0 modules import nothing above, registration beside definitions,
commands through entry points (a broken one is an error), the demo outside the core."""

from __future__ import annotations

import ast
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import creditlab as cl
from creditlab.errors import PluginError

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "creditlab"
LAYER0 = {"errors", "outputs", "atomic", "registry", "clikit", "_arrays", "_steps", "_kernels", "segments"}


def creditlab_imports(path: Path) -> set[str]:
    """Every creditlab module a file imports, at module level or inside functions, as dotted names."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0].startswith("creditlab"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if not module.split(".")[0].startswith("creditlab"):
                continue
            if node.module is None or module == "creditlab":  # `from . import x`: x is a module
                found.update(f"{module}.{a.name}" for a in node.names)
            else:
                found.add(module)
    return found


def test_the_import_scanner_reads_relative_and_lazy_imports():
    # a file in creditlab/advantage importing upwards lazily must be seen
    path = PACKAGE / "advantage" / "returns.py"
    assert {"creditlab._kernels", "creditlab.registry", "creditlab._adapters"} <= creditlab_imports(path)


@pytest.mark.parametrize("module", ["registry", "clikit", "errors", "outputs", "atomic"])
def test_layer0_modules_import_nothing_above_layer0(module):
    imported = creditlab_imports(PACKAGE / f"{module}.py")
    above = sorted(m for m in imported if m.split(".")[1] not in LAYER0)
    assert not above, f"creditlab.{module} imports {above} (layer 0 may import only {sorted(LAYER0)})"


def test_tables_never_import_the_container():
    # episodes builds on tables (from_table, to_table, read_episodes), never the reverse: no cycle
    assert "creditlab.episodes" not in creditlab_imports(PACKAGE / "tables.py")


def test_cli_imports_no_command_module():
    assert creditlab_imports(PACKAGE / "cli.py") <= {"creditlab.__version__", "creditlab.clikit", "creditlab.errors"}


def test_the_core_never_imports_the_demo():
    offenders = [
        str(p.relative_to(ROOT))
        for p in PACKAGE.rglob("*.py")
        if any(m.startswith("creditlab_demo") for m in creditlab_imports(p))
    ]
    assert not offenders


def test_methods_register_beside_their_definitions():
    # the adapter of each method lives in the module of the function it runs
    where = {
        "gae": "creditlab.advantage.returns",
        "monte_carlo": "creditlab.advantage.returns",
        "grpo": "creditlab.advantage.group",
        "gdpo": "creditlab.advantage.group",
        "ctan": "creditlab.advantage.normalizers",
        "potential_shaping": "creditlab.shaping.potential",
        "delta_process": "creditlab.shaping.process",
        "gated_accumulation": "creditlab.shaping.gated",
        "overlong_penalty": "creditlab.shaping.length",
        "gigpo": "creditlab.llm.gigpo",
        "turn_rloo": "creditlab.llm.turn_returns",
        "igpo": "creditlab.llm.igpo",
        "oprl": "creditlab.llm.implicit_prm",
        "process_turn_rewards": "creditlab.llm.process",
    }
    for name, module in where.items():
        assert cl.get_method(name).run.__module__ == module, name
    assert not (PACKAGE / "methods.py").exists() and not (PACKAGE / "llm" / "methods.py").exists()


# ------------------------------------------------------------------------------ commands


def test_commands_come_from_the_entry_point_group():
    from creditlab.cli import load_commands

    commands = load_commands()
    assert {"methods", "advantages", "bench", "report", "program", "demo"} <= set(commands)
    assert commands["demo"].run.__module__ == "creditlab_demo.cli"
    assert all(name == cmd.name for name, cmd in commands.items())


def _with_entry_points(monkeypatch, extra: list[EntryPoint]) -> None:
    import importlib.metadata as md

    real = md.entry_points

    def fake(**kw):
        found = list(real(**kw))
        return found + [ep for ep in extra if ep.group == kw.get("group")]

    monkeypatch.setattr(md, "entry_points", fake)


def test_a_command_that_fails_to_import_is_an_error_naming_it(monkeypatch, capsys):
    from creditlab.cli import load_commands, main

    broken = EntryPoint(name="llm", value="creditlab.llm.cli:llm", group="creditlab.commands")  # no such module
    _with_entry_points(monkeypatch, [broken])
    with pytest.raises(
        PluginError, match=r"command 'llm' \(creditlab.llm.cli:llm\).*failed to import: ModuleNotFoundError"
    ):
        load_commands()
    assert main(["methods"]) == 2
    assert "command 'llm'" in capsys.readouterr().err
    with pytest.raises(PluginError):
        main(["--debug", "methods"])


def test_an_entry_point_that_is_not_a_command_is_refused(monkeypatch):
    from creditlab.cli import load_commands

    _with_entry_points(
        monkeypatch, [EntryPoint(name="oops", value="creditlab.commands:run_methods", group="creditlab.commands")]
    )
    with pytest.raises(PluginError, match="must name a creditlab.clikit.Command called 'oops'"):
        load_commands()


def test_a_third_party_command_is_added(monkeypatch, capsys):
    import sys
    import types

    from creditlab.cli import main
    from creditlab.clikit import Command

    mod = types.ModuleType("creditlab_test_plugin")
    mod.hello = Command(
        "hello",
        "say hello",
        lambda p: p.add_argument("--name", default="world"),
        lambda args: print(f"hello {args.name}") or 0,
    )
    monkeypatch.setitem(sys.modules, "creditlab_test_plugin", mod)
    _with_entry_points(
        monkeypatch, [EntryPoint(name="hello", value="creditlab_test_plugin:hello", group="creditlab.commands")]
    )
    assert main(["hello", "--name", "credit"]) == 0
    assert capsys.readouterr().out == "hello credit\n"


def test_a_method_provider_that_fails_to_import_is_an_error_naming_it(monkeypatch):
    from creditlab import registry

    _with_entry_points(
        monkeypatch, [EntryPoint(name="nope", value="creditlab.no_such_provider", group="creditlab.methods")]
    )
    monkeypatch.setattr(registry, "_LOADED", False)
    with pytest.raises(PluginError, match=r"method provider 'nope' \(creditlab.no_such_provider\)"):
        registry.load_providers()
    monkeypatch.undo()
    registry.load_providers()  # the real providers load again


# ------------------------------------------------------------------------------ packaging


def test_version_has_one_source():
    from importlib.metadata import version

    tomllib = pytest.importorskip("tomllib")

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "creditlab.__version__"}
    assert version("creditlab") == cl.__version__


def test_package_data_names_files_that_exist():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for pattern in project["tool"]["setuptools"]["package-data"]["creditlab"]:
        assert list(PACKAGE.glob(pattern)), pattern
