"""Traces: every layer's forward output and backward signals, recorded, saved, compared.

:func:`trace` runs minigbp's forward and backward pass through the very functions
:func:`minigbp.backprop` uses (``forward_nodes`` and ``backward_tape``, watching each
step through their ``on_step`` argument) and records,
for every node in forward order, a :class:`Record`:

* ``name``        the node name (PyTorch's module name, e.g. ``"features.0"``),
* ``type``        the layer's class name (``"Conv2d"``),
* ``output``      its forward output,
* ``signal_in``   the signal arriving from above (shaped like ``output``; for a value
  read by several nodes, the sum of what they send),
* ``signal_out``  the signal it sends down (shaped like its input; a tuple, one per
  input, for ``Add`` and ``Cat``).

``trace.layers[0].signal_out`` (also ``trace.result``) is exactly ``mg.backprop``'s result.

:meth:`Trace.from_torch` records the same thing on a PyTorch module while your
attribution function (or a plain autograd backward of the one-hot target logit) runs: the
module runs as its ``torch.fx`` graph, node by node, with the names :func:`minigbp.from_torch`
gives, so functional ReLUs and additions are recorded too. The two sides can be compared
node by node with :meth:`Trace.diff`::

    import minigbp as mg
    t_mg = mg.trace(mg.from_torch(net, dtype="float64"), x, target=3, mode="guided")
    t_torch = mg.Trace.from_torch(net.double(), x, 3, attribute_fn=my_guided_backprop)
    print(t_torch.diff(t_mg))        # None, or the first layer where they part

File format (:meth:`Trace.save`): one ``.npz`` file. Arrays under the keys
``"<i>.output"``, ``"<i>.signal_in"``, ``"<i>.signal_out"`` (and ``"<i>.input"`` when
recorded; ``"<i>.signal_out.<k>"`` for the ``k``-th input of a node with several),
``"x"`` and ``"result"``, where ``i`` is the node's position in forward order;
the JSON manifest is stored *inside* the npz as the text entry ``"manifest.json"``
(a 0-d unicode array: ``np.load(path)["manifest.json"]`` without pickle). The manifest
holds the format version, the minigbp version, the source ("minigbp" or "torch"), the
mode, the conventions, the target description, notes, and per node its name, type,
and the key, shape and dtype of each of its arrays (a list of those for a field that
holds one array per input).
"""

import json
from dataclasses import dataclass

import numpy as np

from ..gradcheck import rel_error
from ..layers import check_input
from ..model import backward_tape, forward_nodes, prepare
from ..targets import as_target

__all__ = ["trace", "Trace", "Record", "Difference", "FORMAT_VERSION"]

FORMAT_VERSION = 2  # 2: a field of a node with several inputs is a list of arrays (version 1 files still load)
_FIELDS = ("output", "signal_in", "signal_out", "input")
_WHAT = {"output": "output", "signal_in": "signal in", "signal_out": "signal out"}


@dataclass(eq=False)
class Record:
    """One node of a trace (see the module docstring). ``input`` is recorded by the torch
    side only; otherwise None. ``signal_out`` and ``input`` are tuples for nodes with several
    inputs."""

    name: str
    type: str
    output: np.ndarray
    signal_in: np.ndarray
    signal_out: np.ndarray
    input: np.ndarray = None


@dataclass
class Difference:
    """Where two traces first differ: ``layer`` (dotted name), ``type`` (this trace's layer
    class), ``what`` ("output", "signal in" or "signal out"), ``max_abs`` (max |a - b|),
    ``max_rel`` (``max_abs`` / max |b|), and the two arrays' shapes."""

    layer: str
    type: str
    what: str
    max_abs: float
    max_rel: float
    shape: tuple
    other_shape: tuple
    other_type: str = None

    def __str__(self):
        shapes = (f"shape {self.shape}" if self.shape == self.other_shape
                  else f"shapes {self.shape} vs {self.other_shape}")
        return (f"first difference at {self.layer} ({self.type}): {self.what}, max |diff| "
                f"{self.max_abs:.3g} (relative {self.max_rel:.3g}), {shapes}")


