"""The engine of the course checkers: run a student's functions on the examples of one
property, compare with minigbp, and turn the smallest failing example into a message.

:func:`run` checks an op property by property and returns one :class:`Outcome` each; the
``check_*`` functions of :mod:`minigbp.course` raise one ``AssertionError`` listing every
failed property.
"""

import inspect
import traceback
from collections import namedtuple

import numpy as np

from . import cases, report
from .cases import check_conditions
from .report import Failure
from .rules import RULES, check_rules, tolerance
from .specs import SPECS, style_of
from ..ops.relu import check_mode

#: one property of one function: ``passed`` and, when it failed, the student's ``message``
Outcome = namedtuple("Outcome", "function property about passed message")


IN_PLACE_WHY = ("the caller may use its arrays again after the call (the next layer, a second backward "
                "pass in another mode, a numerical gradient check), so layer functions never write into "
                "their inputs, dout or the cache.")


def _hyp():
    try:
        import hypothesis
    except ImportError as e:  # pragma: no cover - hypothesis comes with minigbp[course]
        raise ImportError("minigbp's course checkers need hypothesis and scipy: "
                          "pip install 'minigbp[course]'") from e
    return hypothesis


def _settings(max_examples):
    """Derandomized, no example database (nothing written to the working folder), no explain
    phase, one failure reported; ``max_examples`` from the active hypothesis profile unless given."""
    h = _hyp()
    kwargs = dict(derandomize=True, database=None, deadline=None, suppress_health_check=list(h.HealthCheck),
                  phases=(h.Phase.explicit, h.Phase.generate, h.Phase.shrink), report_multiple_bugs=False,
                  verbosity=h.Verbosity.quiet, print_blob=False)
    if max_examples is not None:
        kwargs["max_examples"] = max_examples
    return h.settings(**kwargs)


def _name(fn):
    return getattr(fn, "__name__", None) or type(fn).__name__


def _param_names(fn):
    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return []


def _where(e, fn):
    """`` (in FILE, line N: CODE)`` for the student's line that raised, if there is one."""
    frames = traceback.extract_tb(e.__traceback__)
    own = getattr(getattr(fn, "__code__", None), "co_filename", None)
    mine = [f for f in frames if f.filename == own] or [f for f in frames if "site-packages" not in f.filename
                                                         and "/minigbp/" not in f.filename]
    if not mine:
        return ""
    f = mine[-1]
    return f" (at {f.filename.rsplit('/', 1)[-1]}, line {f.lineno}: {(f.line or '').strip()})"


