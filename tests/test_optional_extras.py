"""The test suite passes on a machine with only the base install and the test extra: every use of an optional
package (an extra of pyproject.toml) in a test module is guarded by ``pytest.importorskip``.

Read from the test files' syntax trees, so a new unguarded import fails here, on any machine, before it can fail
a user's bare run:

* an import of an optional package at module level is an error unless a module-level ``pytest.importorskip``
  of it comes first or it sits in a ``try`` that catches ``ImportError``;
* an import of one inside a function needs ``pytest.importorskip`` of that package in the function, or at module
  level;
* a function that names a backbone of an optional library (``"timm:..."``) needs the same guard.

The map from extras to import names is checked against pyproject.toml, so a new extra cannot go unwatched.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"

# pyproject's optional requirement (distribution name) -> the top-level modules it provides
IMPORT_NAMES = {
    "timm": ("timm",),
    "onnx": ("onnx",),
    "onnxscript": ("onnxscript",),
    "onnxruntime": ("onnxruntime",),
    "pyarrow": ("pyarrow",),
    "datasets": ("datasets",),
    "pycocotools": ("pycocotools",),
    "matplotlib": ("matplotlib",),
    "scikit-learn": ("sklearn",),
    "tensorboard": ("tensorboard",),
    "umap-learn": ("umap",),
    # the lint and docs extras: tools CI runs beside the tests, never imported by a test
    "ruff": ("ruff",),
    "mypy": ("mypy",),
    "mkdocs": ("mkdocs",),
    "mkdocs-material": ("material",),
    "mkdocstrings": ("mkdocstrings",),
}
OPTIONAL = {m for names in IMPORT_NAMES.values() for m in names}
# string prefixes that only work with an optional package installed
NEEDS = {"timm:": "timm"}
# the test extra is always installed (`bash scripts/test.sh` installs it): those are not optional for the tests
TEST_EXTRA = {"test", "all"}


def _optional_requirements() -> set[str]:
    """Distribution names of every optional requirement of pyproject.toml outside the test extra."""
    text = (ROOT / "pyproject.toml").read_text()
    block = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    names = set()
    for line in block.splitlines():
        key, _, value = line.partition("=")
        if not value or key.strip().startswith("#") or key.strip() in TEST_EXTRA:
            continue
        for req in re.findall(r'"([^"]+)"', value):
            names.add(re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower())
    return names


def test_every_optional_requirement_is_watched():
    missing = _optional_requirements() - set(IMPORT_NAMES)
    assert not missing, f"add the import names of {sorted(missing)} to IMPORT_NAMES"


def _imported(node: ast.AST) -> list[str]:
    """Top-level module names an import statement binds."""
    if isinstance(node, ast.Import):
        return [a.name.split(".")[0] for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return [node.module.split(".")[0]]
    return []


def _skipped(node: ast.AST) -> set[str]:
    """Top-level names of every ``importorskip("pkg...")`` call inside ``node``."""
    out = set()
    for call in ast.walk(node):
        if isinstance(call, ast.Call) and getattr(call.func, "attr", getattr(call.func, "id", "")) == "importorskip" \
                and call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
            out.add(call.args[0].value.split(".")[0])
    return out


def _catches_import_error(node: ast.Try) -> bool:
    names = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
    for handler in node.handlers:
        if handler.type is None:
            return True
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(getattr(k, "id", None) in names for k in kinds):
            return True
    return False


def _module_level(tree: ast.Module) -> list[tuple[ast.stmt, bool]]:
    """Module-level statements (inside module-level if/try/with blocks too), each with whether it is in a try
    that catches ImportError."""
    out: list[tuple[ast.stmt, bool]] = []

    def visit(body, guarded):
        for stmt in body:
            out.append((stmt, guarded))
            if isinstance(stmt, ast.Try):
                visit(stmt.body, guarded or _catches_import_error(stmt))
                for part in (stmt.orelse, stmt.finalbody, *[h.body for h in stmt.handlers]):
                    visit(part, guarded)
            elif isinstance(stmt, (ast.If, ast.With)):
                visit(stmt.body, guarded)
                visit(getattr(stmt, "orelse", []), guarded)

    visit(tree.body, False)
    return out


def problems(source: str, name: str = "<test>") -> list[str]:
    """What an unguarded use of an optional package in one test module looks like, one line each."""
    tree = ast.parse(source)
    top = _module_level(tree)
    top_skips = set().union(*(_skipped(s) for s, _ in top if not isinstance(s, (ast.FunctionDef, ast.ClassDef,
                                                                                  ast.AsyncFunctionDef))))
    found = []
    skipped_so_far: set[str] = set()  # a module-level importorskip skips the module before the lines below it
    for stmt, guarded in top:
        if not isinstance(stmt, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            skipped_so_far |= _skipped(stmt)
        for mod in _imported(stmt):
            if mod in OPTIONAL and not guarded and mod not in skipped_so_far:
                found.append(f"{name}:{stmt.lineno}: 'import {mod}' at module level: use "
                             f"{mod} = pytest.importorskip({mod!r}) instead")
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        allowed = top_skips | _skipped(fn)
        for node in ast.walk(fn):
            for mod in _imported(node):
                if mod in OPTIONAL and mod not in allowed:
                    found.append(f"{name}:{node.lineno}: {fn.name} imports {mod} without "
                                 f"pytest.importorskip({mod!r})")
        for node in [*ast.walk(fn)]:
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for prefix, mod in NEEDS.items():
                    if node.value.startswith(prefix) and mod not in allowed:
                        found.append(f"{name}:{node.lineno}: {fn.name} uses {node.value!r} without "
                                     f"pytest.importorskip({mod!r})")
                        break
    return sorted(set(found))


def test_no_test_module_uses_an_optional_package_unguarded():
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        found += problems(path.read_text(), str(path.relative_to(ROOT)))
    assert not found, "\n".join(found)


@pytest.mark.parametrize("source,expected", [
    ("import timm\n", "at module level"),
    ("from matplotlib import pyplot\n", "at module level"),
    ("import pytest\nif True:\n    import sklearn.manifold\n", "at module level"),
    ("def test_a():\n    import onnxruntime\n", "imports onnxruntime without"),
    ("def test_a():\n    pytest.importorskip('onnx')\n    import onnxruntime\n", "imports onnxruntime without"),
    ("def test_a():\n    cfg = {'backbone': 'timm:resnet10t'}\n", "uses 'timm:resnet10t' without"),
    ("@pytest.mark.parametrize('b', ['timm:x'])\ndef test_a(b):\n    pass\n", "uses 'timm:x' without"),
])
def test_the_check_finds_unguarded_uses(source, expected):
    found = problems(source)
    assert len(found) == 1 and expected in found[0], found


@pytest.mark.parametrize("source", [
    "import pytest\ntimm = pytest.importorskip('timm')\nimport timm.models\n",
    "try:\n    import matplotlib\nexcept ImportError:\n    matplotlib = None\n",
    "def test_a():\n    ort = pytest.importorskip('onnxruntime')\n    import onnxruntime.tools\n",
    "pytest.importorskip('timm')\ndef test_a():\n    cfg = {'backbone': 'timm:resnet10t'}\n",
    "@pytest.mark.parametrize('b', ['timm:x'])\ndef test_a(b):\n    pytest.importorskip('timm')\n",
    "import numpy\nimport torch\nfrom barlowtwins.models import backbones\n",
    "def test_a():\n    assert 'timm' in 'a timm: message'\n",
])
def test_the_check_accepts_guarded_uses(source):
    assert problems(source) == []