class Trace:
    """Per-layer record of one forward + backward pass (module docstring).

    Attributes
    ----------
    layers : list of :class:`Record`, in forward order
    mode : str, the backward mode ("vanilla", "deconvnet", "guided") or a label for torch traces
    conventions : dict of the switches (:mod:`minigbp.conventions`), None for torch traces
    target : str, a description of the target
    source : "minigbp" or "torch"
    x : the input, result : the signal at the input (minigbp) or what the torch function returned
    notes : list of str, what could not be recorded
    """

    def __init__(self, layers, mode, conventions=None, target="", source="minigbp", x=None, result=None,
                 notes=(), version=None):
        self.layers = list(layers)
        self.mode, self.conventions, self.target, self.source = mode, conventions, target, source
        self.x, self.result, self.notes = x, result, list(notes)
        self.version = version

    # ------------------------------------------------------------------ access

    def __getitem__(self, key):
        """A :class:`Record` by dotted name (or by position)."""
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            return self.layers[key]
        for r in self.layers:
            if r.name == key:
                return r
        raise KeyError(f"no layer {key!r} in this trace; layers: {', '.join(self.names)}")

    def __contains__(self, name):
        return any(r.name == name for r in self.layers)

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    @property
    def names(self):
        return [r.name for r in self.layers]

    def __repr__(self):
        return f"<minigbp.Trace {self.source} {self.mode}: {len(self.layers)} layers, target {self.target}>"

    def __str__(self):
        head = f"trace ({self.source}, mode {self.mode}, target {self.target})"
        if self.conventions:
            head += " conventions " + ", ".join(f"{k}={v}" for k, v in self.conventions.items())
        lines = [head, f"  {'layer':<20}{'type':<18}{'output shape':<22}{'max|signal in|':>15}{'max|signal out|':>16}"]
        for r in self.layers:
            lines.append(f"  {r.name:<20}{r.type:<18}{str(tuple(np.shape(r.output))):<22}"
                         f"{_maxabs(r.signal_in):>15}{_maxabs(r.signal_out):>16}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    # -------------------------------------------------------------- comparison

    def diff(self, other, rtol=1e-7, outputs=True):
        """The first place where this trace and ``other`` differ beyond tolerance, or None.

        Order: the forward outputs first, layer by layer in forward order; then the backward
        signals, walking down from the output: for each layer its signal in, then its signal out.
        Only nodes present in both traces (same name) are compared. Arrays of equal size but
        different shapes are compared flattened. Two arrays differ when
        ``minigbp.rel_error(a, b) > rtol`` (``max |a - b| / max |b|``, ``b`` from ``other``;
        NaNs match only NaNs). ``outputs=False`` compares the signals only. The default
        ``rtol`` suits float64; comparing with a float32 trace needs ``rtol`` around 1e-4.
        """
        theirs = {r.name: r for r in other.layers}
        common = [(r, theirs[r.name]) for r in self.layers if r.name in theirs]
        if not common:  # nothing compared is not "no difference"
            first = (self.layers or other.layers or [None])[0]
            return Difference(first.name if first else "(empty)", first.type if first else "",
                              "no layer in common", float("inf"), float("inf"), (), (),
                              other.layers[0].type if other.layers else "")
        checks = []
        if outputs:
            checks += [(a, b, "output") for a, b in common]
        for a, b in reversed(common):
            checks += [(a, b, "signal_in"), (a, b, "signal_out")]
        for a, b, f in checks:
            max_abs, max_rel = _compare(getattr(a, f), getattr(b, f))
            if max_rel > rtol:
                return Difference(a.name, a.type, _WHAT[f], max_abs, max_rel, _shape(getattr(a, f)),
                                  _shape(getattr(b, f)), b.type)
        return None

    # --------------------------------------------------------------------- I/O

    def save(self, path):
        """Write the trace to ``path`` (one .npz with the manifest inside; module docstring)."""
        from .. import __version__

        arrays, layers = {}, []
        for i, r in enumerate(self.layers):
            entry = {"name": r.name, "type": r.type}
            for f in _FIELDS:
                a = getattr(r, f)
                if a is None:
                    continue
                if isinstance(a, tuple):  # one array per input
                    entry[f] = [_stored(arrays, f"{i}.{f}.{k}", v) for k, v in enumerate(a)]
                else:
                    entry[f] = _stored(arrays, f"{i}.{f}", a)
            layers.append(entry)
        extra = {}
        for key in ("x", "result"):
            a = getattr(self, key)
            if a is not None:
                arrays[key] = np.asarray(a)
                extra[key] = {"key": key, "shape": list(arrays[key].shape), "dtype": str(arrays[key].dtype)}
        manifest = {"format": "minigbp-trace", "format_version": FORMAT_VERSION, "minigbp_version": __version__,
                    "source": self.source, "mode": self.mode, "conventions": self.conventions,
                    "target": self.target, "notes": self.notes, "layers": layers, **extra}
        arrays["manifest.json"] = np.array(json.dumps(manifest))
        with open(path, "wb") as fh:  # a file object: np.savez must not append ".npz" to the path
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path):
        """Read a trace written by :meth:`save` (no pickle is ever loaded)."""
        with np.load(path, allow_pickle=False) as f:
            if "manifest.json" not in f.files:
                raise ValueError(f"{path}: not a minigbp trace (no manifest.json entry)")
            manifest = json.loads(str(f["manifest.json"]))
            if manifest.get("format") != "minigbp-trace" or manifest.get("format_version", 0) > FORMAT_VERSION:
                raise ValueError(f"{path}: unsupported trace format {manifest.get('format')!r} "
                                 f"version {manifest.get('format_version')!r}")
            layers = [Record(e["name"], e["type"], **{k: tuple(f[v["key"]] for v in e[k]) if isinstance(e[k], list)
                                                      else f[e[k]["key"]] for k in _FIELDS if k in e})
                      for e in manifest["layers"]]
            x = f["x"] if "x" in manifest else None
            result = f["result"] if "result" in manifest else None
        t = cls(layers, manifest["mode"], manifest["conventions"], manifest["target"], manifest["source"], x, result,
                manifest.get("notes", ()), manifest.get("minigbp_version"))
        t.manifest = manifest
        return t

    # ------------------------------------------------------------------ torch

    @classmethod
    def from_torch(cls, module, x, target, attribute_fn=None, mode_label=None):
        """Record a PyTorch module's per-layer signals (torch is imported only here).

        While ``attribute_fn(module, x, target)`` runs (``x`` a tensor that requires grad,
        ``target`` an int64 tensor (N,)), or, when ``attribute_fn`` is None, a plain autograd
        backward of the one-hot target logit (``target`` may then also be a float seed shaped like
        the output), ``module(x)`` runs as its ``torch.fx`` graph (:class:`TorchRecorder`): every
        node, named as :func:`minigbp.from_torch` names it, records its output, and tensor hooks
        record the gradient arriving at that output and leaving through each input.

        Each node works on clones of its inputs, so in-place ReLUs (``nn.ReLU(inplace=True)``,
        ``F.relu(x, inplace=True)``) are recorded too: they modify the clone. A node no
        gradient reached gets zeros and a note. ``trace.result`` is what ``attribute_fn``
        returned (or ``x.grad``). ``mode_label`` becomes ``trace.mode`` (default: "vanilla" for
        the plain backward, else the function's name).
        """
        torch = _torch()
        p = next(module.parameters(), None)
        dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
        if torch.is_tensor(x):
            xt = x.detach().clone()
        else:
            xt = torch.tensor(np.asarray(x), dtype=dtype)
        xt.requires_grad_(True)
        seed = None
        if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
            tt = torch.full((xt.shape[0],), int(target), dtype=torch.long)
            desc = f"class {int(target)}"
        else:
            tarr = target.detach().cpu().numpy() if torch.is_tensor(target) else np.asarray(target)
            if tarr.dtype.kind == "f":
                seed, tt, desc = torch.tensor(tarr), None, f"seed array {tarr.shape}"
            else:
                tt = torch.as_tensor(tarr.astype(np.int64))
                desc = f"classes {tarr.tolist()}"
        from .recorder import TorchRecorder

        recorder = TorchRecorder(module)
        with recorder:
            if attribute_fn is None:
                out = module(xt)
                s = seed.to(out.dtype) if seed is not None else torch.zeros_like(out).index_put_(
                    (torch.arange(len(tt)), tt), torch.tensor(1, dtype=out.dtype))
                out.backward(s)
                result = xt.grad
            else:
                result = attribute_fn(module, xt, tt)
                if isinstance(result, (tuple, list)) and len(result) == 1:
                    result = result[0]
        label = mode_label or ("vanilla" if attribute_fn is None
                               else getattr(attribute_fn, "__qualname__", type(attribute_fn).__name__))
        return recorder.trace(mode=label, target=desc, x=xt.detach(), result=result)


