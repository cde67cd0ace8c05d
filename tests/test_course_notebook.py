"""examples/course/: the assignment notebook runs top to bottom without Jupyter.

The notebook is read as JSON and its code cells are exec'd in order in one namespace (no
Jupyter, no IPython magics), with the matplotlib Agg backend, in a temporary working directory:

* with the instructor's solution (examples/course/solution.py) substituted into the exercise
  cells, every cell runs, every check cell passes, the figure is drawn and saved, and the maps
  the notebook computes with the solution's layer functions equal ``mg.backprop``'s;
* as handed out, the setup and given cells run, and every check cell fails with the exercise
  stub's ``NotImplementedError``;
* each exercise cell is a stub (signature, docstring, ``raise NotImplementedError``) of a
  solution function with the same signature, followed by its check cell; the functions the
  notebook gives are the solution file's, verbatim; and no solution code is in the notebook.
"""

import ast
import inspect
import json
import re
import traceback

import numpy as np
import pytest

import minigbp as mg
from example_scripts import EXAMPLES, load_example

COURSE = EXAMPLES / "course"
NOTEBOOK = COURSE / "assignment.ipynb"
FIGURE = "three_modes.png"


def read_notebook():
    with open(NOTEBOOK, encoding="utf-8") as f:
        return json.load(f)


def source(cell):
    s = cell["source"]
    return s if isinstance(s, str) else "".join(s)


def tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def function_names(src):
    return [n.name for n in ast.parse(src).body if isinstance(n, ast.FunctionDef)]


@pytest.fixture(scope="module")
def solution():
    return load_example("course/solution.py", "course_solution_under_test")


@pytest.fixture
def notebook_env(tmp_path, monkeypatch):
    """A temporary working directory and matplotlib's Agg backend (the checkers keep no
    example database, so the stubs' deliberate failures are saved nowhere)."""
    matplotlib = pytest.importorskip("matplotlib")
    pytest.importorskip("hypothesis")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    matplotlib.use("Agg", force=True)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    import matplotlib.pyplot as plt

    plt.close("all")


def run_cell(cell, ns):
    exec(compile(source(cell), f"<notebook cell {cell.get('id', '?')}>", "exec"), ns)


def stub_failure(exc):
    """Did ``exc`` come from an exercise stub: ``NotImplementedError`` itself, or a checker's
    ``AssertionError`` reporting that the student's function raised it?"""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, NotImplementedError) or "NotImplementedError" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# ---------------------------------------------------------------- with the solution

def test_notebook_runs_with_the_solution(solution, notebook_env, capsys):
    pytest.importorskip("hypothesis")
    nb = read_notebook()
    ns = {"__name__": "__course_notebook__"}
    checks = 0
    for cell in code_cells(nb):
        if "exercise" in tags(cell):
            names = function_names(source(cell))
            assert names, f"exercise cell {cell.get('id')} defines no function"
            cell = {**cell, "source": "\n\n".join(inspect.getsource(getattr(solution, n)) for n in names)}
        try:
            run_cell(cell, ns)
        except Exception:
            pytest.fail(f"cell {cell.get('id')} failed with the solution substituted:\n{traceback.format_exc()}\n"
                        f"--- cell source ---\n{source(cell)}")
        checks += "check" in tags(cell)
    out = capsys.readouterr().out

    # the check cells ran and passed (a failing checker raises), the last one included
    n_exercises = sum("exercise" in tags(c) for c in code_cells(nb))
    assert checks >= n_exercises + 1
    assert "Your three maps equal minigbp's." in out, out

    # the figure: the input and 2 rows x 3 modes, saved in the working directory
    from matplotlib.figure import Figure
    from PIL import Image

    fig = ns["fig"]
    assert isinstance(fig, Figure)
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 1 + 2 * len(mg.MODES)
    path = notebook_env / FIGURE
    assert path.is_file(), f"{FIGURE} was not written"
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 500 and im.size[1] > 300

    # the notebook's maps, made with the solution's layer functions, are mg.backprop's
    x, yours = ns["x"], ns["yours"]
    assert x.dtype == np.float64 and x.shape == (1, 1, 32, 32)
    model = mg.zoo.digits()
    pred = model(x).argmax(axis=1)
    assert np.array_equal(ns["pred"], pred)
    for mode in mg.MODES:
        want = mg.backprop(model, x, target=pred, mode=mode)
        assert yours[mode].shape == want.shape
        assert mg.rel_error(yours[mode], want) < 1e-9, mode
        assert np.abs(yours[mode]).max() > 0, mode
    assert mg.rel_error(yours["guided"], yours["vanilla"]) > 1e-3  # the modes really differ


# ------------------------------------------------------------- as handed out

