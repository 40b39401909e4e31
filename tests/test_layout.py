"""The package layout's import rules (DESIGN.md, "Layout"), read from the source with ``ast``: arrows run
downward only. Every ``import`` counts, those inside functions too.

- foundations (``sparse``, ``models``, ``clustering``, ``metrics``, ``vision``, ``viz``, ``callbacks``, and
  ``training``, what both methods' LightningModules share) import no data, no generator and no method;
- ``data`` (readers, datasets, generic data modules) imports only foundations: a method's preparation
  step plugs into a data module from the method's side (``unsup3d.<method>.datamodules``);
- ``synthetic`` (the generators and their data modules) imports data and foundations, no method;
- ``pointdc`` and ``stssl`` never import each other;
- the commands (``cli``, ``evaluate``, ...) import one another without a circle.
Also the sizes the layout promises: ``data/`` at most ~5,000 lines, no module over ~400.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "unsup3d"

FOUNDATIONS = {"sparse", "models", "clustering", "metrics", "vision", "viz", "callbacks", "training"}
METHODS = {"pointdc", "stssl"}
#: what each package may import besides itself
ALLOWED = {
    **{name: FOUNDATIONS for name in FOUNDATIONS},
    "data": FOUNDATIONS,
    "synthetic": FOUNDATIONS | {"data"},
    "pointdc": FOUNDATIONS | {"data", "synthetic"},
    "stssl": FOUNDATIONS | {"data", "synthetic"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The ``unsup3d.*`` modules that ``path`` imports (``from unsup3d.x import y`` names both
    ``unsup3d.x`` and ``unsup3d.x.y``: y may be a module)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m == "unsup3d" or m.startswith("unsup3d.")}


def _top(module: str) -> str:
    """The package (or top-level module, e.g. ``cli``) of an ``unsup3d.*`` module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


SOURCES = sorted(SRC.rglob("*.py"))
GRAPH = {_module_name(p): _imports(p) for p in SOURCES}
KNOWN = set(GRAPH)


def test_every_package_is_placed() -> None:
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages == set(ALLOWED), "a new package needs its place in the layout (and in ALLOWED)"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_arrows_run_downward(package: str) -> None:
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if _top(module) == package
        for target in targets
        if target in KNOWN and _top(target) not in ALLOWED[package] | {package}
    )
    assert not wrong, "\n".join(wrong)


def test_no_method_imports_the_other() -> None:
    for a, b in (("pointdc", "stssl"), ("stssl", "pointdc")):
        assert not [m for m, ts in GRAPH.items() if _top(m) == a and any(_top(t) == b for t in ts)]


def test_the_commands_import_no_circle() -> None:
    commands = {m for m in GRAPH if _top(m) not in ALLOWED and m != "unsup3d"}
    assert {"unsup3d.cli", "unsup3d.evaluate", "unsup3d.quickstart"} <= commands
    edges = {m: {t for t in GRAPH[m] if t in commands and t != m} for m in commands}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, "import circle: " + " -> ".join([*path, module])
        if module not in done:
            for target in edges[module]:
                visit(target, (*path, module))
            done.add(module)

    for module in sorted(commands):
        visit(module, ())


def test_data_stays_small_and_modules_short() -> None:
    lines = {p: len(p.read_text().splitlines()) for p in SOURCES}
    data = sum(n for p, n in lines.items() if p.relative_to(SRC).parts[0] == "data")
    assert data <= 5000, f"data/ holds {data} lines"
    long = {str(p.relative_to(SRC)): n for p, n in lines.items() if n > 410}
    assert not long, long
