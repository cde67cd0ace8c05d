"""Is a PyTorch guided-backprop / deconvnet / saliency implementation right? Ask minigbp.

:func:`check` runs your attribution function and minigbp's three modes on the same
model and inputs, and says which mode (if any) your function computes::

    import minigbp as mg
    from captum.attr import GuidedBackprop

    def attribute_fn(model, x, target):
        return GuidedBackprop(model).attribute(x, target=target)

    report = mg.verify.check(my_torch_model, attribute_fn)
    print(report)                 # a table: error per mode, verdict, per-layer probe
    report.verdict                # "guided", "vanilla", "deconvnet", "none" or "error"

The contract of ``attribute_fn(model, x, target) -> tensor``
------------------------------------------------------------
* ``model``: the module to explain. It is a *copy* of yours (in eval mode, in
  float64 when your function accepts that, and once with other weights), so the
  function must use this argument rather than a model it closes over.
* ``x``: a float tensor (N, ...) that already ``requires_grad``; the function may
  use it as the leaf whose ``.grad`` it reads.
* ``target``: an int64 tensor (N,), one class per sample.
* returns the raw, signed signal at the input (tensor or array shaped like ``x``)
  for a seed of one-hot 1 at the target logit (Captum's convention and minigbp's
  default), without display post-processing (abs, max over channels, normalization).

Inputs
------
Besides the inputs you pass, three batches aim at the cases that separate correct
implementations from almost-correct ones: integer-valued inputs (ties inside
pooling windows, exact zeros at first-layer ReLUs), standard-normal inputs
(negative signals everywhere), and a copy of the module whose weights are sparse
small integers with integer inputs, so that *every* layer sees ties and exact
zeros (used only when all activations are exactly representable, so torch and
minigbp compute identical values).

Verdict
-------
A mode matches when, for every sample, ``max |yours - minigbp| <= rtol * max |minigbp|``
(``rtol`` 1e-7 when your function ran in float64, 1e-3 in float32). When no mode
matches, a per-layer probe runs your function once more while the model runs node by
node (its ``torch.fx`` graph, with the names :func:`minigbp.from_torch` gives, functional
ReLUs and additions included), records the signal arriving at and leaving every node,
replays minigbp's backward pass node by node in each mode, and names the first node
(walking down from the output) where the signals part, and which ReLUs behave like
vanilla, deconvnet or guided ReLUs. That is how "the guided rule was only hooked onto
``model.features``" shows up, and how, on torchvision's DenseNet, the ``F.relu`` after
``features.norm5`` that every module hook misses is named. Both sides are
:class:`minigbp.verify.tracing.Trace` objects (the torch one recorded by
:class:`minigbp.verify.recorder.TorchRecorder`), compared with :meth:`Trace.diff`.

The steps: :func:`_cases` (the inputs), :func:`_run` (the function on each, in float64 if
it accepts that), :func:`_score` (errors and verdict), :func:`_probe` (only when no mode
matches). What they find is a :class:`minigbp.verify.report.Report`.
"""

import copy
import warnings
from dataclasses import dataclass

import numpy as np

from ..gradcheck import rel_error
from ..io.pytorch import _torch, from_torch, infer_input_shape
from ..layers import ReLU
from ..model import INPUT, forward_nodes
from ..ops.relu import MODES, check_mode
from ..targets import as_target
from .recorder import TorchRecorder
from .report import Divergence, Error, Input, ModeErrors, Probe, ProbeRow, Report
from .tracing import one_or_tuple, trace

__all__ = ["check", "Report", "RTOL"]

#: relative tolerance by the dtype the attribution function ran in
RTOL = {"float64": 1e-7, "float32": 1e-3}

#: activations of the integer-weight variant must stay below this to be exact in float32
_EXACT_LIMIT = 2.0 ** 24


class _NotRun(Exception):
    pass


@dataclass
class Case:
    """One batch the function is checked on: the inputs and classes, minigbp's model for it, and
    the weights the torch module gets for it (None: its own)."""

    name: str
    x: np.ndarray
    targets: np.ndarray
    description: str
    model: object
    weights: dict = None