def _torch():
    from ..io.pytorch import _torch as get
    return get()


def _np(t):
    """A tensor (or array) as a numpy array, keeping float32/float64."""
    if t is None:
        return None
    if hasattr(t, "detach"):
        t = t.detach().cpu()
        if t.is_floating_point() and str(t.dtype) not in ("torch.float32", "torch.float64"):
            t = t.float()
        return t.numpy()
    return np.asarray(t)


def _stored(arrays, key, a):
    """Put ``a`` in ``arrays`` under ``key``; its manifest entry."""
    arrays[key] = a = np.asarray(a)
    return {"key": key, "shape": list(a.shape), "dtype": str(a.dtype)}


def _shape(a):
    return tuple(_shape(v) for v in a) if isinstance(a, tuple) else tuple(np.shape(a))


def _maxabs(a):
    if a is None:
        return "-"
    parts = [np.asarray(v) for v in (a if isinstance(a, tuple) else (a,)) if np.size(v)]
    return f"{max(np.abs(v).max() for v in parts):.3g}" if parts else "-"


def _compare(a, b):
    """``(max |a - b|, rel_error(a, b))`` for two recorded fields; tuples (one signal per input)
    element by element, arrays of equal size flattened; a field on one side only, or of
    another size, differs infinitely."""
    if a is None or b is None:
        return (0.0, 0.0) if a is None and b is None else (float("inf"), float("inf"))
    if isinstance(a, tuple) or isinstance(b, tuple):
        if not (isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b)):
            return float("inf"), float("inf")
        pairs = [_compare(u, v) for u, v in zip(a, b)]
        return max((p[0] for p in pairs), default=0.0), max((p[1] for p in pairs), default=0.0)
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size != b.size:
        return float("inf"), float("inf")
    a = a.reshape(b.shape)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore"):
        max_abs = float(np.nan_to_num(np.where(same, 0.0, np.abs(a - b)), nan=np.inf).max(initial=0.0))
    return max_abs, rel_error(a, b)


