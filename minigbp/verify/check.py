"""Is a guided-backprop / deconvnet / saliency implementation right? Ask minigbp.

:func:`check` runs your attribution function and minigbp's three modes on the same
model and inputs, and says which mode (if any) your function computes. The model is a
PyTorch module or a Keras model (Sequential or functional)::

    import minigbp as mg
    from captum.attr import GuidedBackprop

    def attribute_fn(model, x, target):
        return GuidedBackprop(model).attribute(x, target=target)

    report = mg.verify.check(my_torch_model, attribute_fn)
    print(report)                 # a table: error per mode, verdict, per-layer probe
    report.verdict                # "guided", "vanilla", "deconvnet", "none" or "error"

The contract of ``attribute_fn(model, x, target) -> tensor``
------------------------------------------------------------
* ``model``: the model to explain. It is a *copy* of yours (in eval mode, in
  float64 when your function accepts that, and once with other weights), so the
  function must use this argument rather than a model it closes over; it may change
  the copy (hooks, swapped activations) without affecting the next call.
* ``x``: a float tensor in the model's own layout. PyTorch: (N, C, H, W), already
  ``requires_grad`` (the function may read its ``.grad``). TensorFlow: a ``tf.Tensor``
  (N, H, W, C) (watch it in a ``tf.GradientTape``).
* ``target``: an int tensor (N,), one class per sample (int64 in torch, int32 in TF).
* returns the raw, signed signal at the input (tensor or array shaped like ``x``)
  for a seed of one-hot 1 at the target's output (the logit, or the probability of a
  model that ends in a softmax, as Keras applications do), without display
  post-processing (abs, max over channels, normalization). A function that explains a
  layer instead (the sum of ``block5_conv4``'s output, say) is checked with
  ``target="layer:block5_conv4"``; it still receives the classes, and may ignore them.

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
node (a torch module as its ``torch.fx`` graph, with the names :func:`minigbp.from_torch`
gives, functional ReLUs and additions included; a Keras model layer by layer, its
activations too, see :mod:`minigbp.verify.keras_recorder`), records the signal arriving
at and leaving every node,
replays minigbp's backward pass node by node in each mode, and names the first node
(walking down from the output) where the signals part, and which ReLUs behave like
vanilla, deconvnet or guided ReLUs. That is how "the guided rule was only hooked onto
``model.features``" shows up, and how, on torchvision's DenseNet, the ``F.relu`` after
``features.norm5`` that every module hook misses is named. Both sides are
:class:`minigbp.verify.tracing.Trace` objects (the torch one recorded by
:class:`minigbp.verify.recorder.TorchRecorder`), compared with :meth:`Trace.diff`.

The steps: :func:`_cases` (the inputs), :func:`_run` (the function on each, in float64 if
it accepts that), :func:`_score` (errors and verdict), the probe (only when no mode
matches). What they find is a :class:`minigbp.verify.report.Report`. What each framework
provides for them is in :mod:`minigbp.verify.frameworks`.
"""

from dataclasses import dataclass

import numpy as np

from ..gradcheck import rel_error
from ..layers import Softmax
from ..model import forward_nodes
from ..ops.relu import MODES, check_mode
from ..targets import as_target
from .frameworks import NotRun, describe, framework
from .probe import probe as probe_layers
from .report import Error, Input, ModeErrors, Report

__all__ = ["check", "Report", "RTOL"]

#: relative tolerance by the dtype the attribution function ran in
RTOL = {"float64": 1e-7, "float32": 1e-3}

#: activations of the integer-weight variant must stay below this to be exact in float32
_EXACT_LIMIT = 2.0 ** 24


@dataclass
class Case:
    """One batch the function is checked on: the inputs and classes (minigbp's layout), minigbp's
    model for it, and the weights the user's model gets for it (None: its own)."""

    name: str
    x: np.ndarray
    targets: np.ndarray
    description: str
    model: object
    weights: dict = None


@dataclass
class Run:
    """The function's maps (float64, minigbp's layout) by input name, the dtype it ran in, the
    dtypes it returned."""

    results: dict
    dtype: str
    returned: dict


# ------------------------------------------------------------------------- the check