@dataclass
class Run:
    """The function's maps (float64) by input name, the torch dtype it ran in, the dtypes it returned."""

    results: dict
    tdtype: object
    returned: dict


# ------------------------------------------------------------------------- the check

def check(module, attribute_fn, inputs=None, targets=None, *, mode=None, batch=4, random_state=0,
          input_shape=None, integer_weights=True, probe=True, rtol=None):
    """Compare ``attribute_fn`` with minigbp's vanilla, deconvnet and guided maps.

    Parameters
    ----------
    module : torch.nn.Module
        Any module :func:`minigbp.from_torch` converts (torchvision's ResNet, DenseNet,
        VGG, SqueezeNet included). Never modified: the function receives copies.
    attribute_fn : callable ``attribute_fn(model, x, target) -> tensor``
        See the module docstring for the contract.
    inputs : tensor or array (N, ...), optional
        Extra inputs to check besides the generated ones.
    targets : int or N ints, optional
        Classes for ``inputs`` (random classes if omitted).
    mode : "vanilla" | "deconvnet" | "guided", optional
        The mode ``attribute_fn`` claims to compute; sets :attr:`Report.ok`.
    batch : int
        Samples per generated batch.
    random_state : int
        Seeds the generator of the inputs, targets and integer weights.
    input_shape : tuple, optional
        Shape of one sample, e.g. ``(3, 32, 32)``; inferred from ``inputs`` or the model.
    integer_weights : bool
        Also check on a copy of the module with small-integer weights (ties and zeros
        at every layer).
    probe : bool
        Run the per-layer probe when no mode matches.
    rtol : float, optional
        Override the tolerance (default :data:`RTOL` for the dtype the function ran in).

    Returns
    -------
    :class:`minigbp.verify.report.Report`

    Raises
    ------
    ValueError
        The module cannot be converted (``ConversionError``), or ``attribute_fn`` did
        not run the model it was given.
    """
    torch = _torch()
    if mode is not None:
        check_mode(mode)
    rng = np.random.default_rng(random_state)
    user_x = _user_inputs(torch, inputs)
    base = from_torch(module, dtype=np.float64, example_input=user_x)
    cases, notes = _cases(torch, module, base, rng, batch, input_shape, integer_weights, user_x, targets)
    report = Report(type(module).__name__, getattr(attribute_fn, "__qualname__", None) or type(attribute_fn).__name__,
                    mode, [Input(c.name, tuple(c.x.shape), c.description) for c in cases], notes=notes)
    warns = set()
    run = _run(torch, attribute_fn, module, cases, report, warns)
    if run is not None and _score(cases, run, report, rtol) and probe and not report.matches:
        focus = report.mode or report.closest
        worst = max(cases, key=lambda c: report.errors[focus].per_input[c.name].max_rel)
        report.probe = _probe(torch, attribute_fn, _copy(torch, module, run.tdtype, worst.weights), worst,
                              run.results[worst.name], report.rtol, run.tdtype, warns, focus)
    report.warnings = sorted(warns)
    return report


def _user_inputs(torch, inputs):
    """The caller's extra inputs as a float64 array (N, ...), or None."""
    if inputs is None:
        return None
    x = inputs.detach().cpu().numpy() if torch.is_tensor(inputs) else np.asarray(inputs)
    x = np.array(x, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"verify.check: inputs must be a batch (N, ...), got shape {x.shape}")
    return x


