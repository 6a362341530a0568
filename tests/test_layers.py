"""The layers of ../shared/DESIGN.md, checked on the code: each module imports only from its own
layer or below (imports inside functions included), a strategy only from the vocabulary, the
matcher and the TA tools, and the simulator nothing of the client side."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sniper"

# module (or package prefix) -> layer; the most specific prefix wins
LAYERS = {
    "sniper.model": 0, "sniper.config": 0, "sniper.log": 0, "sniper.clock": 0, "sniper.auth": 0,
    "sniper._motif": 1, "sniper.motif": 1, "sniper.features": 1, "sniper.ta": 1, "sniper.journal": 1,
    "sniper.ws": 2, "sniper.rest": 2, "sniper.history": 2, "sniper.bars": 2, "sniper.sim": 2,
    "sniper.strategies": 3, "sniper.orders": 3, "sniper.risk": 3,
    "sniper.app": 4, "sniper.loop": 4, "sniper.metrics": 4, "sniper.health": 4,
    "sniper.daemon": 5, "sniper.backtest": 5,
    "sniper.cli": 6, "sniper.__main__": 6, "sniper": 0,
}
STRATEGY_MAY_IMPORT = ("sniper.model", "sniper.motif", "sniper.features", "sniper.ta", "sniper.strategies")
CLIENT_SIDE = ("sniper.ws", "sniper.rest", "sniper.orders", "sniper.risk", "sniper.journal", "sniper.app",
               "sniper.loop", "sniper.daemon", "sniper.strategies", "sniper.bars")


def layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    here = module_name(path).split(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = here[: len(here) - node.level + (1 if path.name == "__init__.py" else 0)]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
    return {m for m in found if m == "sniper" or m.startswith("sniper.") or m.startswith("tests")}


def modules():
    return sorted(PACKAGE.rglob("*.py")) + sorted(PACKAGE.rglob("*.pyx"))


def test_every_module_imports_only_its_layer_or_below():
    broken = []
    for path in modules():
        if path.suffix == ".pyx":
            continue
        me = module_name(path)
        for dep in imports(path):
            if dep.startswith("tests") or layer(dep) > layer(me):
                broken.append(f"{me} (layer {layer(me)}) imports {dep} (layer {layer(dep)})")
    assert not broken, "\n".join(broken)


def test_strategies_import_only_the_vocabulary_matcher_and_ta():
    for path in (PACKAGE / "strategies").rglob("*.py"):
        bad = [d for d in imports(path) if not d.startswith(STRATEGY_MAY_IMPORT)]
        assert not bad, f"{path.name} imports {bad}"


def test_the_simulator_imports_nothing_of_the_client_side():
    for path in (PACKAGE / "sim").rglob("*.py"):
        bad = [d for d in imports(path) if d.startswith(CLIENT_SIDE)]
        assert not bad, f"sim/{path.name} imports {bad}"


def test_the_check_sees_an_upward_import(tmp_path):
    assert layer("sniper.ws.state") == 2 and layer("sniper.app") == 4 and layer("sniper.sim.margin") == 2
    probe = PACKAGE / "model.py"
    assert "sniper.app" not in imports(probe)
    fake = tmp_path / "x.py"
    fake.write_text("def f():\n    from sniper.app import build\n")
    tree_imports = {n.module for n in ast.walk(ast.parse(fake.read_text())) if isinstance(n, ast.ImportFrom)}
    assert tree_imports == {"sniper.app"}
