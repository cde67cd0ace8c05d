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
:class:`minigbp.trace.Trace` objects (the torch one recorded by
:class:`minigbp.trace.TorchRecorder`), compared with :meth:`Trace.diff`.
"""

import copy
import warnings

import numpy as np

from ..io.pytorch import _torch, from_torch, infer_input_shape
from ..layers import ReLU
from ..model import INPUT, forward_nodes
from ..targets import as_target
from ..ops.relu import MODES, check_mode
from .recorder import TorchRecorder
from .tracing import one_or_tuple, trace

__all__ = ["check", "Report", "RTOL"]

#: relative tolerance by the dtype the attribution function ran in
RTOL = {"float64": 1e-7, "float32": 1e-3}

#: activations of the integer-weight variant must stay below this to be exact in float32
_EXACT_LIMIT = 2.0 ** 24


class _NotRun(Exception):
    pass


# ------------------------------------------------------------------------------ report

class Report:
    """The outcome of :func:`check`; ``str(report)`` is a table, :meth:`to_dict` is JSON-ready.

    Attributes
    ----------
    verdict : "vanilla" | "deconvnet" | "guided" | "none" | "error" | "ambiguous"
    matches : tuple of the modes within tolerance (usually zero or one)
    mode : the mode claimed by the caller (None if none was claimed)
    ok : True when the claimed mode matches (without a claim: when any mode matches)
    errors : {mode: {"max_abs": float, "max_rel": float, "match": bool, "per_input": {...}}}
    probe : dict or None, the per-layer probe (run only when no mode matches)
    error : str or None, what went wrong when ``attribute_fn`` raised or returned garbage
    """

    def __init__(self, **fields):
        self.__dict__.update(fields)

    @property
    def ok(self):
        if self.mode is not None:
            return self.mode in self.matches
        return bool(self.matches)

    @property
    def closest(self):
        """The mode with the smallest max relative error (None after an error)."""
        if not self.errors:
            return None
        return min(MODES, key=lambda m: (self.errors[m]["max_rel"], MODES.index(m)))

    def to_dict(self):
        return {
            "module": self.module, "function": self.function, "mode": self.mode, "verdict": self.verdict,
            "matches": list(self.matches), "ok": self.ok, "closest": self.closest, "dtype": self.dtype,
            "rtol": self.rtol, "inputs": self.inputs, "errors": self.errors, "probe": self.probe,
            "error": self.error, "notes": list(self.notes), "warnings": list(self.warnings),
        }

    def __repr__(self):
        return f"<minigbp.verify.Report {self.function} on {self.module}: {self.verdict}>"

    def __str__(self):
        lines = [f"minigbp verify: {self.function} on {self.module}"]
        if self.dtype:
            lines.append(f"  attribute_fn ran in {self.dtype}; a mode matches when, for every sample, "
                         f"max|err| <= {self.rtol:g} * max|minigbp map|")
        if self.inputs:
            lines.append("  inputs: " + "; ".join(f"{i['name']} {tuple(i['shape'])}" for i in self.inputs))
        for note in self.notes:
            lines.append(f"  note: {note}")
        if self.error:
            lines.append("")
            lines.append(f"  attribute_fn failed: {self.error}")
        if self.errors:
            lines += ["", f"  {'mode':<11}{'max abs err':>13}{'max rel err':>13}   matches"]
            for m in MODES:
                e = self.errors[m]
                lines.append(f"  {m:<11}{_fmt(e['max_abs']):>13}{_fmt(e['max_rel']):>13}   "
                             f"{'yes' if e['match'] else 'no'}")
        lines.append("")
        claim = ""
        if self.mode is not None:
            claim = f"  (claimed: {self.mode} -> {'OK' if self.ok else 'MISMATCH'})"
        what = self.verdict
        if self.verdict == "ambiguous":
            what = f"ambiguous: {' = '.join(self.matches)} on these inputs"
        lines.append(f"  verdict: {what}{claim}")
        if self.probe is not None:
            lines += [""] + ["  " + line for line in _probe_lines(self.probe)]
        return "\n".join(lines)


def _fmt(v):
    if v is None:
        return "-"
    if not np.isfinite(v):
        return str(v)
    return f"{v:.2e}"


#: the probe table shows this many layers below the first divergence at most (big models have hundreds)
PROBE_ROWS = 24


def _names(names, most=6):
    """A list of layer names for one line: all of a few, the first and last of many, and the count."""
    if len(names) <= most:
        return ", ".join(names)
    return f"{', '.join(names[:most - 2])}, ..., {', '.join(names[-2:])} ({len(names)} in all)"


def _probe_lines(p):
    if not p["possible"]:
        return [f"per-layer probe: not possible: {p['reason']}"]
    lines = [f"per-layer probe on input {p['input']!r}, walking down from the output:"]
    focus = p.get("focus")
    d = p["divergence"].get(focus)
    if d is not None and d["layer"] is not None:
        rule = next((r["rule"] for r in p["layers"] if r["layer"] == d["layer"]), "")
        lines.append(f"  against {focus}: first diverges at {d['layer']} ({d['type']}), whose local rule is: {rule}")
    said = {}
    for m in MODES:
        d = p["divergence"][m]
        if d is None:
            where = "no divergence found in the layer signals"
        elif d["layer"] is None:
            where = "already at the output: the seed is not a one-hot 1 at the target logit"
        else:
            where = f"first diverges at {d['layer']} ({d['type']})"
        said.setdefault(where, []).append(m)
    for where, modes in said.items():
        lines.append(f"  {'all modes' if len(modes) == 3 else ', '.join(modes):<20} {where}")
    lines.append("")
    rows = p["layers"]
    d = p["divergence"].get(focus)
    at = next((i for i, r in enumerate(rows) if d and r["layer"] == d["layer"]), 0)
    shown = rows if len(rows) <= PROBE_ROWS else rows[:max(at + PROBE_ROWS // 2, PROBE_ROWS)]
    width = max(len(r["layer"]) for r in shown) + 2
    lines.append(f"  {'layer':<{width}}{'type':<18}{'vanilla':>10}{'deconvnet':>11}{'guided':>10}   local rule")
    for row in shown:
        errs = "".join(f"{_fmt(row['err'][m]):>{w}}" for m, w in zip(MODES, (10, 11, 10)))
        lines.append(f"  {row['layer']:<{width}}{row['type']:<18}{errs}   {row['rule']}")
    if len(shown) < len(rows):
        lines.append(f"  ... {len(rows) - len(shown)} more layers below (all of them in report.probe['layers'] "
                     "and --json)")
    lines.append("  (errors: the signal each layer sends down, against minigbp's in that mode; local rule: "
                 "what the layer did to the signal it received)")
    groups = p["relus"]
    if groups:
        lines.append("  ReLUs behaving like " + "; like ".join(f"{k}: {_names(v)}" for k, v in groups.items()))
    if p.get("skipped"):
        lines.append(f"  ReLUs the recipe skipped (vanilla where {focus} was expected): {_names(p['skipped'])}")
    for line in p.get("notes", []):
        lines.append(f"  note: {line}")
    return lines


# ------------------------------------------------------------------------- the check

def check(module, attribute_fn, inputs=None, targets=None, *, mode=None, batch=4, seed=0, input_shape=None,
          integer_weights=True, probe=True, rtol=None):
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
    seed : int
        Seeds the generated inputs, targets and integer weights.
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
    Report

    Raises
    ------
    ValueError
        The module cannot be converted (``ConversionError``), or ``attribute_fn`` did
        not run the model it was given.
    """
    torch = _torch()
    if mode is not None:
        check_mode(mode)
    rng = np.random.default_rng(seed)
    user_x = None
    if inputs is not None:
        user_x = inputs.detach().cpu().numpy() if torch.is_tensor(inputs) else np.asarray(inputs)
        user_x = np.array(user_x, dtype=np.float64)
        if user_x.ndim < 2:
            raise ValueError(f"verify.check: inputs must be a batch (N, ...), got shape {user_x.shape}")
    base = from_torch(module, dtype=np.float64, example_input=user_x)
    if input_shape is not None:
        shape = (batch,) + tuple(int(s) for s in input_shape)
    elif user_x is not None:
        shape = (batch,) + user_x.shape[1:]
    else:
        shape = (batch,) + infer_input_shape(base)[1:]
    try:
        out = base(np.zeros(shape))
    except (ValueError, TypeError) as e:
        raise ValueError(f"verify.check: the model does not run on inputs of shape {shape}: {e}") from e
    if out.ndim != 2:
        raise ValueError(f"verify.check: the model's output must be (N, classes), got shape {out.shape}")
    n_classes = out.shape[1]

    cases = [
        dict(name="integer x", shape=shape, x=rng.integers(-2, 3, shape).astype(np.float64), weights=None,
             targets=rng.integers(0, n_classes, batch),
             description="integer-valued inputs: ties in first-layer pooling windows, exact zeros"),
        dict(name="normal x", shape=shape, x=rng.standard_normal(shape).astype(np.float32).astype(np.float64),
             weights=None, targets=rng.integers(0, n_classes, batch),
             description="standard-normal inputs: negative signals"),
    ]
    notes, warns = [], set()
    if integer_weights:
        weights, why = _integer_weights(torch, module, base, shape, rng)
        if weights is None:
            notes.append(f"integer-weight inputs skipped: {why}")
        else:
            cases.append(dict(name="integer weights", shape=shape, weights=weights,
                              x=rng.integers(-2, 3, shape).astype(np.float64),
                              targets=rng.integers(0, n_classes, batch),
                              description="a copy with sparse integer weights and integer inputs: "
                                          "ties and exact zeros at every layer"))
    if user_x is not None:
        if targets is None:
            t = rng.integers(0, n_classes, len(user_x))
        else:
            t = targets.detach().cpu().numpy() if torch.is_tensor(targets) else np.asarray(targets)
            t = np.broadcast_to(t, (len(user_x),)).astype(np.int64)
        cases.append(dict(name="your inputs", shape=user_x.shape, x=user_x, weights=None, targets=t,
                          description="the inputs passed to check()"))

    fn_name = getattr(attribute_fn, "__qualname__", None) or type(attribute_fn).__name__
    report = dict(module=type(module).__name__, function=fn_name, mode=mode, matches=(), verdict="error",
                  dtype=None, rtol=None, errors=None, probe=None, error=None, notes=notes, warnings=[],
                  inputs=[{"name": c["name"], "shape": list(c["shape"]), "description": c["description"]}
                          for c in cases])
    copies = _Copies(torch, module)

    # which dtype: float64 if the function accepts it, else the module's own
    own = _module_dtype(torch, module)
    candidates = [torch.float64] if own == torch.float64 else [torch.float64, own]
    results, returned, run_dtype, failures = {}, {}, None, []
    for tdtype in candidates:
        try:
            results[cases[0]["name"]], returned[cases[0]["name"]] = _call(
                torch, attribute_fn, copies.get(tdtype, cases[0]["weights"]), cases[0]["x"], cases[0]["targets"],
                tdtype, warns)
            run_dtype = tdtype
            break
        except _NotRun:
            raise ValueError(
                f"verify.check: {fn_name} did not run the model it was given; attribute_fn(model, x, target) "
                "must use its `model` argument (a copy of your module), not a model it closes over") from None
        except Exception as e:  # the user's function: anything can happen
            failures.append((tdtype, e))
    if run_dtype is None:
        said = {}
        for d, e in failures:
            said.setdefault(_describe(e), []).append(str(d).replace("torch.", ""))
        report["error"] = "; ".join(f"{msg} (in {' and in '.join(ds)})" for msg, ds in said.items())
        report["warnings"] = sorted(warns)
        return Report(**report)
    dname = str(run_dtype).replace("torch.", "")
    if run_dtype == torch.float64 and own != torch.float64:
        notes.insert(0, f"ran on a float64 copy of the module (yours is {str(own).replace('torch.', '')})")
    elif failures:
        notes.insert(0, f"attribute_fn failed in float64 ({_describe(failures[0][1])}); "
                        f"ran in {dname}, the module's dtype")
    for c in cases:
        c["x"] = c["x"].astype(dname).astype(np.float64)  # exactly what the function sees
    try:
        for c in cases[1:]:
            results[c["name"]], returned[c["name"]] = _call(
                torch, attribute_fn, copies.get(run_dtype, c["weights"]), c["x"], c["targets"], run_dtype, warns)
    except Exception as e:
        report["error"] = f"on input {c['name']!r}: {_describe(e)}"
        report["warnings"] = sorted(warns)
        return Report(**report)
    low = sorted({d for d in returned.values() if d != "float64"})
    if dname == "float64" and low:
        notes.append(f"attribute_fn returned {', '.join(low)} maps from a float64 model and input; "
                     "compared at float32 tolerance")
        dname = "float32"
    tol = rtol if rtol is not None else RTOL[dname]
    report.update(dtype=dname, rtol=tol)

    # minigbp's three maps and the errors
    models = {}
    errors = {m: {"max_abs": 0.0, "max_rel": 0.0, "match": True, "per_input": {}} for m in MODES}
    refs = {}
    for c in cases:
        key = id(c["weights"])
        if key not in models:
            models[key] = base if c["weights"] is None else _with_weights(base, c["weights"])
        c["model"] = models[key]
        refs[c["name"]] = _backprop(c["model"], c["x"], c["targets"])
        for m in MODES:
            got = results[c["name"]]
            if got.shape != c["x"].shape:
                report["error"] = (f"on input {c['name']!r}: attribute_fn returned shape {got.shape}, "
                                   f"expected the input's shape {c['x'].shape}")
                report["warnings"] = sorted(warns)
                return Report(**report)
            abs_err, rel_err = _compare(got, refs[c["name"]][m])
            e = errors[m]
            e["per_input"][c["name"]] = {"max_abs": abs_err, "max_rel": rel_err}
            e["max_abs"] = max(e["max_abs"], abs_err)
            e["max_rel"] = max(e["max_rel"], rel_err)
            e["match"] = e["match"] and rel_err <= tol
    matches = tuple(m for m in MODES if errors[m]["match"])
    verdict = matches[0] if len(matches) == 1 else ("none" if not matches else "ambiguous")
    report.update(errors=errors, matches=matches, verdict=verdict)
    if len(matches) > 1:
        notes.append(f"the modes {', '.join(matches)} give the same maps on these inputs; pass inputs "
                     "that tell them apart")
    if not matches and probe:
        focus = mode or min(MODES, key=lambda m: (errors[m]["max_rel"], MODES.index(m)))
        worst = max(cases, key=lambda c: errors[focus]["per_input"][c["name"]]["max_rel"])
        report["probe"] = _probe(torch, attribute_fn, copies.get(run_dtype, worst["weights"]), worst,
                                 results[worst["name"]], tol, run_dtype, warns, claimed=focus)
        report["probe"]["focus"] = focus
    report["warnings"] = sorted(warns)
    return Report(**report)


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