def _cases(torch, module, base, rng, batch, input_shape, integer_weights, user_x, targets):
    """The batches to check (module docstring) and notes on any left out."""
    if input_shape is not None:
        shape = (batch,) + tuple(int(s) for s in input_shape)
    else:
        shape = (batch,) + (user_x.shape[1:] if user_x is not None else infer_input_shape(base)[1:])
    try:
        out = base(np.zeros(shape))
    except (ValueError, TypeError) as e:
        raise ValueError(f"verify.check: the model does not run on inputs of shape {shape}: {e}") from e
    if out.ndim != 2:
        raise ValueError(f"verify.check: the model's output must be (N, classes), got shape {out.shape}")
    classes = out.shape[1]
    cases = [Case("integer x", rng.integers(-2, 3, shape).astype(np.float64), rng.integers(0, classes, batch),
                  "integer-valued inputs: ties in first-layer pooling windows, exact zeros", base),
             Case("normal x", rng.standard_normal(shape).astype(np.float32).astype(np.float64),
                  rng.integers(0, classes, batch), "standard-normal inputs: negative signals", base)]
    notes = []
    if integer_weights:
        weights, why = _integer_weights(torch, module, base, shape, rng)
        if weights is None:
            notes.append(f"integer-weight inputs skipped: {why}")
        else:
            cases.append(Case("integer weights", rng.integers(-2, 3, shape).astype(np.float64),
                              rng.integers(0, classes, batch), "a copy with sparse integer weights and integer "
                              "inputs: ties and exact zeros at every layer", _with_weights(base, weights), weights))
    if user_x is not None:
        if targets is None:
            t = rng.integers(0, classes, len(user_x))
        else:
            t = targets.detach().cpu().numpy() if torch.is_tensor(targets) else np.asarray(targets)
            t = np.broadcast_to(t, (len(user_x),)).astype(np.int64)
        cases.append(Case("your inputs", user_x, t, "the inputs passed to check()", base))
    return cases, notes


def _run(torch, fn, module, cases, report, warns):
    """Run ``fn`` on every case, in float64 if it accepts that (else in the module's dtype).
    Returns a :class:`Run`, or None with ``report.error`` set when the function failed."""
    own = _module_dtype(torch, module)
    results, returned, failures, tdtype = {}, {}, [], None
    for candidate in [torch.float64] if own == torch.float64 else [torch.float64, own]:
        try:
            results[cases[0].name], returned[cases[0].name] = _call(
                torch, fn, _copy(torch, module, candidate, cases[0].weights), cases[0].x, cases[0].targets,
                candidate, warns)
            tdtype = candidate
            break
        except _NotRun:
            raise ValueError(f"verify.check: {report.function} did not run the model it was given; "
                             "attribute_fn(model, x, target) must use its `model` argument (a copy of your "
                             "module), not a model it closes over") from None
        except Exception as e:  # the user's function: anything can happen
            failures.append((candidate, e))
    if tdtype is None:
        said = {}
        for d, e in failures:
            said.setdefault(_describe(e), []).append(str(d).replace("torch.", ""))
        report.error = "; ".join(f"{msg} (in {' and in '.join(ds)})" for msg, ds in said.items())
        return None
    dname = str(tdtype).replace("torch.", "")
    if tdtype == torch.float64 and own != torch.float64:
        report.notes.insert(0, f"ran on a float64 copy of the module (yours is {str(own).replace('torch.', '')})")
    elif failures:
        report.notes.insert(0, f"attribute_fn failed in float64 ({_describe(failures[0][1])}); "
                               f"ran in {dname}, the module's dtype")
    for c in cases:
        c.x = c.x.astype(dname).astype(np.float64)  # exactly what the function sees
    for c in cases[1:]:
        try:
            results[c.name], returned[c.name] = _call(torch, fn, _copy(torch, module, tdtype, c.weights), c.x,
                                                      c.targets, tdtype, warns)
        except Exception as e:
            report.error = f"on input {c.name!r}: {_describe(e)}"
            return None
    return Run(results, tdtype, returned)