def test_student_copy_runs_until_the_first_exercise_is_needed(notebook_env):
    pytest.importorskip("hypothesis")
    nb = read_notebook()
    cells = code_cells(nb)
    kinds = [("exercise" if "exercise" in tags(c) else "check" if "check" in tags(c) else "code") for c in cells]
    first_exercise = kinds.index("exercise")
    last_exercise = len(kinds) - 1 - kinds[::-1].index("exercise")
    last_check = kinds.index("check", last_exercise)
    ns = {"__name__": "__course_notebook__"}
    failed_checks = []
    for i, (cell, kind) in enumerate(zip(cells[:last_check + 1], kinds)):
        try:
            run_cell(cell, ns)
        except Exception as e:
            where = f"cell {cell.get('id')} ({kind})"
            if kind == "check":
                assert stub_failure(e), f"{where} failed, but not because of a stub:\n{traceback.format_exc()}"
                failed_checks.append(cell.get("id"))
            elif kind == "code" and i > first_exercise and isinstance(e, NotImplementedError):
                pass  # a demo calling an exercise function
            else:
                pytest.fail(f"{where} failed in the student copy:\n{traceback.format_exc()}")
        else:
            assert kind != "check", f"check cell {cell.get('id')} passed with the stubs in place"
    assert failed_checks and failed_checks == [c.get("id") for c, k in zip(cells[:last_check + 1], kinds)
                                               if k == "check"]
    # the stubs are there and say so
    for cell in cells:
        if "exercise" in tags(cell):
            for name in function_names(source(cell)):
                with pytest.raises(NotImplementedError):
                    fn = ns[name]
                    fn(*[None] * len([p for p in inspect.signature(fn).parameters.values()
                                      if p.default is inspect.Parameter.empty]))


# ----------------------------------------------------------------- structure

def _defined_functions(cells):
    """``{name: (ast.FunctionDef, cell source)}`` of the functions defined in ``cells``."""
    out = {}
    for cell in cells:
        src = source(cell)
        for node in ast.parse(src).body:
            if isinstance(node, ast.FunctionDef):
                out[node.name] = (node, src)
    return out


def _signature(fn_source, name):
    ns = {}
    exec(compile(fn_source, f"<{name}>", "exec"), ns)
    return inspect.signature(ns[name])


def _squash(text):
    return re.sub(r"\s+", "", text)


def test_exercises_match_the_solution_and_leak_nothing(solution):
    nb = read_notebook()
    assert nb["nbformat"] == 4
    cells = code_cells(nb)
    for cell in nb["cells"]:
        assert cell["cell_type"] in ("code", "markdown") and "id" in cell and "metadata" in cell
    for cell in cells:
        # handed out clean: no outputs (they would show the solution's), plain Python (no magics)
        assert cell["outputs"] == [] and cell["execution_count"] is None, cell.get("id")
        ast.parse(source(cell))
        assert not re.search(r"^\s*[%!]", source(cell), re.M), f"IPython syntax in cell {cell.get('id')}"

    exercise_cells = [c for c in cells if "exercise" in tags(c)]
    given_cells = [c for c in cells if "exercise" not in tags(c)]
    exercises = _defined_functions(exercise_cells)
    given = _defined_functions(given_cells)
    assert exercises, "no cell is tagged 'exercise'"
    solution_functions = {name: fn for name, fn in vars(solution).items()
                          if inspect.isfunction(fn) and fn.__module__ == solution.__name__}

    # every exercise: a stub of a solution function with the same signature, then its check cell
    for cell in exercise_cells:
        body = ast.parse(source(cell)).body
        assert body and all(isinstance(n, ast.FunctionDef) for n in body), \
            f"exercise cell {cell.get('id')} must hold only function definitions"
        for node in body:
            name = node.name
            assert name in solution_functions, f"exercise {name} has no function in solution.py"
            doc = ast.get_docstring(node)
            assert doc and len(doc.splitlines()) >= 3, f"exercise {name} needs a docstring (equation, shapes)"
            rest = node.body[1:]
            assert len(rest) == 1 and isinstance(rest[0], ast.Raise), f"exercise {name}: the stub must only raise"
            raised = rest[0].exc
            assert isinstance(raised, ast.Call) and getattr(raised.func, "id", None) == "NotImplementedError"
            assert _signature(ast.get_source_segment(source(cell), node), name) == \
                inspect.signature(solution_functions[name]), f"{name}: signature differs from solution.py's"
        following = cells[cells.index(cell) + 1]
        assert "check" in tags(following), f"exercise cell {cell.get('id')} is not followed by a check cell"
        for name in function_names(source(cell)):
            assert name in source(following) and "mg.testing.check_" in source(following)

    # every solution function is an exercise, or given in the notebook verbatim
    for name, fn in solution_functions.items():
        if name in exercises:
            continue
        assert name in given, f"solution.py's {name} is neither an exercise nor given in the notebook"
        node, src = given[name]
        assert ast.get_source_segment(src, node) == inspect.getsource(fn).rstrip("\n"), \
            f"the notebook's {name} differs from solution.py's"

    # no solution code in the notebook: no statement of an exercise's body (beyond what the
    # given functions also contain) appears anywhere in it
    text = _squash("".join(source(c) for c in nb["cells"]))
    given_text = _squash("".join(inspect.getsource(solution_functions[n]) for n in solution_functions
                                 if n not in exercises))
    sol_src = inspect.getsource(solution)
    leaked = []
    for name in exercises:
        node = next(n for n in ast.parse(sol_src).body if isinstance(n, ast.FunctionDef) and n.name == name)
        for stmt in ast.walk(ast.Module(body=node.body[1:], type_ignores=[])):
            if not isinstance(stmt, ast.stmt):
                continue
            code = _squash(ast.get_source_segment(sol_src, stmt))
            if code not in given_text and code in text:
                leaked.append(f"{name}: {ast.get_source_segment(sol_src, stmt)}")
    assert not leaked, "solution code in the student notebook:\n" + "\n".join(leaked)
