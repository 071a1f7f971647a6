"""The house rules of the code base, checked: small files and functions, scripts that no
library module imports, and library modules that do nothing on import."""
import ast
import subprocess
import sys

import pytest
from conftest import REPO

SCRIPTS = {"coco_process", "model", "evaluate"}   # the faithful top-level scripts (thin drivers)
EXEMPT = {"synthetic_coco"}                          # the embedded sample generator: one long recipe
MAX_FILE_LINES, MAX_FUNCTION_LINES = 450, 50
MODULES = sorted(p.stem for p in REPO.glob("*.py"))
LIBRARIES = [m for m in MODULES if m not in SCRIPTS | EXEMPT]


def parsed(module):
    return ast.parse((REPO / f"{module}.py").read_text(), filename=f"{module}.py")


def imported_modules(tree):
    """Top-level names of every module a file imports (at any depth: lazy imports count)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_every_module_is_found():
    assert SCRIPTS <= set(MODULES) and {"network", "confidence_maps", "figures"} <= set(LIBRARIES)


@pytest.mark.parametrize("module", [m for m in MODULES if m not in EXEMPT])
def test_files_and_functions_are_small(module):
    source = (REPO / f"{module}.py").read_text()
    assert len(source.splitlines()) <= MAX_FILE_LINES, f"{module}.py has {len(source.splitlines())} lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
            for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{module}.py: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


@pytest.mark.parametrize("module", MODULES)
def test_no_module_imports_a_script(module):
    assert not imported_modules(parsed(module)) & (SCRIPTS - {module})


def test_importing_the_libraries_has_no_side_effects():
    """Import every library module in a fresh interpreter, after the third-party packages (which
    set variables of their own): the environment, fd 2 and the working directory are as before,
    and nothing is written to stdout."""
    code = ("import os, sys, cv2, keras, numpy, scipy, matplotlib, pycocotools.coco\n"
            "env = dict(os.environ); cwd = os.getcwd(); fd2 = os.fstat(2).st_ino\n"
            f"for name in {LIBRARIES!r}: __import__(name)\n"
            "assert dict(os.environ) == env, sorted(set(os.environ.items()) ^ set(env.items()))\n"
            "assert os.getcwd() == cwd and os.fstat(2).st_ino == fd2\n"
            "print('ok')")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "ok\n"