def _score(cases, run, report, rtol):
    """Compare the maps with minigbp's in each mode, per sample (:func:`minigbp.rel_error`);
    set the report's dtype, tolerance, errors, matches and verdict. False when a map has the
    wrong shape (``report.error`` says so)."""
    dname = str(run.tdtype).replace("torch.", "")
    low = sorted({d for d in run.returned.values() if d != "float64"})
    if dname == "float64" and low:
        report.notes.append(f"attribute_fn returned {', '.join(low)} maps from a float64 model and input; "
                            "compared at float32 tolerance")
        dname = "float32"
    report.dtype, report.rtol = dname, rtol if rtol is not None else RTOL[dname]
    errors = {m: ModeErrors() for m in MODES}
    for c in cases:
        got = run.results[c.name]
        if got.shape != c.x.shape:
            report.error = (f"on input {c.name!r}: attribute_fn returned shape {got.shape}, expected the input's "
                            f"shape {c.x.shape}")
            return False
        out, tape = c.model.forward(c.x)
        seed = as_target(np.asarray(c.targets, dtype=np.int64)).seed(out)
        for m in MODES:
            want = c.model.backward(seed, tape, m)
            errors[m].add(c.name, Error(float(np.abs(got - want).max(initial=0.0)),
                                        max(rel_error(g, w) for g, w in zip(got, want))), report.rtol)
    report.errors = errors
    report.matches = tuple(m for m in MODES if errors[m].match)
    report.verdict = (report.matches[0] if len(report.matches) == 1
                      else "none" if not report.matches else "ambiguous")
    if len(report.matches) > 1:
        report.notes.append(f"the modes {', '.join(report.matches)} give the same maps on these inputs; pass "
                            "inputs that tell them apart")
    return True


def _with_weights(model, weights):
    """A copy of the minigbp ``model`` with other weights (its own arrays are not copied)."""
    twin = copy.deepcopy(model, memo={id(a): a for a in model.state_dict().values()})
    twin.load_state_dict(weights)
    return twin


def _describe(e):
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if len(msg) > 160:
        msg = msg[:160] + " ..."
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _module_dtype(torch, module):
    p = next(module.parameters(), None)
    if p is None or p.dtype not in (torch.float32, torch.float64):
        return torch.float32
    return p.dtype


def _copy(torch, module, tdtype, weights=None):
    """A fresh copy of the user's module (eval mode, ``tdtype``, other ``weights`` if given), one per
    call: a function may change the model it is given (cast it, leave hooks behind) without
    affecting the next call."""
    twin = copy.deepcopy(module).to(tdtype).eval()
    if weights is not None:
        with torch.no_grad():
            for name, p in list(twin.named_parameters()) + list(twin.named_buffers()):
                if name in weights:
                    p.copy_(torch.from_numpy(weights[name]))
    return twin


def _call(torch, fn, model, x, targets, tdtype, warns):
    """Run ``fn(model, x, target)`` once; the result as a float64 array."""
    xt = torch.tensor(x, dtype=tdtype).requires_grad_(True)
    tt = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    calls = []
    handles = [m.register_forward_pre_hook(lambda *a: calls.append(1)) for m in model.modules()]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = fn(model, xt, tt)
        warns.update(f"{w.category.__name__}: {w.message}" for w in caught)
    finally:
        for h in handles:
            h.remove()
    if not calls:
        raise _NotRun()
    if isinstance(out, (tuple, list)) and len(out) == 1:
        out = out[0]
    if torch.is_tensor(out):
        out = out.detach().cpu()
        dtype = str(out.dtype).replace("torch.", "")
        out = out.double().numpy()
    else:
        out = np.asarray(out)
        dtype = str(out.dtype)
    return np.asarray(out, dtype=np.float64), dtype


def _rel(got, want):
    """:func:`minigbp.rel_error` of one recorded signal (the worst input's, for a tuple of signals);
    a signal of another shape is infinitely far."""
    if isinstance(got, tuple) or isinstance(want, tuple):
        if not (isinstance(got, tuple) and isinstance(want, tuple) and len(got) == len(want)):
            return float("inf")
        return max((_rel(g, w) for g, w in zip(got, want)), default=0.0)
    return rel_error(got, want) if got.shape == want.shape else float("inf")


# ------------------------------------------------------------------- integer weights

