"""Grading a student's file: find the layer functions by name, check them property by property,
one point each, and write the points table or Gradescope's ``results.json``.

Names looked for (CS231n's assignment 2, or :mod:`minigbp.ops`')::

    CS231n:  conv_forward_naive / conv_backward_naive, max_pool_forward_naive / max_pool_backward_naive,
             relu_forward / relu_backward, affine_forward / affine_backward,
             and, when present, conv_*_fast and max_pool_*_fast (also compared with the naive ones)
    minigbp: conv2d_*, maxpool2d_*, avgpool2d_*, relu_*, linear_*, batchnorm2d_* (forward and
             backward, each also as *_naive; the vectorized ones are compared with the naive ones)

A file with any CS231n name is graded as CS231n's assignment: all four naive pairs are expected,
and a missing function scores zero. In a minigbp-style file, the ops the file defines are graded
(a forward without its backward, or the reverse, scores zero for the missing one). A function that
raises, hangs (``time_limit`` seconds per property) or returns nonsense loses that property's
point; the others are still graded.
"""

import importlib.util
import inspect
import json
import os
import signal
import sys
import threading
import traceback
from collections import namedtuple

from ..ops.relu import MODES
from .checkers import Outcome, run
from .specs import SPECS

#: op, forward name, backward name, the naive pair a fast pair is compared with
Entry = namedtuple("Entry", "op forward backward naive")

CS231N = [Entry("conv", "conv_forward_naive", "conv_backward_naive", None),
          Entry("maxpool", "max_pool_forward_naive", "max_pool_backward_naive", None),
          Entry("relu", "relu_forward", "relu_backward", None),
          Entry("linear", "affine_forward", "affine_backward", None)]
CS231N_FAST = [Entry("conv", "conv_forward_fast", "conv_backward_fast", CS231N[0]),
               Entry("maxpool", "max_pool_forward_fast", "max_pool_backward_fast", CS231N[1])]
_MINIGBP_OPS = [("conv", "conv2d"), ("maxpool", "maxpool2d"), ("avgpool", "avgpool2d"), ("relu", "relu"),
                ("linear", "linear"), ("batchnorm", "batchnorm2d")]
MINIGBP = [Entry(op, f"{n}_forward_naive", f"{n}_backward_naive", None) for op, n in _MINIGBP_OPS]
MINIGBP_FAST = [Entry(op, f"{n}_forward", f"{n}_backward", MINIGBP[i]) for i, (op, n) in enumerate(_MINIGBP_OPS)]

#: CS231n's names; relu_forward and relu_backward are minigbp's too, so they do not tell the family
CS231N_NAMES = {n for e in CS231N + CS231N_FAST for n in (e.forward, e.backward)}

#: keyword options a minigbp-style function is checked with when its signature has them
_OPTIONS = {"conv": ("dilation", "groups"), "maxpool": ("padding", "dilation", "ceil_mode"),
            "avgpool": ("padding", "ceil_mode", "count_include_pad")}


class StudentFileError(Exception):
    """The student's file raised while it was imported: nothing in it can be graded."""


class TimeLimit(BaseException):
    """A property ran out of time (a BaseException, so that no student code or test engine swallows it)."""


def load_file(path):
    """Import the student's file as a module named after it (its folder first on ``sys.path``).

    Raises ``FileNotFoundError`` when there is no such file and :class:`StudentFileError` (with
    the error's last line) when the file raises, ``SystemExit`` included."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(2, "No such file", path)
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, os.path.dirname(path))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:
        where = "".join(traceback.format_exception_only(type(e), e)).strip()
        raise StudentFileError(f"{path} could not be imported, so nothing was graded:\n{where}") from e
    finally:
        sys.path.remove(os.path.dirname(path))
    return module


def entries(module):
    """The :data:`Entry` list to grade for ``module``: CS231n's when it has any CS231n name."""
    names = set(dir(module))
    if names & (CS231N_NAMES - {"relu_forward", "relu_backward"}):
        return CS231N + [e for e in CS231N_FAST if {e.forward, e.backward} & names]
    return [e for e in MINIGBP + MINIGBP_FAST if {e.forward, e.backward} & names]


def _options(op, fn):
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    return {k: k in params for k in _OPTIONS.get(op, ())}


def _modes(fn):
    """All three modes when ``relu_backward`` takes a third argument (the mode), else vanilla."""
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return ("vanilla",)
    return MODES if len(params) >= 3 else ("vanilla",)