class _Run:
    """One property's checks of one function: calls the student's code and records the calls."""

    def __init__(self, spec, prop, style, rules, case, check_in_place, names=None):
        self.spec, self.prop, self.style, self.rules, self.case = spec, prop, style, rules, case
        self.check_in_place = check_in_place
        self.names = names or {}
        self.calls, self.cache = [], None

    def name(self, fn):
        """The name the student's file gives ``fn`` (an alias keeps its own name)."""
        return self.names.get(id(fn)) or _name(fn)

    def call(self, fn, args, kwargs, results, watch=()):
        """Call ``fn`` on copies of its array arguments. With ``check_in_place``, fail if it changed
        one of them, or one of ``watch`` (label, passed array, original)."""
        name = self.name(fn)
        line = report.call_line(name, args, kwargs, results, self.case, self.cache)
        self.calls.append((name, line))
        passed = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        try:
            result = fn(*passed, **kwargs)
        except Exception as e:
            raise Failure(f"{name} raised {type(e).__name__}: {e}{_where(e, fn)}",
                          hints=self._exception_hints(e, kwargs)) from None
        if self.check_in_place:
            names = _param_names(fn)
            for i, (a, p) in enumerate(zip(args, passed)):
                if isinstance(a, np.ndarray) and not np.array_equal(a, p, equal_nan=True):
                    what = names[i] if i < len(names) else f"argument {i}"
                    raise Failure(f"{name} modified its argument `{what}` in place: "
                                  "write the result into a new array and leave the inputs as they were")
            for label, p, a in watch:
                if not np.array_equal(a, p, equal_nan=True):
                    raise Failure(f"{name} modified `{label}` in place (the array your cache holds): "
                                  "leave the cache as the forward pass made it")
        return result, passed

    def _exception_hints(self, e, kwargs):
        hints = []
        text = str(e)
        if isinstance(e, TypeError) and "unexpected keyword argument" in text and self.spec.cs231n_param:
            hints.append(f"the checker called it with minigbp's signature (keyword arguments {', '.join(kwargs)}); "
                         f"for CS231n's signature, with a {self.spec.cs231n_param} dictionary, check it with "
                         "style='cs231n'.")
        if isinstance(e, TypeError) and ("only 0-dimensional arrays" in text or "only length-1 arrays" in text
                                         or "only integer scalar arrays" in text):
            hints.append("an array of one element was used as a number: NumPy 2 no longer converts it with int() "
                         "or float(); take the element with .item() (or index it, a[0]).")
        return hints

    def forward(self, fn, need_cache):
        """The student's ``out`` and ``cache`` (None when the forward returns ``out`` alone)."""
        args, kwargs = self.spec.forward_call(self.case)
        result, passed = self.call(fn, args, kwargs, "out, cache" if need_cache else "out")
        name = self.name(fn)
        if result is None:
            raise Failure(f"{name} returned None: is it finished? It must return out, cache.")
        if isinstance(result, (tuple, list)) and len(result) == 2:
            out, cache = result
        elif isinstance(result, np.ndarray) and not need_cache:
            out, cache = result, None
        else:
            got = f"a {type(result).__name__}" + (f" of {len(result)} items" if isinstance(result, (tuple, list))
                                                   else "")
            raise Failure(f"{name} returned {got}; it must return out, cache (two values)")
        self.cache = cache
        watch = [(k, p, a) for (k, a), p in zip(self.case.inputs.items(), passed) if isinstance(p, np.ndarray)]
        return out, cache, watch

    def compare(self, label, got, want, expected_label="expected"):
        """Fail unless ``got`` is an array of ``want``'s shape whose values agree (per the property)."""
        shown = {f"{expected_label} {label}": want, f"got {label}": got}
        if got is None:
            raise Failure(f"{label} is None: is the function finished? It must compute {label} and return it.",
                          {f"{expected_label} {label}": want, f"got {label}": None})
        if self.prop.name == "in-place":  # that property checks the inputs, not the values
            return
        if not isinstance(got, np.ndarray):
            try:
                got = np.asarray(got, dtype=np.float64)
            except (TypeError, ValueError):
                raise Failure(f"{label} is a {type(got).__name__}, not an array of numbers") from None
            shown[f"got {label}"] = got
        if got.shape != want.shape:
            raise Failure(f"{label} has shape {got.shape}, expected {want.shape}", shown)
        if self.prop.name == "shape":
            return
        if not (np.issubdtype(got.dtype, np.floating) or np.issubdtype(got.dtype, np.integer)
                or got.dtype == bool):
            raise Failure(f"{label} has dtype {got.dtype}, expected floating-point numbers", shown)
        if self.prop.name == "dtype":  # that property checks the dtypes, not the values
            if not np.issubdtype(got.dtype, np.floating):
                raise Failure(f"{label} has dtype {got.dtype} for {self.case.dtype} inputs: results are "
                              "floating-point (create them with np.zeros_like(x) or dtype=x.dtype)", shown)
            if self.case.dtype == np.float64 and got.dtype != np.float64:
                raise Failure(f"{label} is {got.dtype} for float64 inputs: it loses precision. Create results "
                              "with the inputs' dtype (np.zeros_like(x), or dtype=x.dtype).", shown)
            return
        tol = tolerance(got.dtype)
        scale = max(1.0, float(np.nanmax(np.abs(want), initial=0.0)))
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        bad = np.isnan(diff) & ~(np.isnan(got) & np.isnan(want)) | (diff > tol * scale)
        if bad.any():
            at = np.unravel_index(np.argmax(np.where(bad, np.nan_to_num(diff, nan=np.inf), -1)), diff.shape)
            at = tuple(int(i) for i in at)
            hints = []
            if not np.any(got) and np.any(want):
                hints.append(f"{label} is all zeros: is the function finished (does it fill {label} in, or only "
                             "create it with np.zeros)?")
            against = "the expected value" if expected_label == "expected" else f"{expected_label} version's"
            raise Failure(f"{label} differs from {against} at {int(bad.sum())} of {bad.size} entries; "
                          f"the largest difference is at index {at}: expected {want[at]}, got {got[at]} "
                          f"(tolerance {tol:.1e} x {scale:g} for a {got.dtype} result)", shown, hints)


def _as_grads(got, grads, name):
    if len(grads) == 1:
        if isinstance(got, (tuple, list)) and len(got) == 1:
            got = got[0]
        if isinstance(got, (tuple, list)):
            raise Failure(f"{name} returned {len(got)} values; it must return {grads[0]} alone")
        return (got,)
    if got is None:
        raise Failure(f"{name} returned None: is it finished? It must return {', '.join(grads)}.")
    if not isinstance(got, (tuple, list)) or len(got) != len(grads):
        n = f"{len(got)} values" if isinstance(got, (tuple, list)) else f"a {type(got).__name__}"
        raise Failure(f"{name} returned {n}; it must return {', '.join(grads)}")
    return tuple(got)


