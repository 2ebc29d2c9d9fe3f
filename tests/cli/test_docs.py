"""Every `barlowtwins ...` command shown in README.md and docs/**/*.md parses with the real parser: its sub-command,
flags and choices exist. A renamed flag or command therefore fails here, not for a reader. Nothing is run.
The layers that docs/architecture.md lists are the import structure of the source."""

import ast
import contextlib
import dataclasses
import io
import re
import shlex
from pathlib import Path

import pytest

from barlowtwins.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
SHELL = {"", "bash", "sh", "shell", "console", "zsh"}
PLACEHOLDER = re.compile(r"<[^>]*>|\.\.\.|…")


def _blocks(text: str):
    """(language, first line number, lines) of each fenced code block."""
    lang, start, lines = None, 0, []
    for no, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```(\w*)", line)
        if fence and lang is None:
            lang, start, lines = fence.group(1), no + 1, []
        elif fence:
            yield lang, start, lines
            lang = None
        elif lang is not None:
            lines.append(line)


ASSIGN = re.compile(r"(\w+)=(.*)", re.DOTALL)


def _expand(tokens: list[str], env: dict[str, str]) -> list[str]:
    """``$NAME``/``${NAME}`` of variables the block set, split into words as the shell does."""
    out = []
    for t in tokens:
        m = re.fullmatch(r"\$\{?(\w+)\}?", t)
        if m and m.group(1) in env:
            out += shlex.split(env[m.group(1)])
        else:
            out.append(re.sub(r"\$\{?(\w+)\}?", lambda v: env.get(v.group(1), v.group(0)), t))
    return out


def _commands(lines: list[str], env: dict[str, str]):
    """(offset, argv after `barlowtwins`) of every barlowtwins command in a shell block; ``env`` collects the
    variables set (a page's later blocks use them too)."""
    joined, first = "", None
    for i, line in enumerate([*lines, ""]):
        if first is None:
            first = i
        joined += line.rstrip().removesuffix("\\") + " "
        if line.rstrip().endswith("\\"):
            continue
        text, at = joined.strip(), first
        joined, first = "", None
        try:
            lex = shlex.shlex(text, posix=True, punctuation_chars=True)
            lex.whitespace_split = True
            lex.commenters = "#"
            tokens = list(lex)
        except ValueError:
            continue
        for t in tokens:  # W=resnet50.pth; IN="--dataset folder ..."
            m = ASSIGN.fullmatch(t)
            if m:
                env[m.group(1)] = m.group(2)
        if "barlowtwins" not in tokens or PLACEHOLDER.search(re.split(r"\s#", text, maxsplit=1)[0]):
            continue
        pieces, cur = [], []
        for t in tokens:  # one command between |, ||, &&, ;
            if t and set(t) <= set("|&;()"):
                pieces.append(cur)
                cur = []
            else:
                cur.append(t)
        pieces.append(cur)
        for toks in pieces:
            for j, t in enumerate(toks):
                called = j == 0 or toks[j - 1] in ("-m", "nohup", "time") or all(ASSIGN.fullmatch(x) for x in toks[:j])
                if t == "barlowtwins" and called:
                    yield at, _expand(toks[j + 1:], env)
                    break


def _examples():
    out = []
    for doc in DOCS:
        env: dict[str, str] = {}
        for lang, start, lines in _blocks(doc.read_text()):
            if lang not in SHELL:  # in output shown as text, only the commands typed at a prompt
                lines = [ln.lstrip()[2:] if ln.lstrip().startswith("$ ") else "" for ln in lines]
            for offset, argv in _commands(lines, env):
                if argv and not argv[0].startswith("$"):
                    out.append(pytest.param(argv, id=f"{doc.relative_to(ROOT)}:{start + offset}"))
    return out


EXAMPLES = _examples()


def test_the_docs_show_commands():
    assert len(EXAMPLES) > 30


@pytest.mark.parametrize("argv", EXAMPLES)
def test_documented_command_parses(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(argv)
        except SystemExit as e:
            assert e.code == 0, f"barlowtwins {shlex.join(argv)}: {err.getvalue().strip()}"


def test_an_unknown_flag_or_command_fails_and_placeholders_are_skipped():
    found = list(_commands(["X='--dataset folder'", "barlowtwins knn --checkpoint r $X --data-dir d  # kNN",
                            "barlowtwins knn --checkpoint <run> --data-dir d",
                            "nohup barlowtwins knn --checkpont r | tee log"], {}))
    assert [argv for _, argv in found] == [["knn", "--checkpoint", "r", "--dataset", "folder", "--data-dir", "d"],
                                           ["knn", "--checkpont", "r"]]
    build_parser().parse_args(found[0][1])
    for argv in (found[1][1], ["kmeans", "--checkpoint", "r"]):
        with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as e:
            build_parser().parse_args(argv)
        assert e.value.code == 2


def _run_folder_table() -> str:
    text = (ROOT / "docs" / "pretrain-your-images.md").read_text()
    return text.split("## The run folder", 1)[1].split("\n## ", 1)[0]


def test_the_run_folder_table_names_every_file_a_run_writes(tmp_path):
    from conftest import make_fashion_mnist, tiny_config

    from barlowtwins.training.trainer import pretrain

    out = tmp_path / "run"
    cfg = tiny_config(make_fashion_mnist(tmp_path / "fm"), out, epochs=1, checkpoint_minutes=0, max_steps=4)
    pretrain(cfg)
    pretrain(dataclasses.replace(cfg, max_steps=None))  # resumed: a second checkpoint, the first one kept
    table = _run_folder_table()
    for f in out.iterdir():
        name = f.name + ("/" if f.is_dir() else "")
        shown = re.sub(r"^checkpoint\.\d+\.pth$", "checkpoint.1.pth", name)
        shown = "*.sha256" if name.endswith(".sha256") else shown
        assert f"`{shown}`" in table, f"{name} is missing from the run-folder table of pretrain-your-images.md"
    assert "at the end" not in table.split("`backbone.pth`", 1)[1].split("\n", 1)[0]


def _architecture_layers() -> list[str]:
    """The layers of docs/architecture.md's first text block, top to bottom (``cli``, ..., ``errors``)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = next(lines for lang, _, lines in _blocks(text) if lang == "text")
    return [m.group(1) for line in block if (m := re.match(r"^(\w+)(?:/|\.py)\s", line))]


def _package_imports():
    """(importing unit, imported unit, inside a function?) of every import of the package's own modules."""
    src = ROOT / "src" / "barlowtwins"
    for path in sorted(src.rglob("*.py")):
        unit = path.relative_to(src).parts[0].removesuffix(".py")
        tree = ast.parse(path.read_text())
        inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}: a relative import"
                # `from barlowtwins import x`: a sub-package or module x, else a name of the top-level module
                names = [f"barlowtwins.{a.name}" if (src / a.name).is_dir() or (src / f"{a.name}.py").exists()
                         else "barlowtwins" for a in node.names] if node.module == "barlowtwins" else [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "barlowtwins":
                    yield path, unit, parts[1] if len(parts) > 1 else "", id(node) in inner


def test_the_layers_of_the_architecture_page_are_the_imports_of_the_source():
    layers = _architecture_layers()
    assert layers[:4] == ["cli", "bench", "report", "training"] and layers[-2:] == ["errors", "version"], layers
    src = ROOT / "src" / "barlowtwins"
    units = {p.name.removesuffix(".py") for p in src.iterdir() if (p / "__init__.py").exists() or p.suffix == ".py"}
    assert units - {"__init__", "__main__", "configs"} == set(layers), "the page lists every sub-package"
    for path, unit, imported, in_function in _package_imports():
        where = path.relative_to(ROOT)
        assert imported in layers or imported in ("configs", "__init__", "__main__"), f"{where} imports {imported}"
        assert imported != "", f"{where} imports the top-level barlowtwins module"
        assert not in_function, f"{where} imports barlowtwins.{imported} inside a function"
        if unit in layers and imported in layers:
            assert layers.index(imported) >= layers.index(unit), f"{where}: {unit} imports {imported}, a layer above"
        assert {unit, imported} != {"models", "transforms"}, f"{where}: models and transforms import each other"


def test_every_module_of_the_package_has_its_mirror_test_file():
    """docs/architecture.md says tests/<layer>/test_<module>.py holds the tests of each module."""
    src = ROOT / "src" / "barlowtwins"
    modules = [p for p in src.rglob("*.py") if p.name not in ("__init__.py", "__main__.py", "version.py")]
    missing = [str(p.relative_to(src)) for p in modules
               if not (ROOT / "tests" / p.relative_to(src).parent / f"test_{p.stem}.py").is_file()]
    assert modules and not missing, f"modules without tests/<layer>/test_<module>.py: {missing}"
