"""The house's rules, checked from the code itself: floors, no circles, modules a reader can hold, stage deps.

Every import of a pipeline module (at the top of a file or inside a function) is read with ast. The
packages form floors (FLOORS, bottom first): a module may import its own package and the floors below it,
never one above, so there is no import circle between packages, and the module-level graph has none
inside a package either. Each DVC stage's `deps` in dvc.yaml must be exactly the stage module and the
package folders it imports, directly or through other modules: a module a stage starts to import cannot
be left out of its cache key (a silent stale result), and a folder it no longer uses is not listed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

PIPELINE = ROOT / "pipeline"
# Bottom first. A package may import those before it; stages and cli may import every library package.
FLOORS = ["core", "formats", "model", "values", "cost", "sources", "census", "report", "answers", "stages", "serve",
          "cli"]  # fmt: skip
MAX_LINES = 420  # "no module over about 400 lines"


def modules() -> dict[str, Path]:
    """{dotted name: file} for every module of the package."""
    out = {}
    for path in sorted(PIPELINE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(path: Path, top_only: bool = False) -> set[str]:
    """The pipeline modules a file imports (anywhere in it, or at module level only)."""
    known = modules()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pipeline")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            submodules = {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known}
            found |= submodules
            if len(submodules) < len(node.names):  # names defined in the module itself (or its __init__)
                found.add(node.module)
    me = next((name for name, p in known.items() if p == path), None)
    return {name for name in found if name in known and name != me}


def floor(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def closure(module: str) -> set[str]:
    """The modules module needs to run: itself, what it imports, and so on (packages' __init__ included)."""
    known, seen, todo = modules(), set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parents = [".".join(name.split(".")[:i]) for i in range(2, len(name.split(".")))]
        todo += [p for p in parents if p in known] + sorted(imports(known[name]))
    return seen


def test_every_module_lives_in_a_floor_package():
    loose = [name for name in modules() if name != "pipeline" and floor(name) not in FLOORS]
    assert not loose, f"modules outside the packages of FLOORS: {loose}"


def test_imports_go_down_the_floors_never_up():
    up = []
    for name, path in modules().items():
        if name == "pipeline":
            continue
        mine = FLOORS.index(floor(name))
        for target in imports(path):
            if target != "pipeline" and FLOORS.index(floor(target)) > mine:
                up.append(f"{name} imports {target}")
    assert not up, up


def test_no_import_circle_at_module_level():
    graph = {name: imports(path, top_only=True) for name, path in modules().items()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("import circle: " + " -> ".join([*stack[stack.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_no_module_is_too_long_to_read():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_every_package_says_what_it_owns_and_may_import():
    for pkg in FLOORS:
        doc = ast.get_docstring(ast.parse((PIPELINE / pkg / "__init__.py").read_text()))
        says = doc and "import" in doc.lower()
        assert says, f"pipeline/{pkg}/__init__.py needs a docstring saying what it owns and may import"
    root = ast.parse((PIPELINE / "__init__.py").read_text())
    assert len(root.body) == 1 and ast.get_docstring(root), "pipeline/__init__.py holds the map, and nothing else"


def required_deps(stage: str) -> set[str]:
    """The stage module and every package folder it needs, as dvc.yaml writes them."""
    needed = closure(f"pipeline.stages.{stage}")
    deps = {f"pipeline/stages/{stage}.py"}
    deps |= {f"pipeline/{floor(m)}" for m in needed if floor(m) not in ("", "stages")}
    return deps


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_depends_on_exactly_the_code_it_runs(stage):
    spec = STAGES[stage].get("do", STAGES[stage])
    assert spec["cmd"].split()[:3] == ["python", "-m", f"pipeline.stages.{stage}"], "stage name = module name"
    listed = {d if isinstance(d, str) else next(iter(d)) for d in spec["deps"]}
    code = {d for d in listed if d.startswith("pipeline")}
    assert code == required_deps(stage), f"dvc.yaml {stage}: deps {sorted(code)}, needed {sorted(required_deps(stage))}"


CLI_LINES = 450  # the doors only translate: hmp's modules together (issue 28)
MAX_FUNCTION_LINES = 80


def test_the_command_line_is_a_thin_door():
    lines = sum(len(p.read_text().splitlines()) for p in (PIPELINE / "cli").glob("*.py"))
    assert lines < CLI_LINES, f"pipeline/cli/ holds {lines} lines: library logic belongs under pipeline/answers/"


def test_no_function_is_too_long_to_read():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if (n := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {n} lines")
    assert not long, long


def _imported_modules(tree: ast.AST) -> dict[str, str]:
    """{local name: module} for `import a.b as x` and `from a import b` of modules, anywhere in a file."""
    known, out = modules(), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {(a.asname or a.name.split(".")[0]): a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {(a.asname or a.name): f"{node.module}.{a.name}" for a in node.names}
    return {k: v for k, v in out.items() if v in known or not v.startswith("pipeline")}


def test_no_module_uses_another_modules_private_names():
    """A leading underscore says "this module's own": another module reaching for it (ours or a library's) is
    a coupling nobody can see from the name's owner."""
    crossing = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = _imported_modules(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                crossing += [f"{name}: from {node.module} import {a.name}" for a in node.names if _private(a.name)]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and _private(node.attr):
                if node.value.id in imported:
                    crossing.append(f"{name}: {node.value.id}.{node.attr}")
    assert not crossing, crossing


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_the_model_prefix_of_an_error_is_written_in_one_place():
    """Errors are data (PipelineError's model field); the one line "model 'NAME': ..." is rendered by
    core/errors.py alone, never typed into a message or taken apart again."""
    writers = [name for name, path in modules().items() if "model '" in path.read_text(encoding="utf-8")]
    assert writers == ["pipeline.core.errors"], writers
