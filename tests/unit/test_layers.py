"""The house's floors (docs/design.md, "Layers"), read from every import of every
module (also those inside functions): nothing imports upward, nn and parallel do
not import each other, no two modules import each other around a cycle."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).parents[2] / "lrmpi"

# the floors, bottom first; a module's floor is that of its longest listed prefix
LAYERS = [
    {"lrmpi.errors", "lrmpi.config", "lrmpi.log", "lrmpi.cache", "lrmpi._version",
     "lrmpi.digests", "lrmpi._ext", "lrmpi.blas_threads", "lrmpi.machine", "lrmpi.stages"},
    {"lrmpi.numerics"},
    {"lrmpi.nn", "lrmpi.parallel"},
    {"lrmpi.jobs", "lrmpi.jobscripts"},
    {"lrmpi.experiments"},
    {"lrmpi.cli", "lrmpi", "lrmpi.__main__"},  # the commands and the package's public API
]
APART = [("lrmpi.nn", "lrmpi.parallel")]  # one floor, and neither imports the other
# cycles that are known and owned elsewhere; nothing may join them. (None left: the CLI's
# registry is cli/commands.py, which the command modules import and cli/__init__ does
# not need them for; nn's graph/ops cycle is gone: nn/operators.py.)
KNOWN_CYCLES = []


def modules():
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports():
    """{module: the lrmpi modules it imports}."""
    mods = modules()

    def resolve(name):
        while name not in mods:
            name = name.rpartition(".")[0]
        return name
    graph = {}
    for name, path in mods.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {resolve(a.name) for a in node.names if a.name.startswith("lrmpi")}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and \
                    (node.module or "").startswith("lrmpi"):
                for a in node.names:  # `from lrmpi.x import y`: y may be a module
                    full = f"{node.module}.{a.name}"
                    found.add(full if full in mods else resolve(node.module))
            elif isinstance(node, ast.ImportFrom) and node.level:
                pytest.fail(f"{name}: relative import (lrmpi imports absolutely)")
        graph[name] = found - {name}
    return graph


def floor(module):
    best = None
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and \
                    (best is None or len(prefix) > len(best[1])):
                best = (i, prefix)
    assert best is not None, f"{module} is on no floor: add it to LAYERS and design.md"
    return best


def test_nothing_imports_upward_and_nn_and_parallel_stay_apart():
    bad = []
    for module, targets in imports().items():
        for target in targets:
            (a, pa), (b, pb) = floor(module), floor(target)
            if b > a or (pa, pb) in APART or (pb, pa) in APART:
                bad.append(f"{module} -> {target}")
    assert not bad, bad


def test_no_import_cycle():
    graph = imports()
    index, low, stack, on, sccs = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = set()
            while True:
                w = stack.pop()
                on.discard(w)
                scc.add(w)
                if w == v:
                    break
            if len(scc) > 1:
                sccs.append(scc)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert [c for c in sccs if c not in KNOWN_CYCLES] == []


def test_design_md_names_the_floors():
    text = (PACKAGE.parent / "docs" / "design.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    for layer in LAYERS:
        for name in layer:
            assert f"`{name}`" in section, name


# the one owner of each outside library lrmpi's layers must not spread
OWNERS = {"h5py": ("lrmpi.jobs.checkpoint", "lrmpi.jobs.inputs"),   # the file format; inputs
          "mpi4py": ("lrmpi.parallel.comm",),                       # MPI
          "xxhash": ("lrmpi.digests",)}                             # checksums, fingerprints


@pytest.mark.parametrize("library", sorted(OWNERS))
def test_an_outside_library_is_imported_by_its_owner_only(library):
    bad = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            if any(n == library or n.startswith(library + ".") for n in names) and \
                    not name.startswith(OWNERS[library]):
                bad.append(name)
    assert not bad, f"{library} imported outside {OWNERS[library]}: {sorted(set(bad))}"