def _integer_weights(torch, module, base, shape, rng):
    """Sparse small-integer weights for every parameter of ``module`` (weights in {-1, 0, 1} with
    at most k non-zeros per output unit, k = 4, else 2, else 1; biases in {-1, 0, 1}), or
    ``(None, reason)`` when even k = 1 would not keep the activations exact. BatchNorm layers get
    running mean 0 and variance ``4 - eps``: ``var + eps`` is exactly 4 in float32 and float64, so
    they scale by ``weight / 2``, exactly."""
    why = None
    for k in (4, 2, 1):
        weights = {}
        for name, m in module.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d) and m.running_var is not None:
                weights[f"{name}.running_mean"] = np.zeros(m.num_features, np.float32)
                weights[f"{name}.running_var"] = np.full(m.num_features, 4 - m.eps, np.float64)
        for name, p in module.named_parameters():
            if name.endswith("bias") or p.dim() == 1:
                weights[name] = rng.integers(-1, 2, tuple(p.shape)).astype(np.float32)
                continue
            rows = np.zeros((p.shape[0], int(np.prod(p.shape[1:]))), dtype=np.float32)
            taps = rng.integers(0, rows.shape[1], (rows.shape[0], min(k, rows.shape[1])))  # repeats: fewer taps
            rows[np.arange(rows.shape[0])[:, None], taps] = rng.choice(np.array([-1, 1], np.float32), taps.shape)
            weights[name] = rows.reshape(tuple(p.shape))
        why = _inexact(base, weights, shape)
        if why is None:
            return weights, None
    return None, why


def _inexact(base, weights, shape):
    """Why ``base`` with ``weights`` on integer inputs in [-2, 2] could compute inexact values, or None.

    The activations of ``|W|, |b|`` on ``|x| = 2`` bound every partial sum, so below 2**24
    every sum is exact in float32 (and float64) whatever the summation order; and float32
    must agree with float64 at every layer (this catches averages over windows whose size
    is not a power of two).
    """
    model = _with_weights(base, weights)
    absolute = _with_weights(base, {k: np.abs(v) for k, v in weights.items()})
    z64 = np.random.default_rng(0).integers(-2, 3, shape).astype(np.float64)
    bounds, v64, v32 = ({} for _ in range(3))
    for m, x, seen in ((absolute, np.full(shape, 2.0), bounds), (model, z64, v64), (model, z64.astype(np.float32), v32)):
        forward_nodes(m.nodes, x, on_step=lambda name, layer, out, seen=seen: seen.__setitem__(name, out))
    for name, _ in model.named_leaves():
        if bounds[name].size and bounds[name].max() >= _EXACT_LIMIT:
            return f"activations could reach {bounds[name].max():.3g} at {name} (not exact in float32)"
        if not np.array_equal(v64[name], v32[name].astype(np.float64)):
            return f"activations at {name} are not exactly representable (e.g. averages over 3 values)"
    return None


# --------------------------------------------------------------------------- the probe

def _probe(torch, fn, tmod, case, main_result, tol, tdtype, warns, claimed):
    """Record every node of ``tmod`` during ``fn`` (:class:`TorchRecorder`), trace minigbp in each
    mode, and compare them with :meth:`Trace.diff` and each node's local rule -> :class:`Probe`."""
    recorder = TorchRecorder(tmod)
    try:
        with recorder:
            final, _ = _call(torch, fn, tmod, case.x, case.targets, tdtype, warns)
    except Exception as e:
        return Probe(False, f"attribute_fn failed while its model ran node by node: {_describe(e)}", case.name)
    if len(recorder.runs) != 1:
        return Probe(False, f"the model ran {len(recorder.runs)} times during attribute_fn (several forward "
                            "passes?); the probe follows one", case.name)
    notes = []
    drift = _rel(final, main_result)
    if drift > tol:
        notes.append(f"run node by node, the function's result changed (relative difference {drift:.2g}); "
                     "the probe may not describe the original run")
    targets = np.asarray(case.targets, dtype=np.int64)
    ours = {m: trace(case.model, case.x, targets, mode=m) for m in MODES}
    theirs = _torch_trace(recorder, case, final, claimed)
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


def _torch_trace(recorder, case, final, claimed):
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
