"""The shape of reconciler.edges.gates: public surface, one module per kind, one dispatch."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

import reconciler.edges.gates as gates
from reconciler.desired.schema import GATE_KINDS
from reconciler.edges.gates import GateChecker, GateResult, kinds
from reconciler.edges.gates.checker import HealthChecker
from reconciler.states import GateVerdict

PACKAGE = Path(gates.__file__).parent


def test_public_surface() -> None:
    assert sorted(gates.__all__) == [
        "GateChecker",
        "GateResult",
        "GateTarget",
        "MissingPlaceholder",
    ]
    checker: GateChecker = HealthChecker()  # mypy checks HealthChecker against the Protocol
    assert callable(checker.evaluate)


def test_importing_the_package_loads_no_adapter():
    # The rollout engine imports the package for its types: no HTTP client, no process machinery.
    heavy = (
        "httpx",
        "httpcore",
        "psutil",
        "reconciler.edges.gates.",
        "reconciler.support.processes",
    )
    code = (
        "import json, sys; import reconciler.edges.gates; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({heavy!r}))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_registry_has_one_module_per_schema_gate_kind():
    assert sorted(kinds.KINDS) == sorted(GATE_KINDS)
    modules = list(kinds.KINDS.values())
    assert len({id(m) for m in modules}) == len(GATE_KINDS)
    for kind, module in kinds.KINDS.items():
        assert kind == module.KIND
        assert module.__name__ == f"reconciler.edges.gates.{kind}"
        for name in ("texts", "render", "attempt"):
            assert callable(getattr(module, name)), (kind, name)
        fields = module.Fields  # type: ignore[attr-defined]
        assert dataclasses.is_dataclass(fields) and fields.__dataclass_params__.frozen
    with pytest.raises(KeyError, match="unknown gate kind 'smtp'"):
        kinds.get("smtp")


def _kind_literals_and_gate_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and node.value in GATE_KINDS:
            found.append(f"{path.name}:{node.lineno}: {node.value!r}")
        if isinstance(node, ast.ImportFrom) and node.module == "reconciler.desired.schema":
            found += [
                f"{path.name}:{node.lineno}: imports {a.name}"
                for a in node.names
                if a.name.endswith("Gate")
            ]
        if isinstance(node, ast.Attribute) and node.attr in GATE_KINDS:
            found.append(f"{path.name}:{node.lineno}: .{node.attr}")
    return found


def test_only_the_registry_dispatches_on_the_kind():
    # The kind modules, their registry, and web.py (where "http" is a URL scheme) aside.
    skip = {f"{kind}.py" for kind in GATE_KINDS} | {"kinds.py", "web.py"}
    others = [p for p in PACKAGE.glob("*.py") if p.name not in skip]
    assert {p.name for p in others} >= {"__init__.py", "checker.py", "templates.py"}
    assert [hit for p in others for hit in _kind_literals_and_gate_imports(p)] == []


@pytest.mark.parametrize(
    ("passed", "inconclusive", "verdict"),
    [
        (True, False, GateVerdict.PASSED),
        (False, False, GateVerdict.FAILED),
        (False, True, GateVerdict.INCONCLUSIVE),
    ],
)
def test_verdict(passed, inconclusive, verdict):
    result = GateResult("health", "http", "web1", "shop", passed, inconclusive, 2, "x", 0.12345)
    assert result.verdict is verdict


def test_as_dict_is_what_the_store_journals():
    result = GateResult("health", "http", "web1", "shop", True, False, 2, "GET x -> 200", 0.12345)
    assert result.as_dict() == {
        "gate": "health",
        "kind": "http",
        "host": "web1",
        "app": "shop",
        "passed": True,
        "inconclusive": False,
        "attempts": 2,
        "detail": "GET x -> 200",
        "duration_s": 0.123,
    }


def test_every_module_states_its_contract_and_stays_small():
    for path in [*PACKAGE.glob("*.py"), PACKAGE.parents[1] / "support" / "processes.py"]:
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{path.name} has no module docstring"
        assert len(path.read_text().splitlines()) <= 400, path.name