def _examples(spec, prop, conditions, style, backward):
    st = _hyp().strategies

    @st.composite
    def example(draw):
        r = dict(prop.draw)
        if r.get("dtype") == "either":
            r["dtype"] = draw(st.sampled_from([np.float32, np.float64]))
        case = spec.draw_case(draw, st, r, conditions, spec.options, style)
        case.reference = spec.reference(case)
        if backward:
            kind = "int" if r["values"] == "negative" else r["values"]
            case.dout = cases.array(draw, st, case.reference[0].shape, kind, case.dtype)
        return case

    return example()


def _run_one(spec, prop, forward, backward, naive, *, style, conditions, rules, modes, max_examples, names):
    """Check one property; the smallest failing example's :class:`Failure`, or None."""
    h = _hyp()

    def test(case):
        run = _Run(spec, prop, style, rules, case, prop.name == "in-place", names)
        try:
            _check(run, spec, prop, forward, backward, naive, case, rules, modes)
        except Failure as f:
            f.calls, f.case = run.calls, case
            beyond = spec.beyond_cs231n(case) if conditions == "pytorch" else None
            if beyond:
                f.hints.append(f"this case goes beyond what CS231n's docstrings let students assume: {beyond}. "
                               "If your course allows that assumption, grade with conditions='cs231n' "
                               "(--conditions cs231n).")
            raise

    try:
        h.given(_examples(spec, prop, conditions, style, backward is not None))(_settings(max_examples)(test))()
    except Failure as f:
        return f
    except h.errors.Flaky:
        return Failure("the function gave different results when run twice on the same input: does it use "
                       "randomness, or state kept between calls?")
    return None


def _check(run, spec, prop, forward, backward, naive, case, rules, modes):
    """One example: call the student's function(s) and compare, raising :class:`Failure`."""
    if backward is None:
        out, _, _ = run.forward(forward, need_cache=False)
        if naive is not None:
            run.compare("out", out, _naive_forward(naive, spec, prop, run, case), "your naive")
            return
        want = case.reference[0]
        try:
            run.compare("out", out, want)
        except Failure as f:
            f.hints += spec.hints("forward", case, (out,), (want,), rules, None)
            raise
        return
    fname, ref_cache = run.name(backward), case.reference[1]
    try:
        _, cache, watch = run.forward(forward, need_cache=True)
        instead = None
    except Failure as f:  # grade the backward on its own with the documented cache, if there is one
        cache, watch = spec.documented_cache(case), ()
        if cache is None:
            f.detail = f"{fname} could not be checked, because {run.name(forward)} failed first: {f.detail}"
            raise
        run.calls[-1] = (run.calls[-1][0], f"cache = {cache!r}  # the documented cache: your forward failed here")
        instead = f" (your {run.name(forward)} failed on this case, so {fname} was given the cache the course " \
                  f"documents: {f.detail})"
    for mode in ([prop.draw["mode"]] if "mode" in prop.draw else modes):
        args = (case.dout, cache) if tuple(modes) == ("vanilla",) else (case.dout, cache, mode)
        try:
            got, _ = run.call(backward, args, {}, ", ".join(spec.grads), watch)
            got = _as_grads(got, spec.grads, fname)
            if naive is not None:
                want, label = _naive_backward(naive, spec, prop, run, case, args[2:]), "your naive"
            else:
                want, label = spec.expected_backward(case, ref_cache, got, rules, mode), "expected"
            for name, g, w in zip(spec.grads, got, want):
                if w is None and g is None:
                    continue
                try:
                    run.compare(name if len(modes) == 1 else f"{name} ({mode})", g, w, label)
                except Failure as f:
                    f.hints += spec.hints("backward", case, got, want, rules, mode) if naive is None \
                        else _agreement_hints(spec, rules)
                    raise
        except Failure as f:
            f.mode = mode
            if instead:
                f.detail += instead
            raise


def _agreement_hints(spec, rules):
    if rules == "pytorch" and spec.family in ("maxpool", "relu"):
        return ["if your two versions differ only at tied maxima or at x == 0, both can be valid subgradients: "
                "a course that accepts any grades with rules='any-subgradient' (--rules any-subgradient)."]
    return []


