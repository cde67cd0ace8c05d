"""The per-layer probe of :func:`minigbp.verify.check`: where a function's signals part from
minigbp's, and what each ReLU did.

The function runs once more while the model runs node by node
(:class:`minigbp.verify.recorder.TorchRecorder` for a torch module,
:class:`minigbp.verify.keras_recorder.KerasRecorder` for a Keras model); minigbp traces the same inputs in each
mode (:func:`minigbp.trace`); :meth:`Trace.diff` names the first node, walking down from
the output, where the signals part, and each node's *local rule* is read off what it did
to the signal it received: a ReLU whose output signal equals the guided rule applied to
its input signal is "guided", whatever happened above it.
"""

import numpy as np

from ..model import INPUT
from ..layers import ReLU
from ..ops.relu import MODES
from ..gradcheck import rel_error
from .frameworks import describe
from .report import Divergence, Probe, ProbeRow
from .tracing import one_or_tuple, trace

__all__ = ["probe"]


def probe(side, fn, model, case, main_result, tol, dtype, warns, claimed, target=None):
    """Record every node of ``model`` (the user's, a fresh copy) during ``fn`` (``side.recorder``),
    trace minigbp in each mode, and compare them with :meth:`Trace.diff` and each node's local
    rule -> :class:`Probe`."""
    recorder = side.recorder(model, case.model)
    try:
        with recorder:
            final, _ = side.call(fn, model, case.x, case.targets, dtype, warns)
    except Exception as e:
        return Probe(False, f"attribute_fn failed while its model ran node by node: {describe(e)}", case.name)
    if len(recorder.runs) != 1:
        return Probe(False, f"the model ran {len(recorder.runs)} times during attribute_fn (several forward "
                            "passes?); the probe follows one", case.name)
    notes = []
    drift = _rel(final, main_result)
    if drift > tol:
        notes.append(f"run node by node, the function's result changed (relative difference {drift:.2g}); "
                     "the probe may not describe the original run")
    explained = np.asarray(case.targets, dtype=np.int64) if target is None else target
    ours = {m: trace(case.model, case.x, explained, mode=m) for m in MODES}
    theirs = _their_trace(recorder, case, final, claimed)
    for r in theirs.layers:
        if r.name in ours["vanilla"] and r.signal_in.shape != ours["vanilla"][r.name].signal_in.shape:
            return Probe(False, f"node {r.name} output shape {r.signal_in.shape} differs from minigbp's "
                                f"{ours['vanilla'][r.name].signal_in.shape}", case.name)
    top = ours["vanilla"].layers[-1].name
    divergence = {}
    for m in MODES:  # the first divergence, walking down from the output (Trace.diff on the signals)
        d = theirs.diff(ours[m], rtol=tol, outputs=False)
        divergence[m] = None if d is None else Divergence() if (d.layer, d.what) == (top, "signal in") \
            else Divergence(d.layer, d.type)
    layer_of, rows, relus = dict(case.model.named_leaves()), [], {}
    for r in reversed(theirs.layers):
        if r.name in layer_of:
            rows.append(_local_rule(r, layer_of[r.name], ours, tol, relus))
    # ReLUs the recipe skipped: they act as vanilla ReLUs where another mode was claimed
    skipped = list(relus.get("vanilla", [])) if claimed != "vanilla" else []
    return Probe(True, None, case.name, claimed, divergence, rows, relus, skipped, notes)


def _their_trace(recorder, case, final, claimed):
    """The recorded run as a float64 trace whose only node reading the input sends down what the
    function returned (the map being judged)."""
    theirs = recorder.trace(mode=claimed, target=f"classes {np.asarray(case.targets).tolist()}", result=final)
    for r in theirs.layers:
        for f in ("output", "signal_in", "signal_out", "input"):
            setattr(r, f, _float64(getattr(r, f)))
    readers = [n for n in case.model.nodes if INPUT in n.inputs]
    if len(readers) == 1 and readers[0].name in theirs:
        bottom = theirs[readers[0].name]
        if isinstance(bottom.input, np.ndarray) and final.size == bottom.input.size:
            bottom.signal_out = final.reshape(bottom.input.shape)
    return theirs


def _float64(v):
    if v is None:
        return None
    return tuple(_float64(u) for u in v) if isinstance(v, tuple) else np.asarray(v, dtype=np.float64)


def _local_rule(r, layer, ours, tol, relus):
    """One row of the probe table: the node's error against each mode, and which rule it followed
    (what it did to the signal it received; for ReLUs, added to ``relus`` by label)."""
    name, leaving = r.name, r.signal_out
    row = ProbeRow(name, type(layer).__name__, {m: _rel(leaving, ours[m][name].signal_out) for m in MODES})
    try:
        _, cache = layer.forward(*(r.input if isinstance(r.input, tuple) else (r.input,)))
        expect = {m: one_or_tuple(layer.backward(r.signal_in, cache, m)) for m in MODES}
        local = {m: _rel(leaving, expect[m]) for m in MODES}
    except (ValueError, TypeError) as e:
        row.rule = f"(not checked: {e})"
        return row
    fits = [m for m in MODES if local[m] <= tol]
    if isinstance(layer, ReLU):
        label = " = ".join(fits) if fits else _relu_at_zero(leaving, expect, r.input, tol)
        if len(fits) == 3:
            label = "any (cannot tell here)"
        row.rule = label
        relus.setdefault(label, []).insert(0, name)  # listed in forward order
    else:
        row.rule = ("as in minigbp" if fits else
                    f"differs from minigbp's {type(layer).__name__} (rel err {min(local.values()):.2g})")
    return row


def _relu_at_zero(leaving, expect, x, tol):
    """Label for a ReLU that follows no rule: "<mode>, except at x == 0" when it departs from
    one mode only where its input is exactly 0 (e.g. a mask written ``x >= 0``)."""
    if leaving.shape == x.shape:
        scale = max(np.abs(leaving).max(initial=0.0), max(np.abs(e).max(initial=0.0) for e in expect.values()))
        for m in reversed(MODES):  # guided first: the usual intent
            off = np.abs(leaving - expect[m]) > tol * scale
            if off.any() and (x[off] == 0).all():
                return f"{m}, except at x == 0"
    return "none of the three"


def _rel(got, want):
    """:func:`minigbp.rel_error` of one recorded signal (the worst input's, for a tuple of signals);
    a signal of another shape is infinitely far."""
    if isinstance(got, tuple) or isinstance(want, tuple):
        if not (isinstance(got, tuple) and isinstance(want, tuple) and len(got) == len(want)):
            return float("inf")
        return max((_rel(g, w) for g, w in zip(got, want)), default=0.0)
    return rel_error(got, want) if got.shape == want.shape else float("inf")
