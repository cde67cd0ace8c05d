"""``Sequential`` (the model container) and ``backprop`` (the three-mode input signal).

A forward pass returns the output and a *tape*: a list of ``(name, layer, cache)``
entries, one per leaf layer in execution order, with dotted names identical to
PyTorch's (``"features.0"``). The backward pass walks the tape in reverse. Nothing
about a call is stored on the model, so one model can serve many threads.
"""

from collections import namedtuple

import numpy as np

from .conventions import DEFAULT, SEEDS
from .layers import Layer, check_input
from .ops.relu import check_mode, rules_at

__all__ = ["Sequential", "backprop", "LoadResult", "model_from_spec", "forward_layers", "backward_tape", "Tape",
           "resolve_conventions", "make_seed", "seed_rule"]

LoadResult = namedtuple("LoadResult", ["missing_keys", "unexpected_keys"])


class Sequential(Layer):
    """Layers applied in order, as ``torch.nn.Sequential``.

    ``Sequential(a, b, c)`` names the children ``"0"``, ``"1"``, ``"2"``;
    ``Sequential(features=..., classifier=...)`` uses the keywords as names.
    Nesting gives dotted names, so ``state_dict()`` keys are PyTorch's
    (``"features.0.weight"``).

    Examples
    --------
    >>> import numpy as np, minigbp as mg
    >>> model = mg.Sequential(mg.Conv2d(1, 2, 3), mg.ReLU(), mg.Flatten(), mg.Linear(2 * 4 * 4, 3))
    >>> model(np.zeros((5, 1, 6, 6))).shape
    (5, 3)
    >>> sorted(model.state_dict())
    ['0.bias', '0.weight', '3.bias', '3.weight']
    """

    def __init__(self, *layers, **named):
        if layers and named:
            raise TypeError("Sequential: give the layers either all positionally or all by name, not both")
        items = named.items() if named else ((str(i), layer) for i, layer in enumerate(layers))
        self.children = {}
        for name, layer in items:
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: child {name!r} is not a minigbp layer: {layer!r}")
            if "." in name or not name:
                raise ValueError(f"Sequential: child name {name!r} must be non-empty and contain no '.'")
            self.children[name] = layer

    # ------------------------------------------------------------ structure

    def named_leaves(self, prefix=""):
        """``(dotted_name, layer)`` for every non-container layer, in execution order."""
        out = []
        for name, layer in self.children.items():
            full = prefix + name
            if isinstance(layer, Sequential):
                out.extend(layer.named_leaves(full + "."))
            else:
                out.append((full, layer))
        return out

    def named_modules(self, prefix=""):
        """``(dotted_name, layer)`` for every child at every depth, containers included."""
        out = []
        for name, layer in self.children.items():
            out.append((prefix + name, layer))
            if isinstance(layer, Sequential):
                out.extend(layer.named_modules(prefix + name + "."))
        return out

    def __getitem__(self, key):
        """``model[0]``, ``model["features"]``, ``model["features.28"]``, or ``model[2:5]``.

        A slice is a new Sequential sharing the children (and their names), as in PyTorch.
        """
        if isinstance(key, slice):
            return Sequential(**dict(list(self.children.items())[key]))
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            return list(self.children.values())[key]
        layer = self
        for part in str(key).split("."):
            if not isinstance(layer, Sequential) or part not in layer.children:
                raise KeyError(f"no layer named {key!r}; layers: {', '.join(n for n, _ in self.named_modules())}")
            layer = layer.children[part]
        return layer

    def __len__(self):
        return len(self.children)

    def __iter__(self):
        return iter(self.children.values())

    def __repr__(self):
        lines = [f"{type(self).__name__}("]
        for name, layer in self.children.items():
            body = repr(layer).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + "\n)"

    # ------------------------------------------------------ forward/backward

    def forward(self, x, upto=None):
        """Run the layers; return ``(out, tape)``.

        Parameters
        ----------
        x : ndarray (N, ...) float32 or float64 (never modified)
        upto : str, optional
            Stop after this layer (a dotted name such as ``"features.28"``, or a
            container such as ``"features"``, meaning its last layer); ``out`` is
            then that layer's output.

        Returns
        -------
        out : ndarray, the model's (or ``upto``'s) output, same dtype as ``x``
        tape : list of ``(name, layer, cache)``, one entry per layer run
        """
        check_input(x, "Sequential")
        return forward_layers(self.leaves_through(upto), x)

    def leaves_through(self, name=None):
        """:meth:`named_leaves` up to and including layer ``name`` (all of them if None)."""
        leaves = self.named_leaves()
        return leaves if name is None else leaves[:self.leaf_index(name) + 1]

    def leaf_index(self, name):
        """Position in :meth:`named_leaves` of layer ``name`` (a container: its last leaf)."""
        name = str(name)
        hits = [i for i, (n, _) in enumerate(self.named_leaves()) if n == name or n.startswith(name + ".")]
        if not hits:
            names = ", ".join(n for n, _ in self.named_modules())
            raise ValueError(f"no layer named {name!r}; layers: {names}")
        return hits[-1]

    def backward(self, dout, tape, mode="vanilla", conventions=DEFAULT):
        """Send ``dout`` (shaped like the tape's last output) back through the tape.

        Returns ``dx``, shaped like the forward input. ``mode`` is "vanilla",
        "deconvnet" or "guided" (only ReLUs depend on it); ``conventions`` see
        :mod:`minigbp.conventions`.
        """
        return backward_tape(dout, tape, mode, conventions=conventions)

    def backward_with_grads(self, dout, tape):
        """Vanilla backward that also returns parameter gradients.

        Returns ``(dx, grads)`` with ``grads`` keyed like :meth:`state_dict`
        (``"features.0.weight"``), for training exercises.
        """
        grads = {}
        dx = backward_tape(dout, tape, "vanilla", grads)
        return dx, dict(sorted(grads.items(), key=lambda kv: list(self.state_dict()).index(kv[0])))


    # -------------------------------------------------------- architecture

    def spec(self):
        """The architecture as JSON-ready nested lists (no weights).

        ``{"type": "Sequential", "children": [[name, child_spec], ...]}`` with leaf
        specs ``{"type": "Conv2d", "config": {...constructor arguments...}}``;
        :func:`model_from_spec` rebuilds the model.
        """
        return {"type": "Sequential",
                "children": [[name, layer.spec() if isinstance(layer, Sequential)
                              else {"type": type(layer).__name__, "config": layer.config()}]
                             for name, layer in self.children.items()]}

    # ------------------------------------------------------------- weights

    def named_parameters(self):
        return [(f"{name}.{p}", arr) for name, layer in self.named_leaves() for p, arr in layer.named_parameters()]

    def state_dict(self):
        """``{dotted_name: array}`` of every parameter, PyTorch's names and layouts.

        The arrays are the model's own (not copies), as in PyTorch.
        """
        return dict(self.named_parameters())

    def state_dict_problems(self, state_dict, strict=True, what="the state dict", against="the model"):
        """Every problem :meth:`load_state_dict` would meet, as sentences (empty: it fits).

        Missing and unexpected keys (when ``strict``), shapes that differ, values that
        are not floating-point arrays; ``what``/``against`` name the two sides.
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(f"load_state_dict: expected a dict of arrays, got {type(state_dict).__name__}")
        own = dict(self.named_parameters())
        problems = []
        if strict:
            problems += [f"missing key {k!r} (shape {own[k].shape} in {against})" for k in own if k not in state_dict]
        for key, value in state_dict.items():
            if key not in own:
                if strict:
                    problems.append(f"unexpected key {key!r} (shape {np.shape(value)})")
                continue
            try:
                arr = np.asarray(value)
            except Exception as e:  # e.g. an object that is not array-like
                problems.append(f"{key!r}: not an array ({type(value).__name__}: {e})")
                continue
            if arr.dtype.kind != "f":
                problems.append(f"{key!r}: dtype {arr.dtype} is not floating point")
            elif arr.shape != own[key].shape:
                problems.append(f"{key!r}: shape {arr.shape} in {what}, {own[key].shape} in {against}")
        return problems

    def load_state_dict(self, state_dict, strict=True):
        """Copy parameters from ``state_dict`` (arrays in PyTorch's names and layouts).

        Every key, shape and dtype is checked first (:meth:`state_dict_problems`): on any
        problem a ``ValueError`` lists all of them and the model is left as it was.
        float32 and float64 arrays keep their dtype; narrower floats (float16) become
        float32, wider ones (longdouble) float64. With ``strict=False`` missing and
        unexpected keys are allowed (shapes are still checked).
        Returns ``LoadResult(missing_keys, unexpected_keys)``.
        """
        problems = self.state_dict_problems(state_dict, strict)
        if problems:
            raise ValueError("load_state_dict: nothing was loaded; " + str(len(problems)) + " problem(s):\n  "
                             + "\n  ".join(problems))
        own = dict(self.named_parameters())
        layers = dict(self.named_leaves())
        for key, value in state_dict.items():
            if key in own:
                arr = np.asarray(value)
                name, pname = key.rsplit(".", 1)
                setattr(layers[name], pname, np.array(arr, dtype=np.float32 if arr.dtype.itemsize <= 4 else np.float64))
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        return LoadResult([] if strict else missing, [] if strict else unexpected)


class Tape(list):
    """What a forward pass leaves for the backward pass: ``(name, layer, cache)`` entries.

    ``outputs[i]`` is the ``(shape, dtype)`` of entry ``i``'s output, so a backward pass
    can check the signal it is given.
    """

    def __init__(self):
        super().__init__()
        self.outputs = []


def forward_layers(named_layers, x, on_step=None):
    """Run ``(name, layer)`` pairs in order on ``x``; return ``(out, tape)``.

    Errors are re-raised with the layer's dotted name in front. ``on_step(name, layer,
    out)``, if given, sees every layer's output (:func:`minigbp.trace` records them).
    """
    tape = Tape()
    for name, layer in named_layers:
        try:
            x, cache = layer.forward(x)
        except (TypeError, ValueError) as e:
            raise type(e)(f"layer '{name}': {e}") from e
        if on_step is not None:
            on_step(name, layer, x)
        tape.append((name, layer, cache))
        tape.outputs.append((x.shape, x.dtype))
    return x, tape


def backward_tape(dout, tape, mode="vanilla", grads=None, conventions=DEFAULT, on_step=None):
    """Walk a tape in reverse: ``dout = layer.backward(dout, cache, mode)`` per entry.

    Each layer gets the mode and conventions :func:`minigbp.ops.relu.rules_at` gives its
    name (the given ones, unless ``conventions.relu_scope`` leaves the layer out).
    If ``grads`` is a dict, parameter gradients are stored in it under
    ``"<layer name>.<parameter>"`` (meaningful in vanilla mode). ``on_step(name, layer,
    arriving, leaving)``, if given, sees each layer's signals (:func:`minigbp.trace`).
    """
    check_mode(mode)
    if isinstance(tape, Tape) and tape:
        shape, dtype = tape.outputs[-1]
        if not isinstance(dout, np.ndarray):
            raise TypeError(f"backward: the signal for layer '{tape[-1][0]}' must be a numpy array of shape "
                            f"{shape} and dtype {dtype}, got {type(dout).__name__}")
        if dout.shape != shape or dout.dtype != dtype:
            raise ValueError(f"backward: the signal for layer '{tape[-1][0]}' must have its forward output's "
                             f"shape {shape} and dtype {dtype}, got shape {dout.shape} and dtype {dout.dtype}")
    for name, layer, cache in reversed(tape):
        try:
            if grads is not None:
                for pname, g in layer.param_grads(dout, cache).items():
                    grads[f"{name}.{pname}"] = g
            leaving = layer.backward(dout, cache, *rules_at(name, mode, conventions))
        except (TypeError, ValueError) as e:
            raise type(e)(f"layer '{name}' (backward): {e}") from e
        if on_step is not None:
            on_step(name, layer, dout, leaving)
        dout = leaving
    return dout


def model_from_spec(spec):
    """Rebuild a model (fresh parameters) from :meth:`Sequential.spec` output."""
    from . import layers as L

    kinds = {cls.__name__: cls for cls in (L.Conv2d, L.ReLU, L.MaxPool2d, L.AvgPool2d, L.AdaptiveAvgPool2d,
                                           L.Linear, L.Flatten, L.Dropout, L.Softmax)}
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"model spec: expected a dict with a 'type', got {spec!r:.80}")
    if spec["type"] == "Sequential":
        return Sequential(**{name: model_from_spec(child) for name, child in spec.get("children", [])})
    if spec["type"] not in kinds:
        raise ValueError(f"model spec: unknown layer type {spec['type']!r}; known: {', '.join(kinds)}")
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.get("config", {}).items()}
    return kinds[spec["type"]](**config)


_UNSET = object()


def backprop(model, x, target, mode="guided", layer=None, *, relu_at_zero=_UNSET, relu_scope=_UNSET,
             pool_ties=_UNSET, seed=_UNSET, preset=None):
    """Signal at the input for one target, in the given mode.

    The model runs forward (up to ``layer`` if given); the start layer's output
    ``out`` receives a seed, and the seed travels back down in ``mode``:
    "vanilla" (the gradient), "deconvnet" or "guided" (see :mod:`minigbp.ops.relu`).

    Parameters
    ----------
    model : Sequential (or a single Layer)
    x : ndarray (N, ...) float32 or float64, never modified
    target : int, 1-D int array of length N, or float array shaped like ``out``
        * int ``t``: the seed is a one-hot 1 at ``out[:, t]`` for every sample
          (for a 4-D ``out`` every position of channel ``t`` gets 1, i.e. the
          signal of the channel's sum);
        * 1-D int array: one such index per sample;
        * array shaped like ``out``: used as the seed itself.
        The default one-hot seed is a 1 at the *logit*, not the logit's value nor a
        softmax probability (Captum's and most torch recipes' convention).
    mode : "vanilla" | "deconvnet" | "guided"
    layer : str, optional
        Start from this layer's output instead of the model's (e.g. ``"features.28"``).
    relu_at_zero, relu_scope, pool_ties, seed : conventions (:mod:`minigbp.conventions`);
        default "block", None (every ReLU), "first", "one".
    preset : str, optional
        A library's conventions (:data:`minigbp.presets.PRESETS`: "captum", "torchray", ...);
        switches given explicitly override the preset's.

    Returns
    -------
    ndarray, same shape and dtype as ``x``.
    """
    model, conventions = prepare(model, mode, layer, preset, "backprop", relu_at_zero=relu_at_zero,
                                 relu_scope=relu_scope, pool_ties=pool_ties, seed=seed)
    out, tape = model.forward(x, upto=layer)
    return model.backward(make_seed(out, target, layer, conventions.seed), tape, mode, conventions)


def prepare(model, mode, layer, preset, owner, **switches):
    """What :func:`backprop` and :func:`minigbp.trace` check and settle before running:
    the mode, the conventions (:func:`resolve_conventions`), and a single layer wrapped
    in a Sequential. Returns ``(model, conventions)``."""
    check_mode(mode)
    conventions = resolve_conventions(preset, mode, **switches)
    if not isinstance(model, Sequential):
        if layer is not None:
            raise ValueError(f"{owner}: 'layer' needs a Sequential model")
        model = Sequential(model)
    return model, conventions


def resolve_conventions(preset=None, mode=None, **switches):
    """The :class:`~minigbp.conventions.Conventions` of ``preset`` in ``mode`` (default: the
    defaults) with the switches that are not ``_UNSET`` applied on top."""
    from .presets import get_preset

    if preset is None:
        base = DEFAULT
    else:
        p = get_preset(preset)
        if mode is not None and mode not in p.modes:
            raise ValueError(f"preset {p.name!r} covers mode(s) {', '.join(p.modes)}, not {mode!r}: "
                             f"the library has no such method (or it is not checked here)")
        base = p.for_mode(mode)
    given = {k: v for k, v in switches.items() if v is not _UNSET}
    return base.updated(**given) if given else base


def seed_rule(ones, out, rule="one"):
    """The ``seed`` convention: a seed of ones at the chosen units as it is (``"one"``),
    or weighted by the units' own values (``"value"``: ``ones * out``)."""
    if rule not in SEEDS:
        raise ValueError(f"unknown seed {rule!r}; expected one of {', '.join(SEEDS)}")
    return ones * out if rule == "value" else ones


def make_seed(out, target, layer=None, seed="one"):
    """The seed array (shaped like ``out``) for ``target``; see :func:`backprop`.

    ``seed="value"`` (a convention, :mod:`minigbp.conventions`) multiplies an index
    target's one-hot seed by ``out`` itself: the target logit's value instead of 1
    (iNNvestigate; zennit's ``output * one_hot``). An explicit seed array is used as given.
    """
    where = f"layer {layer!r}" if layer is not None else "the model output"
    if isinstance(target, bool):
        raise TypeError(f"backprop: target must be an int, an int array or a seed array, got {target!r}")
    target = np.asarray(target)
    if target.ndim == 0 and target.dtype.kind in "iu":  # one class for every sample
        target = np.full(out.shape[0], int(target))
    if target.dtype.kind in "iu":
        if out.ndim < 2:
            raise ValueError(f"backprop: class targets need an output with a class axis; {where} has shape {out.shape}")
        if target.shape != (out.shape[0],):
            raise ValueError(
                f"backprop: target indices must be one int or one per sample, shape ({out.shape[0]},); "
                f"got shape {target.shape} for {where} of shape {out.shape}"
            )
        bad = (target < 0) | (target >= out.shape[1])
        if bad.any():
            raise ValueError(
                f"backprop: target {target[bad][0]} out of range for {where} with {out.shape[1]} "
                f"outputs along axis 1 (shape {out.shape})"
            )
        one_hot = np.zeros_like(out)
        one_hot[np.arange(out.shape[0]), target] = 1
        return seed_rule(one_hot, out, seed)
    if target.dtype.kind == "f":
        if target.shape != out.shape:
            hint = " (class indices must be ints)" if target.ndim <= 1 else ""
            raise ValueError(f"backprop: seed shape {target.shape} does not match {where} shape {out.shape}{hint}")
        return target.astype(out.dtype)  # always a copy: the caller's array is never touched
    raise TypeError(f"backprop: target must be an int, an int array or a float seed array, got dtype {target.dtype}")
