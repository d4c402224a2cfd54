"""The package's import graph, read from the source with `ast`: no circles, and no module imports a layer above it.

Edges are the imports that run: module-level ones and function-local (lazy) ones. Imports under
`if TYPE_CHECKING:` are annotations only and are left out. A lazy import that would break a rule is
allowed only when `DOCUMENTED_LAZY` names it with the reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "lens_audio"

# Layers, lowest first: a module may import its own layer or those below it, never one above.
LAYERS: dict[str, int] = {
    "lens_audio.checks": 0,  # range checks of numbers (API and CLI): the standard library only
    "lens_audio.files": 0,  # atomic writes that name the file: the standard library only
    "lens_audio.inputs": 0,  # audio files, frame arithmetic, batches: no model needed
    "lens_audio.timing": 0,  # benchmark helpers (torch, the standard library and `files`)
    "lens_audio.model": 1,  # the hooked port, its loading and the one registry of named models
    "lens_audio": 1,  # the facade: re-exports inputs and model (its lazy `explore` is documented below)
    "lens_audio.train": 1,  # one training loop and one resumable run folder (organisms and SAEs)
    "lens_audio.analysis": 2,  # listening signal, heads, lens, patching, ablation, probes, steering/
    "lens_audio.benchmark": 3,  # the MMAU harness: loading, prompts, scoring, runner, run files, manifests, parallel
    "lens_audio.paper": 4,  # the paper's experiment: profile, SteeringSpec, Experiment, results, fast path
    "lens_audio.organisms": 5,  # the shipped models: tasks, recipes, checkpoints, benchmarks, cards, acceptance
    "lens_audio.plots": 5,  # drawing only; imported by figures, the explorer and SAE dashboards
    "lens_audio.figure_inputs": 5,  # what the figures draw, saved beside results.json (re-export without a model)
    "lens_audio.figures": 6,
    "lens_audio.explorer": 6,
    "lens_audio.report_page": 6,  # report.html from an ExperimentResult; imported by figures
    "lens_audio.sae": 6,  # SAEs on hook points: training, splicing, dashboards (reuse the explorer's views)
    "lens_audio.workshop": 7,  # teaching only: the sessions' checkers
    "lens_audio.cli": 8,  # one module per command group
    "lens_audio.evaluation": 8,  # forwarding only: the old home of benchmark/ and paper/, for one release
    "lens_audio.testing": 8,  # for tests and benchmarks: nothing in the package imports it
}
# drawing: figures, the explorer and the SAE dashboard (its token charts share plots.tokens with the explorer)
ONLY_IMPORTED_BY = {  # the report page places the figures' files, so it reads their export scale
    "lens_audio.plots": {"lens_audio.figures", "lens_audio.report_page", "lens_audio.explorer", "lens_audio.sae"}
}
DOCUMENTED_LAZY = {
    ("lens_audio", "lens_audio.explorer"): "`lens_audio.explore` resolves on first attribute access (module "
    "__getattr__), after the package has loaded, so the facade does not pull in plotly and the widget stack",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def unit(module: str) -> str:
    """The package or top-level module a module belongs to, e.g. lens_audio.model.loading -> lens_audio.model."""
    return ".".join(module.split(".")[:2])


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    # `from package import submodule` imports the submodule; `from module import name` the module.
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def imports_of(module: str) -> list[tuple[str, bool, int]]:
    """(imported lens_audio module, lazy?, line) for each import that runs; TYPE_CHECKING blocks skipped."""
    found: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub, lazy)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend(
                    (t, lazy, child.lineno) for t in _targets(module, child) if t.split(".")[0] == "lens_audio"
                )
            visit(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(MODULES[module].read_text()), False)
    return found


def edges() -> list[tuple[str, str, bool, int]]:
    """(importer, imported, lazy, line) for every import between two different modules of the package."""
    out = []
    for module in MODULES:
        for target, lazy, line in imports_of(module):
            if target not in MODULES:
                raise AssertionError(f"{module}:{line} imports {target}, which is not a module of lens_audio")
            if target != module:
                out.append((module, target, lazy, line))
    return out


def _documented(a: str, b: str, lazy: bool) -> bool:
    return lazy and (unit(a), unit(b)) in DOCUMENTED_LAZY


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def walk(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [node, nxt] if nxt in stack else [node, nxt]
            if nxt not in state and (cycle := walk(nxt, stack + [node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := walk(start, [])):
            return cycle
    return None


def test_find_cycle_finds_a_cycle_and_only_a_cycle():
    """The checker itself: a three-module circle is reported, a diamond is not."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) is None