class _Copies:
    """Fresh copies of the user's module (eval mode), one per call: a function may change
    the model it is given (cast it, leave hooks behind) without affecting the next call."""

    def __init__(self, torch, module):
        self.torch, self.module = torch, module

    def get(self, tdtype, weights=None):
        twin = copy.deepcopy(self.module).to(tdtype).eval()
        if weights is not None:
            with self.torch.no_grad():
                for name, p in list(twin.named_parameters()) + list(twin.named_buffers()):
                    if name in weights:
                        p.copy_(self.torch.from_numpy(weights[name]))
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


def _backprop(model, x, targets):
    """minigbp's map in every mode: ``{mode: signal at the input}`` (one forward pass)."""
    out, tape = model.forward(x)
    seed = as_target(np.asarray(targets, dtype=np.int64)).seed(out)
    return {m: model.backward(seed, tape, m) for m in MODES}


def _compare(got, want):
    """(max abs error, max relative error) with one scale per sample: max |want| (or max |got|)."""
    n = got.shape[0]
    g, w = got.reshape(n, -1), want.reshape(n, -1)
    diff = np.abs(g - w)
    if np.isnan(diff).any():
        return float("nan"), float("inf")
    err = diff.max(axis=1) if diff.size else np.zeros(n)
    scale = np.abs(w).max(axis=1) if w.size else np.zeros(n)
    scale = np.where(scale > 0, scale, np.abs(g).max(axis=1) if g.size else 0)
    rel = np.where(err == 0, 0.0, err / np.where(scale > 0, scale, 1))
    return float(err.max(initial=0.0)), float(rel.max(initial=0.0))