# ------------------------------------------------------------------- minigbp side

def trace(model, x, target, mode="guided", layer=None, *, preset=None, conventions=None, **switches):
    """Run :func:`minigbp.backprop` and record every node (module docstring) -> :class:`Trace`.

    Arguments as :func:`minigbp.backprop`; ``trace(...).result`` equals ``backprop(...)`` exactly.
    """
    model, rules = prepare(model, mode, preset, conventions, switches, layer=layer)
    t = as_target(target, layer)
    check_input(x, type(model).__name__)
    outputs = {}  # every node's forward output, by name

    def keep(name, lyr, output):
        outputs[name] = output

    out, tape = forward_nodes(model.nodes_through(t.layer), x, on_step=keep)
    records = []  # built walking down; the same backward pass as mg.backprop, step by step

    def record(name, lyr, arriving, leaving):
        records.append(Record(name, type(lyr).__name__, outputs[name], arriving, one_or_tuple(leaving)))

    result = backward_tape(t.seed(out, rules.seed), tape, mode, conventions=rules, on_step=record)
    records.reverse()
    return Trace(records, mode, rules.as_dict(), t.describe(), "minigbp", x.copy(), result)  # x: a copy


def one_or_tuple(signals):
    """What a node sends down, as a :class:`Record` keeps it: one array for a node with one input
    (``Cat`` of a single tensor included), a tuple for several."""
    return signals[0] if isinstance(signals, tuple) and len(signals) == 1 else signals
