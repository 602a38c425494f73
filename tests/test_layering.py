"""The package's imports go one way (docs/architecture.md): every import — at module level or inside a
function — points to the same layer or a lower one, train and infer never reach each other, nothing inside the
package imports the façade `eva_jax` itself, no two packages and no two modules import each other in a cycle,
and a function-local import (of anything, third-party too) states why (`# local import: <reason>`)."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("eva_jax", "pallas_kernels", "configs")

# Low to high. A module may import its own layer and anything lower; within a layer, the pairs in SIBLINGS
# never import each other (loading a training workdir for inference goes through eva_jax.checkpoints).
LAYERS: list[tuple[str, ...]] = [
    ("eva_jax.config", "eva_jax.config_checks", "eva_jax.run_config", "eva_jax.overrides", "eva_jax.arrays"),
    ("configs",),
    ("pallas_kernels", "eva_jax.data"),
    ("eva_jax.parallel",),
    ("eva_jax.nn",),
    ("eva_jax.api", "eva_jax.counts"),
    ("eva_jax.checkpoints",),
    ("eva_jax.train", "eva_jax.infer"),
    ("eva_jax.post", "eva_jax.eval"),
    ("eva_jax.serve", "eva_jax.generate", "eva_jax.describe", "eva_jax.sft", "eva_jax.grpo"),
    ("eva_jax",),  # the package root: the public façade, imported by nothing inside
]
SIBLINGS = {frozenset(("eva_jax.train", "eva_jax.infer")), frozenset(("eva_jax.post", "eva_jax.eval"))}
LOCAL_REASON = "# local import:"


def unit_of(module: str) -> str:
    """The layering unit a module belongs to: the longest prefix named in LAYERS."""
    best = ""
    for layer in LAYERS:
        for unit in layer:
            if (module == unit or module.startswith(unit + ".")) and len(unit) > len(best):
                best = unit
    return best


def rank(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules() -> set[str]:
    return {module_name(p) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imports(path: Path, known: set[str]):
    """(imported module, line, inside a function, has a stated reason) for every import of the file, of any
    package. `from pkg import mod` names the module pkg.mod when that is a module of the project."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
             for n in ast.walk(f)}
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        # The reason sits on one of the statement's lines or in the comment block right above it.
        reason = any(LOCAL_REASON in lines[i] for i in range(node.lineno - 1, node.end_lineno))
        above = node.lineno - 2
        while not reason and above >= 0 and lines[above].strip().startswith("#"):
            reason = LOCAL_REASON in lines[above]
            above -= 1
        for name in dict.fromkeys(names):
            yield name, node.lineno, id(node) in inner, reason


def all_imports():
    """(importing module, imported module, "path:line", inside a function, has a stated reason)."""
    known = all_modules()
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for target, line, local, reason in imports(path, known):
                yield module_name(path), target, f"{path.relative_to(ROOT)}:{line}", local, reason


def edges():
    """The imports between modules of the project."""
    return [e for e in all_imports() if e[1].split(".")[0] in PACKAGES]


def find_cycles(graph: dict[str, set[str]]) -> list[str]:
    """One cycle per back edge of a depth-first search (every cyclic part of the graph shows up)."""
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return cycles


def test_imports_point_down_the_layers():
    wrong = []
    for source, target, where, _, _ in edges():
        a, b = unit_of(source), unit_of(target)
        assert a and b, f"{where}: {source} or {target} is in no layer of LAYERS"
        if a == b:
            continue
        if rank(b) > rank(a) or frozenset((a, b)) in SIBLINGS:
            wrong.append(f"{where}: {source} ({a}) imports {target} ({b})")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_import_cycles_between_packages():
    graph, where = collections.defaultdict(set), {}
    for source, target, at, _, _ in edges():
        a, b = unit_of(source), unit_of(target)
        if a and b and a != b:
            graph[a].add(b)
            where.setdefault((a, b), at)
    cycles = find_cycles(graph)
    described = []
    for cycle in cycles:
        units = cycle.split(" -> ")
        described.append(cycle + "  (" + ", ".join(where[(a, b)] for a, b in zip(units, units[1:])) + ")")
    assert not cycles, "import cycles between packages:\n" + "\n".join(described)


def test_no_import_cycles_between_modules():
    graph = collections.defaultdict(set)
    known = all_modules()
    for source, target, _, _, _ in edges():
        while target not in known and "." in target:  # `from mod import name`: the module itself
            target = target.rsplit(".", 1)[0]
        if target != source and target in known:
            graph[source].add(target)
    # A package's __init__ importing its own modules is not a cycle through them.
    cycles = [c for c in find_cycles(graph) if not all(m.startswith(c.split(" -> ")[0]) for m in c.split(" -> "))]
    assert not cycles, "import cycles between modules:\n" + "\n".join(cycles)


def test_function_local_imports_state_a_reason():
    silent = [f"{where}: {target}" for _, target, where, local, reason in all_imports() if local and not reason]
    assert not silent, (f"function-local imports without a `{LOCAL_REASON} <why>` comment (move them to the top, "
                        "or say why they must stay):\n" + "\n".join(silent))
