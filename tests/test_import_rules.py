"""DEVELOPERS.md's import rules, checked on the AST of every module under src/tunehouse (lazy imports included).

Rules: `data` imports nothing of ours; `training` never imports `api`/`store`/`worker`; `api` and `inference`
never import `training`; `migration` never imports `api`/`store`/`worker`/`training`/`inference` (it reaches the
target over HTTP); `web` (the dashboard) never imports `training`; nothing outside `cli` imports `cli`; nothing
but api/app.py imports `web`; no cycle between packages. api/app.py is the composition root: it counts as its own
unit "app" (it mounts `web`, and `web` uses api's routes and objects, which is not a cycle).
The checker runs on the real tree (no violation) and on small trees with one bad import each (exactly that
violation), so it is shown to fail when a rule is broken.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tunehouse"
FORBIDDEN = {  # importer unit -> units it must not import
    "data": "*",
    "training": {"api", "store", "worker", "web"},
    "api": {"training"},
    "inference": {"training"},
    # A migration reaches the target over HTTP like any client: data, eval and config only.
    "migration": {"api", "store", "worker", "training", "inference"},
    "web": {"training"},
}
COMPOSITION_ROOT = ("api/app.py", "app")  # the one module allowed to import web


def unit_of(module: str, root: Path) -> str | None:
    """tunehouse.store.jobs -> "store"; tunehouse.config -> "config"; other packages -> None."""
    parts = module.split(".")
    if parts[0] != "tunehouse" or len(parts) < 2:
        return None
    if parts[1:3] == ["api", "app"]:
        return COMPOSITION_ROOT[1]
    return parts[1]


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import statement in the file, wherever it sits (functions included)."""
    package = ["tunehouse", *path.relative_to(root).with_suffix("").parts]
    if package[-1] == "__init__":
        package = package[:-1]
    else:
        package = package[:-1]  # the module's own package, for relative imports
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            # `from tunehouse import training` imports the package tunehouse.training
            out += [(node.lineno, f"{base}.{alias.name}" if base == "tunehouse" else base) for alias in node.names]
    return out


def import_graph(root: Path) -> dict[str, dict[str, list[str]]]:
    """importer unit -> imported unit -> ["file:line", ...] (imports within a unit left out)."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        importer = COMPOSITION_ROOT[1] if rel.as_posix() == COMPOSITION_ROOT[0] else rel.parts[0].removesuffix(".py")
        if importer == "__init__":
            continue
        for line, module in imported_modules(path, root):
            target = unit_of(module, root)
            if target and target != importer:
                graph.setdefault(importer, {}).setdefault(target, []).append(f"{rel}:{line}")
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def violations(root: Path) -> list[str]:
    graph = import_graph(root)
    out = []
    for importer, targets in sorted(graph.items()):
        banned = FORBIDDEN.get(importer, set())
        for target, where in sorted(targets.items()):
            if banned == "*" or target in banned:
                out.append(f"{importer} imports {target} ({', '.join(where)})")
            if target == "cli":
                out.append(f"{importer} imports cli ({', '.join(where)})")
            if target == "web" and importer != COMPOSITION_ROOT[1]:
                out.append(f"{importer} imports web ({', '.join(where)})")
    cycle = find_cycle(graph)
    if cycle:
        steps = [f"{a} -> {b} ({graph[a][b][0]})" for a, b in zip(cycle, cycle[1:], strict=False)]
        out.append("package cycle: " + "; ".join(steps))
    return out


def test_the_source_tree_follows_the_import_rules():
    assert SRC.is_dir()
    assert violations(SRC) == []


def test_the_checker_sees_the_real_packages_and_their_lazy_imports():
    graph = import_graph(SRC)
    # worker imports the training engine only inside a function: the checker must still see it.
    assert "training" in graph["worker"]
    assert {"store", "api", "training", "inference", "eval", "cli", "worker", "web", "app"} <= set(graph)
    assert "web" in graph["app"] and "api" in graph["web"]
    assert "data" not in graph  # data imports nothing of ours


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "tunehouse"
    for name in ("data", "training", "api", "inference", "store", "worker", "eval", "cli", "web"):
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "__init__.py").write_text("")
    (root / "config.py").write_text("")
    for rel, text in files.items():
        (root / rel).write_text(text)
    return root


@pytest.mark.parametrize(("files", "expected"), [
    ({"data/x.py": "from tunehouse.config import Settings\n"}, "data imports config"),
    ({"training/x.py": "def f():\n    from tunehouse.store import jobs\n"}, "training imports store"),
    ({"training/x.py": "import tunehouse.worker.main\n"}, "training imports worker"),
    ({"training/x.py": "from tunehouse import api\n"}, "training imports api"),
    ({"api/x.py": "def f():\n    from tunehouse.training.engine import train\n"}, "api imports training"),
    ({"inference/x.py": "from ..training import engine\n"}, "inference imports training"),
    ({"eval/x.py": "from tunehouse.cli.app import app\n"}, "eval imports cli"),
    ({"web/x.py": "def f():\n    from tunehouse.training import engine\n"}, "web imports training"),
    ({"api/files.py": "from tunehouse.web import pages\n"}, "api imports web"),
    ({"store/x.py": "import tunehouse.web\n"}, "store imports web"),
    ({"web/x.py": "from tunehouse.api.app import create_app\n", "api/app.py": "import tunehouse.web.x\n"},
     "package cycle: app -> web"),
    ({"worker/x.py": "from tunehouse.eval import y\n", "eval/y.py": "def f():\n    import tunehouse.worker.x\n"},
     "package cycle: eval -> worker"),
])
def test_each_rule_fails_on_a_bad_import(tmp_path, files, expected):
    found = violations(_tree(tmp_path, files))
    assert len(found) == 1 and found[0].startswith(expected), found