def _rel(got, want):
    """Relative error of one signal (one scale for the whole array; the worst input's for tuples)."""
    if isinstance(got, tuple) or isinstance(want, tuple):
        if not (isinstance(got, tuple) and isinstance(want, tuple) and len(got) == len(want)):
            return float("inf")
        return max((_rel(g, w) for g, w in zip(got, want)), default=0.0)
    if got.shape != want.shape:
        return float("inf")
    diff = np.abs(got - want)
    if diff.size == 0:
        return 0.0
    if np.isnan(diff).any():
        return float("inf")
    scale = np.abs(want).max() or np.abs(got).max()
    err = diff.max()
    return 0.0 if err == 0 else float(err / scale)


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

def _probe(torch, fn, tmod, case, main_result, tol, tdtype, warns, claimed=None):
    """Record every node of ``tmod`` during ``fn`` (:class:`minigbp.trace.TorchRecorder`), trace
    minigbp in each mode, and compare them with :meth:`Trace.diff` and each node's local rule."""
    model = case["model"]
    recorder = TorchRecorder(tmod)
    try:
        with recorder:
            final, _ = _call(torch, fn, tmod, case["x"], case["targets"], tdtype, warns)
    except Exception as e:
        return {"possible": False, "input": case["name"],
                "reason": f"attribute_fn failed while its model ran node by node: {_describe(e)}"}
    if len(recorder.runs) != 1:
        return {"possible": False, "input": case["name"],
                "reason": f"the model ran {len(recorder.runs)} times during attribute_fn (several forward "
                          "passes?); the probe follows one"}
    notes = []
    drift = _rel(final, main_result)
    if drift > tol:
        notes.append(f"run node by node, the function's result changed (relative difference {drift:.2g}); "
                     "the probe may not describe the original run")

    # minigbp: one trace per mode; torch: the recorded trace, in float64, whose only node reading
    # the input sends down what the function returned
    targets = np.asarray(case["targets"], dtype=np.int64)
    ours = {m: trace(model, case["x"], targets, mode=m) for m in MODES}
    theirs = recorder.trace(mode=claimed or "torch", target=f"classes {targets.tolist()}", result=final)
    for r in theirs.layers:
        for f in ("output", "signal_in", "signal_out", "input"):
            setattr(r, f, _float64(getattr(r, f)))
    readers = [n for n in model.nodes if INPUT in n.inputs]
    if len(readers) == 1 and readers[0].name in theirs:
        bottom = theirs[readers[0].name]
        if isinstance(bottom.input, np.ndarray) and final.size == bottom.input.size:
            bottom.signal_out = final.reshape(bottom.input.shape)
    for r in theirs.layers:
        if r.name not in ours["vanilla"]:
            continue
        want_shape = ours["vanilla"][r.name].signal_in.shape
        if r.signal_in.shape != want_shape:
            return {"possible": False, "input": case["name"],
                    "reason": f"node {r.name} output shape {r.signal_in.shape} differs from minigbp's {want_shape}"}

    # the first divergence, walking down from the output (Trace.diff on the signals)
    top = ours["vanilla"].layers[-1].name
    divergence = {}
    for m in MODES:
        d = theirs.diff(ours[m], rtol=tol, outputs=False)
        if d is None:
            divergence[m] = None
        elif d.layer == top and d.what == "signal in":
            divergence[m] = {"layer": None, "type": None}
        else:
            divergence[m] = {"layer": d.layer, "type": d.type}

    layer_of = dict(model.named_leaves())
    rows, relus = [], {}
    for r in reversed(theirs.layers):
        if r.name not in layer_of:
            continue
        rows.append(_local_rule(r, layer_of[r.name], ours, tol, relus))
    # ReLUs the recipe skipped: they act as vanilla ReLUs where another mode was claimed
    skipped = relus.get("vanilla", []) if claimed not in (None, "vanilla") else []
    return {"possible": True, "reason": None, "input": case["name"], "divergence": divergence,
            "layers": rows, "relus": relus, "skipped": list(skipped), "notes": notes}