def check(model, attribute_fn, inputs=None, targets=None, *, target=None, mode=None, batch=4, random_state=0,
          input_shape=None, integer_weights=True, probe=True, rtol=None):
    """Compare ``attribute_fn`` with minigbp's vanilla, deconvnet and guided maps.

    Parameters
    ----------
    model : torch.nn.Module or keras.Model
        Any model :func:`minigbp.from_torch` or :func:`minigbp.from_keras` converts
        (torchvision's ResNet, DenseNet, VGG, SqueezeNet; Keras's applications). Never
        modified: the function receives copies.
    attribute_fn : callable ``attribute_fn(model, x, target) -> tensor``
        See the module docstring for the contract.
    inputs : tensor or array (N, ...), optional
        Extra inputs to check besides the generated ones, in the model's layout.
    targets : int or N ints, optional
        Classes for ``inputs`` (random classes if omitted).
    target : str, optional
        What the function explains when it is not the class it is given:
        ``"layer:NAME"``, ``"channel:NAME:C"`` or ``"neuron:NAME:C:Y:X"`` (minigbp's seed
        is then ones at that layer's output, channel or unit).
    mode : "vanilla" | "deconvnet" | "guided", optional
        The mode ``attribute_fn`` claims to compute; sets :attr:`Report.ok`.
    batch : int
        Samples per generated batch.
    random_state : int
        Seeds the generator of the inputs, targets and integer weights.
    input_shape : tuple, optional
        Shape of one sample in the model's layout, e.g. ``(3, 32, 32)`` for torch,
        ``(32, 32, 3)`` for Keras; inferred from ``inputs`` or the model.
    integer_weights : bool
        Also check on a copy of the model with small-integer weights (ties and zeros
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
        The model cannot be converted (``ConversionError``), or ``attribute_fn`` did
        not run the model it was given.
    """
    side = framework(model)
    if mode is not None:
        check_mode(mode)
    if target is not None and as_target(target).layer is None:
        raise ValueError(f"verify.check: target must name a layer (layer:NAME, channel:NAME:C, "
                         f"neuron:NAME:C:Y:X), got {target!r}; classes are what the function is given")
    rng = np.random.default_rng(random_state)
    user_x = _user_inputs(side, inputs)
    base = side.convert(user_x)
    if target is not None:
        base.resolve(as_target(target).layer)  # names the layer if there is none such
    cases, notes = _cases(side, base, rng, batch, input_shape, integer_weights, user_x, targets)
    report = Report(side.model_name, getattr(attribute_fn, "__qualname__", None) or type(attribute_fn).__name__,
                    mode, [Input(c.name, side.own_layout(c.x.shape), c.description) for c in cases], notes=notes,
                    target=None if target is None else as_target(target).describe())
    warns = set()
    run = _run(side, attribute_fn, cases, report, warns)
    if run is not None and _score(cases, run, report, rtol, target) and probe and not report.matches:
        focus = report.mode or report.closest
        worst = max(cases, key=lambda c: report.errors[focus].per_input[c.name].max_rel)
        report.probe = probe_layers(side, attribute_fn, side.copy(run.dtype, worst.weights), worst,
                                    run.results[worst.name], report.rtol, run.dtype, warns, focus, target)
    report.warnings = sorted(warns)
    return report


def _user_inputs(side, inputs):
    """The caller's extra inputs as a float64 array in minigbp's layout (N, C, H, W), or None."""
    if inputs is None:
        return None
    x = inputs.detach().cpu().numpy() if hasattr(inputs, "detach") else np.asarray(inputs)
    x = np.array(x, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"verify.check: inputs must be a batch (N, ...), got shape {x.shape}")
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if side.name == "keras" and x.ndim == 4 else x


def _cases(side, base, rng, batch, input_shape, integer_weights, user_x, targets):
    """The batches to check (module docstring) and notes on any left out."""
    if input_shape is None and user_x is not None:
        shape = (batch,) + user_x.shape[1:]
    else:
        shape = (batch,) + tuple(side.sample_shape(base, input_shape))
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
        weights, model, why = _integer_weights(side, base, shape, rng)
        if weights is None:
            notes.append(f"integer-weight inputs skipped: {why}")
        else:
            cases.append(Case("integer weights", rng.integers(-2, 3, shape).astype(np.float64),
                              rng.integers(0, classes, batch), "a copy with sparse integer weights and integer "
                              "inputs: ties and exact zeros at every layer", model, weights))
    if user_x is not None:
        if targets is None:
            t = rng.integers(0, classes, len(user_x))
        else:
            t = targets.detach().cpu().numpy() if hasattr(targets, "detach") else np.asarray(targets)
            t = np.broadcast_to(t, (len(user_x),)).astype(np.int64)
        cases.append(Case("your inputs", user_x, t, "the inputs passed to check()", base))
    return cases, notes