def test_the_graph_is_read_from_the_source():
    """Known edges appear (module-level, lazy, `from package import submodule`); TYPE_CHECKING ones do not."""
    found = {(a, b, lazy) for a, b, lazy, _ in edges()}
    assert ("lens_audio.model.hooked_audio_lm", "lens_audio.model.generation", False) in found
    assert ("lens_audio.cli.figures", "lens_audio.figures", True) in found
    assert not any(a == "lens_audio.model.generation" and b == "lens_audio.model.hooked_audio_lm" for a, b, _ in found)
    assert len(found) > 100


def test_every_module_has_a_layer():
    missing = sorted(m for m in MODULES if unit(m) not in LAYERS)
    assert not missing, f"give these modules' package a layer in LAYERS: {missing}"


def test_no_import_circles_between_modules():
    graph: dict[str, set[str]] = {}
    for a, b, lazy, _ in edges():
        if not _documented(a, b, lazy):
            graph.setdefault(a, set()).add(b)
    cycle = find_cycle(graph)
    assert cycle is None, f"import circle: {' -> '.join(cycle)}; move the shared piece into a module both can import"


def test_no_import_circles_between_packages():
    graph: dict[str, set[str]] = {}
    for a, b, lazy, _ in edges():
        if unit(a) != unit(b) and not _documented(a, b, lazy):
            graph.setdefault(unit(a), set()).add(unit(b))
    cycle = find_cycle(graph)
    assert cycle is None, f"packages import each other in a circle: {' -> '.join(cycle)}"


def test_no_module_imports_a_layer_above_its_own():
    upward = [
        f"{a}:{line} ({LAYERS[unit(a)]}) imports {b} ({LAYERS[unit(b)]}){' lazily' if lazy else ''}"
        for a, b, lazy, line in edges()
        if LAYERS[unit(b)] > LAYERS[unit(a)] and not _documented(a, b, lazy)
    ]
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


@pytest.mark.parametrize("restricted", sorted(ONLY_IMPORTED_BY))
def test_restricted_modules_have_only_their_importers(restricted):
    allowed = ONLY_IMPORTED_BY[restricted]
    wrong = sorted(
        {f"{a}:{line}" for a, b, _, line in edges() if unit(b) == restricted and unit(a) not in allowed | {restricted}}
    )
    assert not wrong, f"{restricted} may be imported only by {sorted(allowed)}, not by {wrong}"


def test_no_private_names_imported_across_modules():
    """A leading underscore means "this module only": another module needing it should get a public name."""
    private = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lens_audio"):
                private += [f"{module}:{node.lineno} {a.name}" for a in node.names if a.name.startswith("_")]
    assert not private, f"private names imported from another module: {private}"


def test_benchmarks_import_the_package_not_each_other():
    benchmarks = Path(__file__).resolve().parents[2] / "benchmarks"
    for path in sorted(benchmarks.glob("*.py")):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] == "benchmarks" for n in names) and not getattr(node, "level", 0), (
                    f"{path.name}:{node.lineno} imports another benchmark; share code through lens_audio instead"
                )
        assert "sys.path.insert" not in source, f"{path.name} edits sys.path; the installed package is importable"


def test_old_import_paths_forward_with_a_warning():
    """`lens_audio.evaluation` (now benchmark/ and paper/) and the models' names in `lens_audio.workshop` (now
    organisms/) still import for one release, each with a DeprecationWarning naming the new place."""
    import importlib
    import sys

    import lens_audio.benchmark as benchmark
    import lens_audio.organisms as organisms
    from lens_audio.paper import profile

    sys.modules.pop("lens_audio.evaluation", None)
    with pytest.warns(DeprecationWarning, match="lens_audio.benchmark"):
        evaluation = importlib.import_module("lens_audio.evaluation")
    assert evaluation.load_mmau is benchmark.load_mmau
    assert importlib.import_module("lens_audio.evaluation.profile") is profile
    import lens_audio.workshop as workshop

    with pytest.warns(DeprecationWarning, match="lens_audio.organisms.CHECKPOINT"):
        assert workshop.CHECKPOINT == organisms.CHECKPOINT