def _zeros(name, props, message):
    return [Outcome(name, p.name, p.about, False, f"{name}: {message}") for p in props]


def _with_time_limit(seconds, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, interrupted after ``seconds`` (on the main thread of a Unix process)."""
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        return fn(*args, **kwargs)

    def stop(signum, frame):
        raise TimeLimit()

    before = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn(*args, **kwargs)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


def _grade_one(fn_name, spec, props, forward, backward, naive, conditions, rules, modes, max_examples, time_limit,
               names):
    """Outcomes of one function (a forward when ``backward`` is None), property by property."""
    op = spec.family
    style = "cs231n" if fn_name in CS231N_NAMES and op in ("conv", "maxpool", "linear") else "minigbp"
    if naive is not None:
        props = props + [spec.agreement(rules)]
    outcomes = []
    for prop in props:
        against = naive if prop.name == "agrees with naive" else None
        try:
            outcomes += _with_time_limit(time_limit, run, op, forward, backward, naive=against, style=style,
                                         conditions=conditions, rules=rules, modes=modes,
                                         properties=None if against else [prop.name],
                                         max_examples=max_examples, names=names, **spec.options)
        except TimeLimit:
            outcomes.append(Outcome(fn_name, prop.name, prop.about, False,
                                    f"{fn_name}: property {prop.name!r} did not finish within {time_limit:g} s "
                                    "(an endless loop? or very slow code on tiny inputs)"))
    return outcomes


def grade_module(module, *, conditions="pytorch", rules="pytorch", max_examples=None, time_limit=60):
    """Grade every expected function of ``module``: a list of :data:`Outcome`, one point each."""
    outcomes = []
    for e in entries(module):
        forward, backward = getattr(module, e.forward, None), getattr(module, e.backward, None)
        naive = None
        if e.naive is not None:
            nf, nb = getattr(module, e.naive.forward, None), getattr(module, e.naive.backward, None)
            naive = (nf, nb) if callable(nf) and callable(nb) else None
        # the names the file gives (an alias such as conv_backward_fast = conv_backward_strides keeps its own)
        names = {f: n for n in ((e.naive.forward, e.naive.backward) if e.naive else ()) + (e.forward, e.backward)
                 for f in [getattr(module, n, None)] if callable(f)}
        # a missing forward: the options of its family (CS231n's pooling takes no padding)
        options = _options(e.op, forward) if callable(forward) else {"padding": e in MINIGBP + MINIGBP_FAST}
        spec = SPECS[e.op](**options)
        modes = _modes(backward) if e.op == "relu" and callable(backward) else ("vanilla",)
        for name, is_forward in ((e.forward, True), (e.backward, False)):
            props = spec.properties("forward" if is_forward else "backward", conditions, modes)
            if not callable(getattr(module, name, None)):
                outcomes += _zeros(name, props, f"not found in {module.__name__}: define a function named {name}")
            elif not is_forward and not callable(forward):
                outcomes += _zeros(name, props, f"cannot be checked without {e.forward}, whose cache it takes")
            else:
                outcomes += _grade_one(name, spec, props, forward, None if is_forward else backward,
                                       None if naive is None else (naive if not is_forward else (naive[0], None)),
                                       conditions, rules, modes if not is_forward else ("vanilla",), max_examples,
                                       time_limit, names)
    return outcomes


def table(outcomes):
    """The points table: one line per function and property, then the total."""
    width = max([len(o.function) for o in outcomes] + [8])
    pwidth = max([len(o.property) for o in outcomes] + [8])
    lines = [f"{'function':<{width}}  {'property':<{pwidth}}  points"]
    for o in outcomes:
        lines.append(f"{o.function:<{width}}  {o.property:<{pwidth}}  {int(o.passed)}/1"
                     + ("" if o.passed else "  FAILED"))
    score = sum(o.passed for o in outcomes)
    lines.append(f"total: {score}/{len(outcomes)}")
    return "\n".join(lines)


def gradescope(outcomes, settings_text=""):
    """Gradescope's ``results.json`` contents: ``score`` and one test per function and property."""
    tests = [{"name": f"{o.function}: {o.property}", "score": int(o.passed), "max_score": 1,
              "status": "passed" if o.passed else "failed",
              "output": o.about if o.passed else o.message} for o in outcomes]
    return {"score": sum(o.passed for o in outcomes), "output": settings_text, "tests": tests}


def write_json(path, outcomes, settings_text=""):
    with open(path, "w") as f:
        json.dump(gradescope(outcomes, settings_text), f, indent=1)