def _naive_forward(naive, spec, prop, run, case):
    other = _Run(spec, prop, run.style, run.rules, case, False, run.names)
    try:
        out, _, _ = other.forward(naive[0], need_cache=False)
    except Failure as f:
        raise Failure(f"your naive version failed on this case, so the two cannot be compared: {f.detail}")
    return np.asarray(out)


def _naive_backward(naive, spec, prop, run, case, extra):
    other = _Run(spec, prop, run.style, run.rules, case, False, run.names)
    try:
        _, cache, _ = other.forward(naive[0], need_cache=True)
        got, _ = other.call(naive[1], (case.dout, cache) + tuple(extra), {}, "")
        got = _as_grads(got, spec.grads, other.name(naive[1]))
        return tuple(np.asarray(g) if g is not None else None for g in got)
    except Failure as f:
        raise Failure(f"your naive version failed on this case, so the two cannot be compared: {f.detail}")


def run(op, forward, backward=None, *, naive=None, style=None, conditions="pytorch", rules="pytorch",
        modes=("vanilla",), properties=None, max_examples=None, names=None, **options):
    """Check a student's ``forward`` (and ``backward``) for ``op`` property by property.

    Parameters
    ----------
    op : "conv" | "maxpool" | "avgpool" | "relu" | "linear" | "batchnorm"
    forward, backward : the student's functions (``backward`` None: check the forward alone)
    naive : ``(naive_forward, naive_backward)``: compare with the student's own naive version
        instead of minigbp (the property "agrees with naive")
    style : "minigbp" | "cs231n" | None (detected from the parameter names)
    conditions : "pytorch" | "cs231n" (see :data:`minigbp.course.cases.CONDITIONS`)
    rules : "pytorch" | "any-subgradient" (see :data:`minigbp.course.rules.RULES`)
    modes : the ReLU modes checked (``backward(dout, cache, mode)`` unless only "vanilla")
    properties : names of the properties to check (default: all that apply)
    names : ``{function: name}`` for the messages, when the student's file calls a function by
        another name than its ``__name__`` (an alias such as ``conv_backward_fast = conv_backward_strides``)
    options : keywords the student's function takes beyond the basic ones: ``dilation``, ``groups``
        (conv), ``padding`` (default True), ``dilation``, ``ceil_mode`` (max pooling),
        ``count_include_pad`` (average pooling)

    Returns
    -------
    list of :data:`Outcome`, one per property.
    """
    if op not in SPECS:
        raise ValueError(f"unknown op {op!r}; expected one of {', '.join(SPECS)}")
    check_conditions(conditions)
    check_rules(rules)
    for m in modes:
        check_mode(m)
    spec = SPECS[op](**options)
    style = spec.style_of(forward) if style is None else style_of(forward, style, None)
    props = spec.properties("backward" if backward else "forward", conditions, tuple(modes))
    if naive is not None:
        props = [spec.agreement(rules)]
    if properties is not None:
        unknown = set(properties) - {p.name for p in props}
        if unknown:
            raise ValueError(f"unknown properties {sorted(unknown)} for {op}; "
                             f"expected some of {', '.join(p.name for p in props)}")
        props = [p for p in props if p.name in properties]
    fn = backward or forward
    module = getattr(fn, "__module__", None)
    ids = {id(f): n for f, n in (names or {}).items()}
    fname = ids.get(id(fn)) or _name(fn)
    settings_text = f"conditions: {conditions}, rules: {rules}"
    outcomes = []
    for prop in props:
        failure = _run_one(spec, prop, forward, backward, naive, style=style, conditions=conditions, rules=rules,
                           modes=tuple(modes), max_examples=max_examples, names=ids)
        if failure is None:
            outcomes.append(Outcome(fname, prop.name, prop.about, True, ""))
            continue
        if prop.name == "in-place":
            why = IN_PLACE_WHY
        elif backward is None:
            why = spec.why_forward
        else:
            why = spec.why_backward(rules, failure.mode or modes[0])
        text = report.message(fname, prop, failure, why, module, settings_text, spec.describe)
        outcomes.append(Outcome(fname, prop.name, prop.about, False, text))
    return outcomes


def assert_outcomes(outcomes):
    """Raise one ``AssertionError`` listing every failed property, or return None."""
    failed = [o for o in outcomes if not o.passed]
    if failed:
        head = f"{len(failed)} of {len(outcomes)} properties failed: {', '.join(o.property for o in failed)}"
        raise AssertionError(head + "\n\n" + "\n\n".join(o.message for o in failed))


__all__ = ["Outcome", "run", "assert_outcomes", "tolerance", "RULES"]
