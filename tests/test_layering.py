"""The package's imports go one way (docs/architecture.md): every import — at module level or inside a
function — points to the same layer or a lower one, train and infer never reach each other, no two modules
import each other in a cycle, and a function-local import states why (`# local import: <reason>`)."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("eva_jax", "pallas_kernels", "configs")

# Low to high. A module may import its own layer and anything lower; within a layer, the pairs in SIBLINGS
# never import each other (loading a training workdir for inference goes through eva_jax.checkpoints).
LAYERS: list[tuple[str, ...]] = [
    ("eva_jax.config", "eva_jax.overrides"),
    ("configs",),
    ("pallas_kernels", "eva_jax.data"),
    ("eva_jax.parallel",),
    ("eva_jax.nn",),
    ("eva_jax.api", "eva_jax.counts"),
    ("eva_jax.checkpoints",),
    ("eva_jax.train", "eva_jax.infer"),
    ("eva_jax.post", "eva_jax.eval"),
    ("eva_jax.serve", "eva_jax.generate", "eva_jax.describe"),
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


def imports(path: Path):
    """(imported module, line, inside a function, has a stated reason) for every import of the file."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
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
            names = [base]
        else:
            continue
        reason = any(LOCAL_REASON in lines[i] for i in range(node.lineno - 1, node.end_lineno))
        above = node.lineno - 2
        while not reason and above >= 0 and lines[above].strip().startswith("#"):
            reason = LOCAL_REASON in lines[above]
            above -= 1
        for name in names:
            if name.split(".")[0] in PACKAGES:
                yield name, node.lineno, id(node) in inner, reason


def edges():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for target, line, local, reason in imports(path):
                yield module_name(path), target, f"{path.relative_to(ROOT)}:{line}", local, reason


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


def test_no_import_cycles_between_modules():
    graph = collections.defaultdict(set)
    known = {module_name(p) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    for source, target, _, _, _ in edges():
        # `from pkg import mod` names the module pkg.mod; otherwise the module itself.
        while target not in known and "." in target:
            target = target.rsplit(".", 1)[0]
        if target != source and target in known:
            graph[source].add(target)
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    # A package's __init__ importing its own modules is not a cycle through them.
    cycles = [c for c in cycles if not all(m.startswith(c.split(" -> ")[0]) for m in c.split(" -> "))]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_function_local_imports_state_a_reason():
    silent = [f"{where}: {target}" for _, target, where, local, reason in edges() if local and not reason]
    assert not silent, (f"function-local imports without a `{LOCAL_REASON} <why>` comment (move them to the top, "
                        "or say why they must stay):\n" + "\n".join(silent))
