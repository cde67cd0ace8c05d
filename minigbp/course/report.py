"""Failure messages a student can act on: the property, the smallest case, expected against got
at full precision with dtypes, why the expected value is what it is, hints for known
mistakes, and a snippet that reproduces the case. No hypothesis internals."""

import sys

import numpy as np


class Failure(Exception):
    """A student's function failed one example. ``detail``: one line saying what went wrong;
    ``shown``: label -> array (expected and got); ``hints``; ``calls``, ``case`` and ``mode`` (the
    ReLU mode that failed) are filled in by the checker."""

    def __init__(self, detail, shown=None, hints=()):
        super().__init__(detail)
        self.detail, self.shown, self.hints = detail, dict(shown or {}), list(hints)
        self.calls, self.case, self.mode = [], None, None


def show(a):
    """An array as Python source at full precision: ``np.array([...])`` with its dtype if not float64."""
    a = np.asarray(a)
    if a.dtype == object:
        return repr(a.tolist())
    if a.size == 0:
        return f"np.empty({a.shape})"
    text = np.array2string(a, separator=", ", floatmode="unique", threshold=sys.maxsize, max_line_width=100)
    if a.ndim == 0:
        text = repr(a.item())
    dtype = "" if a.dtype == np.float64 else f", dtype=np.{a.dtype}"
    if "\n" in text:
        text = text.replace("\n", "\n" + " " * 9)
    return f"np.array({text}{dtype})"


def _label_of(value, case, cache):
    for name, a in case.inputs.items():
        if value is a:
            return name
    if case.dout is not None and value is case.dout:
        return "dout"
    if cache is not None and value is cache:
        return "cache"
    return repr(value)


def call_line(name, args, kwargs, results, case, cache=None):
    """``results = name(args..., key=value...)`` with arrays named as in the reproduction."""
    parts = [_label_of(a, case, cache) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{results} = {name}({', '.join(parts)})"


def reproduction(module, calls, case):
    names = sorted({c[0] for c in calls})
    head = ["import numpy as np", ""]
    if module and module != "__main__":
        head.insert(1, f"from {module} import {', '.join(names)}")
    else:
        head.insert(1, f"# with your {', '.join(names)} defined")
    arrays = [f"{name} = {show(a)}" for name, a in case.inputs.items()]
    if case.dout is not None and any("dout" in c[1] for c in calls):
        arrays.append(f"dout = {show(case.dout)}")
    body = [c[1] for c in calls]
    return "\n".join("    " + line for line in head + arrays + body)


def describe_case(case, describe):
    shapes = ", ".join(f"{k}.shape={a.shape}" for k, a in case.inputs.items())
    params = ", ".join(f"{k}={v}" for k, v in describe(case).items())
    dtype = case.dtype
    return shapes + (", " + params if params else "") + (f" ({dtype})" if dtype != np.float64 else "")


def message(function, prop, failure, why, module, settings_text, describe):
    """The whole message for one failed property of ``function``."""
    lines = [f"{function}: property {prop.name!r} failed ({prop.about}) [{settings_text}]",
             failure.detail]
    case = failure.case
    if case is not None:
        lines += ["", f"Smallest failing case: {describe_case(case, describe)} (its arrays are in the reproduction "
                      "below)"]
    for label, a in failure.shown.items():
        if a is None:
            lines.append(f"  {label} = None")
        else:
            a = np.asarray(a)
            if label.startswith("expected") and case is not None and a.dtype.kind == "f":
                a = a.astype(case.dtype) + 0  # in the inputs' dtype, and -0.0 shown as 0.0
            lines.append(f"  {label} ({a.dtype}) = {show(a)}")
    if why:
        lines += ["", "Why: " + why]
    for h in failure.hints:
        lines += ["Hint: " + h]
    if failure.calls and case is not None:
        lines += ["", "Reproduce:", reproduction(module, failure.calls, case)]
    return "\n".join(lines)
