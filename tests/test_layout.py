"""The house rules of the code base, checked: the top level holds the scripts and little else,
the library is the package figure_pose/ with one subpackage per stage, files and functions are
small, no library module imports a script or a stage above its own, and importing a library
module does nothing."""
import ast
import subprocess
import sys

import pytest
from conftest import REPO

SCRIPTS = {"coco_process", "model", "evaluate"}   # the faithful top-level scripts (thin drivers)
EXEMPT = {"synthetic_coco"}                          # the embedded sample generator: one long recipe (a script too)
TOP_LEVEL = {                                        # everything git tracks at the top level
    "download_coco.sh", "coco_process.py", "model.py", "evaluate.py", "synthetic_coco.py", "run_sample.sh",
    "requirements.txt", "README.md", "Makefile", "pytest.ini", ".gitignore",
    "figure_pose", "imgs", "docs", "tests", "benchmarks", ".ci"}
PACKAGE = "figure_pose"
STAGES = ("core", "data", "training", "evaluation")  # each imports only from the stages before it
MAX_FILE_LINES, MAX_FUNCTION_LINES = 450, 50
TOP_SCRIPTS = sorted(p.stem for p in REPO.glob("*.py"))
LIBRARY_FILES = sorted(p for p in (REPO / PACKAGE).rglob("*.py") if "__pycache__" not in p.parts)
LIBRARIES = [".".join(p.relative_to(REPO).with_suffix("").parts) for p in LIBRARY_FILES
             if p.name != "__init__.py"]
SOURCES = {**{m: REPO / f"{m}.py" for m in TOP_SCRIPTS},
           **{".".join(p.relative_to(REPO).with_suffix("").parts): p for p in LIBRARY_FILES}}


def parsed(module):
    path = SOURCES[module]
    return ast.parse(path.read_text(), filename=str(path.relative_to(REPO)))


def imported_modules(tree):
    """Full names of every module a file imports (at any depth: lazy imports count); for
    `from package import name`, also package.name (it may be a module)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"relative import from {node.module!r}: write it absolute"
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def stage(module):
    """'core' for figure_pose.core.figures, None for anything outside the package's stages."""
    parts = module.split(".")
    return parts[1] if parts[0] == PACKAGE and len(parts) > 1 and parts[1] in STAGES else None


def test_every_module_is_found():
    assert SCRIPTS | EXEMPT == set(TOP_SCRIPTS)
    assert {f"{PACKAGE}.training.network", f"{PACKAGE}.core.confidence_maps", f"{PACKAGE}.core.figures"} <= set(LIBRARIES)
    assert {stage(m) for m in LIBRARIES} == set(STAGES)


def test_the_top_level_holds_the_scripts_and_the_allowed_files():
    """A new library module goes into figure_pose/, not beside the scripts."""
    assert {p.name for p in REPO.glob("*.py")} <= TOP_LEVEL
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if tracked.returncode:
        pytest.skip("not a git checkout: only the top-level .py files were checked")
    assert {line.split("/")[0] for line in tracked.stdout.splitlines()} <= TOP_LEVEL


def test_the_package_is_a_map_with_no_code():
    """figure_pose/__init__.py and each subpackage's: a docstring only."""
    inits = [p for p in LIBRARY_FILES if p.name == "__init__.py"]
    assert len(inits) == 1 + len(STAGES)
    for path in inits:
        body = ast.parse(path.read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), path
    overview = (REPO / PACKAGE / "__init__.py").read_text()
    assert all(f"{p.name} " in overview for p in LIBRARY_FILES if p.name != "__init__.py")


@pytest.mark.parametrize("module", [m for m in SOURCES if m not in EXEMPT])
def test_files_and_functions_are_small(module):
    source, name = SOURCES[module].read_text(), SOURCES[module].relative_to(REPO)
    assert len(source.splitlines()) <= MAX_FILE_LINES, f"{name} has {len(source.splitlines())} lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
            for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{name}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_no_module_imports_a_script(module):
    """Scripts import the library, never each other; the library imports no top-level file at all
    (not even synthetic_coco.py), so it works wherever figure_pose/ is importable."""
    imported = {name.split(".")[0] for name in imported_modules(parsed(module))}
    assert not imported & (SCRIPTS - {module})
    if module.startswith(f"{PACKAGE}."):
        assert not imported & set(TOP_SCRIPTS)


@pytest.mark.parametrize("module", LIBRARIES)
def test_no_stage_imports_a_later_one(module):
    """core/ imports nothing from data/, training/ or evaluation/ (the shared pieces depend on
    nothing above them); data/ nothing from training/ or evaluation/; training/ nothing from
    evaluation/ (evaluation's inference.py loads the network, so the order is this one)."""
    own = STAGES.index(stage(module))
    later = {name for name in imported_modules(parsed(module)) if stage(name) in STAGES[own + 1:]}
    assert not later, f"{module} imports {sorted(later)} from a later stage"


def test_importing_the_libraries_has_no_side_effects():
    """Import every library module in a fresh interpreter, after the third-party packages (which
    set variables of their own): the environment, fd 2 and the working directory are as before,
    and nothing is written to stdout."""
    code = ("import importlib, os, sys, cv2, keras, numpy, scipy, matplotlib, pycocotools.coco\n"
            "env = dict(os.environ); cwd = os.getcwd(); fd2 = os.fstat(2).st_ino\n"
            f"for name in {[PACKAGE, *(f'{PACKAGE}.{s}' for s in STAGES), *LIBRARIES]!r}: "
            "importlib.import_module(name)\n"
            "assert dict(os.environ) == env, sorted(set(os.environ.items()) ^ set(env.items()))\n"
            "assert os.getcwd() == cwd and os.fstat(2).st_ino == fd2\n"
            "print('ok')")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "ok\n"
