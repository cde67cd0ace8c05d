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
from dataclasses import dataclass

import numpy as np

from ..gradcheck import rel_error
from ..io.pytorch import _torch, from_torch, infer_input_shape
from ..model import forward_nodes
from ..ops.relu import MODES, check_mode
from ..targets import as_target
from .probe import probe as probe_layers
from .recorder import _NotRun, _call, _describe
from .report import Error, Input, ModeErrors, Report

__all__ = ["check", "Report", "RTOL"]

#: relative tolerance by the dtype the attribution function ran in
RTOL = {"float64": 1e-7, "float32": 1e-3}

#: activations of the integer-weight variant must stay below this to be exact in float32
_EXACT_LIMIT = 2.0 ** 24


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
        report.probe = probe_layers(torch, attribute_fn, _copy(torch, module, run.tdtype, worst.weights), worst,
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