def _run(side, fn, cases, report, warns):
    """Run ``fn`` on every case, in float64 if it accepts that (else in the model's dtype).
    Returns a :class:`Run`, or None with ``report.error`` set when the function failed."""
    own = side.own_dtype
    results, returned, failures, dtype = {}, {}, [], None
    for candidate in ["float64"] if own == "float64" else ["float64", own]:
        try:
            results[cases[0].name], returned[cases[0].name] = side.call(
                fn, side.copy(candidate, cases[0].weights), cases[0].x, cases[0].targets, candidate, warns)
            dtype = candidate
            break
        except NotRun:
            raise ValueError(f"verify.check: {report.function} did not run the model it was given; "
                             "attribute_fn(model, x, target) must use its `model` argument (a copy of your "
                             "model), not a model it closes over") from None
        except Exception as e:  # the user's function: anything can happen
            failures.append((candidate, e))
    if dtype is None:
        said = {}
        for d, e in failures:
            said.setdefault(describe(e), []).append(d)
        report.error = "; ".join(f"{msg} (in {' and in '.join(ds)})" for msg, ds in said.items())
        return None
    if dtype == "float64" and own != "float64":
        report.notes.insert(0, f"ran on a float64 copy of the model (yours is {own})")
    elif failures:
        report.notes.insert(0, f"attribute_fn failed in float64 ({describe(failures[0][1])}); "
                               f"ran in {dtype}, the model's dtype")
    for c in cases:
        c.x = c.x.astype(dtype).astype(np.float64)  # exactly what the function sees
    for c in cases[1:]:
        try:
            results[c.name], returned[c.name] = side.call(fn, side.copy(dtype, c.weights), c.x, c.targets, dtype,
                                                          warns)
        except Exception as e:
            report.error = f"on input {c.name!r}: {describe(e)}"
            return None
    return Run(results, dtype, returned)


def _score(cases, run, report, rtol, target):
    """Compare the maps with minigbp's in each mode, per sample (:func:`minigbp.rel_error`);
    set the report's dtype, tolerance, errors, matches and verdict. False when a map has the
    wrong shape (``report.error`` says so)."""
    dname = run.dtype
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
                            f"shape")
            return False
        t = as_target(np.asarray(c.targets, dtype=np.int64) if target is None else target)
        out, tape = c.model.forward(c.x, upto=t.layer)  # one forward pass serves the three modes
        seed = t.seed(out)
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


# ------------------------------------------------------------------- integer weights

def _integer_weights(side, base, shape, rng):
    """Sparse small-integer weights (:meth:`integer_weights` of the framework, at most k = 4, else
    2, else 1 non-zeros per output unit) and the minigbp model holding them, or
    ``(None, None, reason)`` when even k = 1 would not keep the activations exact."""
    why = None
    for k in (4, 2, 1):
        weights = side.integer_weights(rng, k)
        model = side.minigbp_with(base, weights)
        why = _inexact(model, side.minigbp_with(base, side.absolute(weights)), shape)
        if why is None:
            return weights, model, None
    return None, None, why


def _inexact(model, absolute, shape):
    """Why ``model`` on integer inputs in [-2, 2] could compute inexact values, or None.

    The activations of ``absolute`` (the same weights, absolute values) on ``|x| = 2``
    bound every partial sum, so below 2**24 every sum is exact in float32 (and float64)
    whatever the summation order; and float32 must agree with float64 at every layer (this
    catches averages over windows whose size is not a power of two).
    """
    z64 = np.random.default_rng(0).integers(-2, 3, shape).astype(np.float64)
    bounds, v64, v32 = ({} for _ in range(3))
    for m, x, seen in ((absolute, np.full(shape, 2.0), bounds), (model, z64, v64), (model, z64.astype(np.float32), v32)):
        forward_nodes(m.nodes, x, on_step=lambda name, layer, out, seen=seen: seen.__setitem__(name, out))
    for name, layer in model.named_leaves():
        if isinstance(layer, Softmax):  # a softmax head: never exact, and no tie or zero comes after it
            continue
        if bounds[name].size and bounds[name].max() >= _EXACT_LIMIT:
            return f"activations could reach {bounds[name].max():.3g} at {name} (not exact in float32)"
        if not np.array_equal(v64[name], v32[name].astype(np.float64)):
            return f"activations at {name} are not exactly representable (e.g. averages over 3 values)"
    return None