def _float64(v):
    if v is None:
        return None
    return tuple(_float64(u) for u in v) if isinstance(v, tuple) else np.asarray(v, dtype=np.float64)


def _local_rule(r, layer, ours, tol, relus):
    """One row of the probe table: the node's error against each mode, and which rule it followed
    (what it did to the signal it received; for ReLUs, added to ``relus`` by label)."""
    name, leaving = r.name, r.signal_out
    row = {"layer": name, "type": type(layer).__name__, "err": {}, "rule": ""}
    for m in MODES:
        row["err"][m] = _rel(leaving, ours[m][name].signal_out)
    try:
        _, cache = layer.forward(*(r.input if isinstance(r.input, tuple) else (r.input,)))
        expect = {m: one_or_tuple(layer.backward(r.signal_in, cache, m)) for m in MODES}
        local = {m: _rel(leaving, expect[m]) for m in MODES}
    except (ValueError, TypeError) as e:
        row["rule"] = f"(not checked: {e})"
        return row
    fits = [m for m in MODES if local[m] <= tol]
    if isinstance(layer, ReLU):
        label = " = ".join(fits) if fits else _relu_at_zero(leaving, expect, r.input, tol)
        if len(fits) == 3:
            label = "any (cannot tell here)"
        row["rule"] = label
        relus.setdefault(label, []).insert(0, name)  # listed in forward order
    else:
        row["rule"] = ("as in minigbp" if fits else
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
