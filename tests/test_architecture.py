"""The package's architecture, read from its imports (``ast``, nothing imported).

The floors are defined once, in ``tools/module_map.py`` (FLOORS); that tool also writes the
module diagram of docs/architecture.md. Checked here: every module lies on a floor, no import
runs from a lower floor to a higher one, no import cycle, nothing but the registry imports a
protocol, and the diagram in the docs is the one the imports give today.
"""
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load_tool():
    spec = importlib.util.spec_from_file_location("module_map", REPO / "tools" / "module_map.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


module_map = _load_tool()


@pytest.fixture(scope="module")
def modules():
    return module_map.read_package(REPO)


def test_the_package_is_read(modules):
    """The reader finds the modules and their imports (a guard against checking nothing)."""
    assert len(modules) > 30
    assert "brainsnn.models" in modules["brainsnn.engine.neuron"].imports
    assert "brainsnn.experiments.registry" in modules["brainsnn.cli"].imports
    assert "torch" in modules["brainsnn.engine.neuron"].libraries


def test_every_module_lies_on_a_floor(modules):
    missing = module_map.unplaced(modules)
    assert not missing, ("modules on no floor (add their subpackage or module to FLOORS in "
                         f"tools/module_map.py): {missing}")


def test_no_import_from_a_lower_floor_to_a_higher_one(modules):
    upward = module_map.upward_imports(modules)
    assert not upward, "imports that run up a floor:\n" + "\n".join(upward)


def test_no_import_cycle(modules):
    cycles = module_map.import_cycles(modules)
    assert not cycles, "import cycles among brainsnn modules:\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_only_the_registry_imports_protocols(modules):
    found = module_map.protocol_imports(modules)
    assert not found, "protocols imported outside the registry:\n" + "\n".join(found)


def test_the_diagram_in_the_docs_is_up_to_date(modules):
    text = (REPO / "docs" / "architecture.md").read_text()
    expected = module_map.with_map(text, module_map.render(modules))
    assert text == expected, "docs/architecture.md is out of date: run python tools/module_map.py --write"


# -- the checks can fail: a small package in a temporary folder ------------------------------

def _write(root, files):
    for rel, source in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)


def test_the_checks_find_an_upward_import_a_cycle_and_a_protocol_import(tmp_path):
    _write(tmp_path, {
        "brainsnn/__init__.py": "",
        "brainsnn/models.py": "from brainsnn.engine import neuron\n",          # floor 0 -> 1
        "brainsnn/engine/__init__.py": "",
        "brainsnn/engine/neuron.py": "from . import network\n",                  # relative
        "brainsnn/engine/network.py": "def f():\n    import brainsnn.engine.neuron\n",
        "brainsnn/experiments/__init__.py": "",
        "brainsnn/experiments/registry.py":
            "import importlib\nimportlib.import_module(f'brainsnn.experiments.protocols.{1}')\n",
        "brainsnn/experiments/protocols/__init__.py": "",
        "brainsnn/experiments/protocols/a.py": "from brainsnn.experiments.protocols import b\n",
        "brainsnn/experiments/protocols/b.py": "",
        "brainsnn/extra.py": "",
    })
    mods = module_map.read_package(tmp_path)
    up = module_map.upward_imports(mods)
    assert len(up) == 1 and up[0].startswith("brainsnn.models (floor 0) imports brainsnn.engine.neuron")
    assert module_map.import_cycles(mods) == [["brainsnn.engine.network", "brainsnn.engine.neuron"]]
    found = module_map.protocol_imports(mods)
    assert len(found) == 1 and "brainsnn.experiments.protocols.a imports " \
        "brainsnn.experiments.protocols.b" in found[0]
    assert module_map.unplaced(mods) == ["brainsnn.extra"]


def test_a_stale_diagram_is_seen(modules):
    text = f"intro\n{module_map.BEGIN}\nold diagram\n{module_map.END}\noutro\n"
    new = module_map.with_map(text, module_map.render(modules))
    assert new != text and new.startswith("intro\n") and new.endswith("outro\n")
    assert module_map.with_map(new, module_map.render(modules)) == new
