"""pyproject.toml declares what the code imports: src's third-party imports are main dependencies, the tests'
are main or dev ones (nothing relied on transitively), no package is listed twice, and every main dependency
is imported by src or has a stated reason to be there.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OWN = {"tunehouse", "tests", "benchmarks", "__future__"}
# Main dependencies src does not import by name, and why they are needed anyway.
NOT_IMPORTED = {
    "sentencepiece": "transformers loads Gemma tokenizers that ship only tokenizer.model through it",
}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def declared() -> tuple[list[str], list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return project["dependencies"], project["optional-dependencies"]["dev"]


def third_party_imports(folder: Path) -> dict[str, str]:
    """Top-level module -> one "file:line" importing it, for every non-stdlib, non-own import under folder."""
    found: dict[str, str] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names} - OWN - set(sys.stdlib_module_names):
                found.setdefault(top, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def distributions(modules: dict[str, str]) -> dict[str, str]:
    """Distribution name -> where one of its modules is imported."""
    by_module = importlib.metadata.packages_distributions()
    out = {}
    for module, where in modules.items():
        for dist in by_module.get(module, [module]):
            out.setdefault(dist.lower().replace("_", "-"), where)
    return out


def test_no_package_is_listed_twice():
    main, dev = declared()
    names = [_name(r) for r in main + dev]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_src_imports_only_main_dependencies():
    main = {_name(r) for r in declared()[0]}
    used = distributions(third_party_imports(ROOT / "src" / "tunehouse"))
    assert {d: w for d, w in used.items() if d not in main} == {}


def test_tests_import_only_declared_packages():
    main, dev = declared()
    known = {_name(r) for r in main + dev}
    used = distributions(third_party_imports(ROOT / "tests"))
    assert {d: w for d, w in used.items() if d not in known} == {}


def test_every_main_dependency_is_used_by_src():
    used = set(distributions(third_party_imports(ROOT / "src" / "tunehouse")))
    unused = {_name(r) for r in declared()[0]} - used - set(NOT_IMPORTED)
    assert unused == set()


def test_llama_cpp_python_is_bounded_to_the_tested_series():
    """engine_llamacpp uses llama-cpp-python's private internals: an unbounded upgrade could break it."""
    (spec,) = [r for r in declared()[0] if _name(r) == "llama-cpp-python"]
    assert "<" in spec, spec
    installed = tuple(int(x) for x in importlib.metadata.version("llama_cpp_python").split(".")[:3])
    low, high = (tuple(int(x) for x in v.split(".")) for v in re.findall(r"[<>]=?\s*([\d.]+)", spec))
    assert low <= installed < high, f"installed {installed} is outside {spec}"
