"""The application's layering, read from the source: no import cycles in ``simda`` (imports
inside functions included), the pipelines never import the toy world, the kernels never import
the model, and no module of the CLI borrows another's private helpers."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def modules(package: str) -> dict[str, str]:
    """Module name -> file, for every .py file of ``package``."""
    found = {}
    for folder, _, names in os.walk(os.path.join(ROOT, package)):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


def imports(path: str, module: str, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``path`` imports anywhere (top level or in functions);
    ``from package import name`` counts as importing ``package.name`` when that is a module."""
    tree = ast.parse(open(path).read())
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def graph(package: str) -> dict[str, set[str]]:
    files = modules(package)
    return {m: imports(path, m, set(files)) for m, path in files.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def without_packages(edges):
    """Edges between modules, not to a package's ``__init__`` re-exporting its children (a
    package importing its own modules, and modules importing the package, is not a cycle of
    the code)."""
    return {
        m: {n for n in deps if not m.startswith(n + ".") and not n.startswith(m + ".")}
        for m, deps in edges.items()
    }


def test_simda_has_no_import_cycles():
    edges = without_packages(graph("simda"))
    assert "simda.cli.demo" in edges and "simda.toyworld.model" in edges  # the walk saw them
    assert cycle(edges) is None, " -> ".join(cycle(edges))


def test_the_cycle_finder_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_the_pipelines_never_import_the_toy_world():
    edges = graph("simda")
    for module, deps in edges.items():
        if module.startswith(("simda.pipelines", "simda.unet", "simda.checkpoint")):
            assert not any(d.startswith("simda.toyworld") for d in deps), module
            assert not any(d.startswith("simda.cli") for d in deps), module


def test_the_kernels_never_import_the_model():
    edges = graph("simda_kernels")
    files = modules("simda_kernels")
    for module, path in files.items():
        tree = ast.parse(open(path).read())
        names = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)] + [
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
        ]
        assert not any(name.split(".")[0] == "simda" for name in names), module
    assert edges


def test_no_cli_module_borrows_anothers_private_names():
    for module, path in modules("simda").items():
        tree = ast.parse(open(path).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("simda"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{module} imports {private} from {node.module}"
