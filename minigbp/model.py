"""Models: ``Graph`` (layers wired as a directed acyclic graph), the forward and backward
loops, and ``backprop`` (the three-mode input signal). ``Sequential``, the simplest graph,
a chain, is in :mod:`minigbp.sequential`.

A model is a list of *nodes* in topological order: ``Node(name, layer, inputs)``,
where ``inputs`` names the values the layer reads: ``"input"`` (the model's input) or
earlier nodes, whose value is their layer's output. A chain is the case where every
node reads the one before it; a ResNet block reads one value twice (the block and the
skip connection) and adds two values back together.

The forward pass runs the nodes in order and returns the output and a *tape*: one
``(name, layer, cache)`` entry per node, with the node's inputs in ``tape.inputs``.
The backward pass walks the tape in reverse; every node sends a signal down to each
of its inputs, and a value read by several nodes receives the **sum** of their signals
(the reverse-mode rule: ``d/dv`` of a sum of paths is the sum over paths). This is
:func:`backward_tape`, micrograd's ``backward()`` at tensor level.

Names follow PyTorch's module names (``"layer1.0.conv1"``), so ``state_dict()`` keys are
torch's. A layer called several times (torchvision's ResNet blocks call one ``relu``
module twice) gets one node per call: ``"layer1.0.relu"``, then ``"layer1.0.relu@1"``
(PyTorch's own suffix for a repeated call). A name that is a prefix of node names
(``"layer4"``, ``"features.denseblock4"``) means the block's last node, its output.
Nothing about a call is stored on the model, so one model can serve many threads.
"""

import difflib
from collections import namedtuple

import numpy as np

from .conventions import DEFAULT, resolve, rules_at
from .layers import Layer, check_input
from .ops.relu import check_mode
from .targets import as_target

__all__ = ["Graph", "Node", "INPUT", "backprop", "LoadResult",
           "forward_nodes", "backward_tape", "Tape", "prepare"]

LoadResult = namedtuple("LoadResult", ["missing_keys", "unexpected_keys"])

INPUT = "input"
"""The name of the model's input value in ``Node.inputs``."""

Node = namedtuple("Node", ["name", "layer", "inputs"])
Node.__doc__ = "One call of a layer: its node ``name``, the ``layer``, and the names of the values it reads."


# ------------------------------------------------------------------------------ engine

class Tape(list):
    """What a forward pass leaves for the backward pass: ``(name, layer, cache)`` per node.

    ``inputs[i]`` names the values entry ``i`` read (``"input"`` or node names) and
    ``outputs[i]`` is the ``(shape, dtype)`` of its output, so a backward pass can check the
    signal it is given.
    """

    def __init__(self):
        super().__init__()
        self.inputs = []
        self.outputs = []


def forward_nodes(nodes, x, on_step=None):
    """Run ``nodes`` (topological order) on ``x``; return ``(out, tape)``, ``out`` the last node's.

    Errors are re-raised with the node's name in front. ``on_step(name, layer, out)``, if
    given, sees every node's output (:func:`minigbp.trace` records them).
    """
    values = {INPUT: x}
    tape = Tape()
    for name, layer, inputs in nodes:
        try:
            out, cache = layer.forward(*[values[v] for v in inputs])
        except (TypeError, ValueError) as e:
            raise type(e)(f"layer '{name}': {e}") from e
        if on_step is not None:
            on_step(name, layer, out)
        values[name] = out
        tape.append((name, layer, cache))
        tape.inputs.append(inputs)
        tape.outputs.append((out.shape, out.dtype))
    return out, tape


def backward_tape(dout, tape, mode="vanilla", grads=None, conventions=DEFAULT, on_step=None, until=INPUT):
    """Walk a tape in reverse; return the signal at the model's input (or at node ``until``).

    ``dout`` is the signal at the last node's output. Each node receives the sum of what
    its consumers sent (``arriving``), runs ``layer.backward`` in the mode and conventions
    :func:`minigbp.conventions.rules_at` gives it, and sends one signal to each input.
    If ``grads`` is a dict, parameter gradients are stored in it under ``"<node>.<parameter>"``
    (meaningful in vanilla mode). ``on_step(name, layer, arriving, leaving)``, if given, sees
    each node's signals (``leaving`` is a tuple for layers with several inputs).
    """
    check_mode(mode)
    _check_signal(dout, tape)
    signals = {tape[-1][0]: dout}
    for (name, layer, cache), inputs in zip(reversed(tape), reversed(tape.inputs)):
        if name == until:  # every consumer of its value came later in the forward pass: the sum is complete
            return signals[name]
        arriving = signals.pop(name)  # the sum over every consumer of this node's value
        try:
            if grads is not None:
                for pname, g in layer.param_grads(arriving, cache).items():
                    grads[f"{name}.{pname}"] = g
            leaving = layer.backward(arriving, cache, *rules_at(name, layer, mode, conventions))
        except (TypeError, ValueError) as e:
            raise type(e)(f"layer '{name}' (backward): {e}") from e
        if on_step is not None:
            on_step(name, layer, arriving, leaving)
        for value, signal in zip(inputs, leaving if isinstance(leaving, tuple) else (leaving,)):
            signals[value] = signals[value] + signal if value in signals else signal  # sum over consumers
    return signals[until]


def _check_signal(dout, tape):
    if not tape:
        raise ValueError("backward: the tape is empty (the forward pass ran no layer)")
    shape, dtype = tape.outputs[-1]
    if not isinstance(dout, np.ndarray):
        raise TypeError(f"backward: the signal for layer '{tape[-1][0]}' must be a numpy array of shape "
                        f"{shape} and dtype {dtype}, got {type(dout).__name__}")
    if dout.shape != shape or dout.dtype != dtype:
        raise ValueError(f"backward: the signal for layer '{tape[-1][0]}' must have its forward output's "
                         f"shape {shape} and dtype {dtype}, got shape {dout.shape} and dtype {dout.dtype}")


# ------------------------------------------------------------------------------- Graph

class Graph(Layer):
    """Layers wired as a directed acyclic graph (see the module docstring).

    Build one node at a time with :meth:`call`, which returns the node's name to pass
    on as an input; the last node is the output::

        g = mg.Graph()
        h = g.call("conv1", mg.Conv2d(8, 8, 3, padding=1), mg.INPUT)
        h = g.call("relu", relu, h)
        h = g.call("conv2", mg.Conv2d(8, 8, 3, padding=1), h)
        h = g.call("add", mg.Add(), h, mg.INPUT)       # residual: input + F(input)
        g.call("relu", relu, h)                         # the same module again: "relu@1"

    ``Graph(nodes)`` rebuilds one from ``(name, layer, inputs)`` triples (e.g. another
    graph's :attr:`nodes`). Nodes hold leaf layers, not other models.

    Examples
    --------
    >>> import numpy as np, minigbp as mg
    >>> g = mg.Graph()
    >>> a = g.call("conv", mg.Conv2d(2, 2, 3, padding=1), mg.INPUT)
    >>> g.call("add", mg.Add(), a, mg.INPUT)
    'add'
    >>> g(np.zeros((1, 2, 5, 5))).shape
    (1, 2, 5, 5)
    """

    def __init__(self, nodes=()):
        self._nodes, self._names = [], set()
        for name, layer, inputs in nodes:
            self.call(name, layer, *inputs)

    def call(self, name, layer, *inputs):
        """Append a node calling ``layer`` on ``inputs`` (value names); return its name.

        ``name`` is the module name; if an earlier node called the same layer object
        under that name, this call is named ``name@1`` (then ``@2``, ...).
        """
        if not isinstance(name, str) or not name or name == INPUT or name.startswith(".") or name.endswith("."):
            raise ValueError(f"Graph: node name must be a non-empty dotted name other than {INPUT!r}, got {name!r}")
        if not isinstance(layer, Layer) or isinstance(layer, Graph):
            raise TypeError(f"Graph: node {name!r} needs a minigbp layer (not a model), got {layer!r}")
        if name in self._names:
            first = next(n for n in self._nodes if n.name == name)
            if first.layer is not layer:
                raise ValueError(f"Graph: node name {name!r} is taken by another layer ({first.layer!r})")
            k = 1
            while f"{name}@{k}" in self._names:
                k += 1
            name = f"{name}@{k}"
        if not inputs:
            raise ValueError(f"Graph: node {name!r} reads no input")
        missing = [v for v in inputs if v != INPUT and v not in self._names]
        if missing:
            raise ValueError(f"Graph: node {name!r} reads {missing[0]!r}, which is neither {INPUT!r} nor an "
                             f"earlier node")
        if layer.n_inputs is not None and len(inputs) != layer.n_inputs:
            raise ValueError(f"Graph: node {name!r}: {type(layer).__name__} takes {layer.n_inputs} input(s), "
                             f"got {len(inputs)}")
        self._nodes.append(Node(name, layer, tuple(inputs)))
        self._names.add(name)
        return name

    # ------------------------------------------------------------ structure

    @property
    def nodes(self):
        """The nodes, ``Node(name, layer, inputs)``, in topological (execution) order."""
        return list(self._nodes)

    def named_leaves(self):
        """``(node name, layer)`` for every node, in execution order."""
        return [(n.name, n.layer) for n in self.nodes]

    def resolve(self, name):
        """The node ``name`` means: itself, or for a block prefix (``"layer4"``) its last node."""
        names = [n.name for n in self.nodes]
        name = str(name)
        if name in names:
            return name
        inside = [n for n in names if n.startswith(name + ".")]
        if inside:
            return inside[-1]
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"no layer named {name!r}{hint} ({len(names)} layers: {_listing(names)})")

    def nodes_through(self, name=None):
        """The nodes the value of ``name`` (default: the output) depends on, in order, itself last."""
        nodes = self.nodes
        if not nodes:
            raise ValueError(f"{type(self).__name__}: the model has no layers")
        end = self.resolve(name) if name is not None else nodes[-1].name
        needed, keep = {end}, []
        for node in reversed(nodes):
            if node.name in needed:
                keep.append(node)
                needed.update(node.inputs)
        return keep[::-1]

    def __getitem__(self, name):
        """The layer of node ``name`` (a block prefix: its last node's layer)."""
        try:
            return dict(self.named_leaves())[self.resolve(name)]
        except ValueError as e:
            raise KeyError(str(e)) from None

    def __len__(self):
        return len(self.nodes)

    def __repr__(self):
        lines, previous = [f"{type(self).__name__}("], INPUT
        for name, layer, inputs in self.nodes:
            wiring = "" if inputs == (previous,) else "  <- " + ", ".join(inputs)
            lines.append(f"  ({name}): {layer!r}{wiring}")
            previous = name
        return "\n".join(lines) + "\n)"

    # ------------------------------------------------------ forward/backward

    def forward(self, x, upto=None):
        """Run the nodes; return ``(out, tape)``.

        Parameters
        ----------
        x : ndarray (N, ...) float32 or float64 (never modified)
        upto : str, optional
            Stop at this node (a name such as ``"features.28"``, or a block such as
            ``"layer4"``, meaning its last node); only the nodes it depends on run, and
            ``out`` is its output.

        Returns
        -------
        out : ndarray, the model's (or ``upto``'s) output, same dtype as ``x``
        tape : :class:`Tape`, one entry per node run
        """
        check_input(x, type(self).__name__)
        return forward_nodes(self.nodes_through(upto), x)

    def backward(self, dout, tape, mode="vanilla", *, preset=None, conventions=None, **switches):
        """Send ``dout`` (shaped like the tape's last output) back through the tape.

        Returns ``dx``, shaped like the forward input. ``mode`` is "vanilla",
        "deconvnet" or "guided" (only ReLUs depend on it); ``preset``, ``conventions`` and
        the switches as in :func:`backprop`.
        """
        check_mode(mode)
        return backward_tape(dout, tape, mode, conventions=resolve(preset, mode, conventions, switches))

    def backward_with_grads(self, dout, tape):
        """Vanilla backward that also returns parameter gradients.

        Returns ``(dx, grads)`` with ``grads`` keyed like :meth:`state_dict`
        (``"features.0.weight"``); a layer called several times gets the sum over its calls.
        """
        per_node = {}
        dx = backward_tape(dout, tape, "vanilla", per_node)
        owner = self._owners()
        grads = {}
        for key, g in per_node.items():
            node, pname = key.rsplit(".", 1)
            k = f"{owner[node]}.{pname}"
            grads[k] = grads[k] + g if k in grads else g
        order = list(self.state_dict())
        return dx, dict(sorted(grads.items(), key=lambda kv: order.index(kv[0])))

    # -------------------------------------------------------- architecture

    def spec(self):
        """The architecture as JSON-ready data (no weights); :func:`minigbp.io.weights.model_from_spec` rebuilds it.

        ``{"type": "Graph", "nodes": [[name, layer_spec, inputs], ...]}`` with layer specs
        ``{"type": "Conv2d", "config": {...constructor arguments...}}``, or
        ``{"same_as": name}`` for a further call of an earlier node's layer
        (:func:`minigbp.io.weights.model_from_spec` rebuilds the model).
        """
        owner, nodes = self._owners(), []
        for name, layer, inputs in self.nodes:
            spec = _layer_spec(layer) if owner[name] == name else {"same_as": owner[name]}
            nodes.append([name, spec, list(inputs)])
        return {"type": "Graph", "nodes": nodes}

    # ------------------------------------------------------------- weights

    def _owners(self):
        """``{node name: name of the first node calling the same layer}`` (parameters live there)."""
        first, owner = {}, {}
        for name, layer in self.named_leaves():
            owner[name] = first.setdefault(id(layer), name)
        return owner

    def unique_leaves(self):
        """``(name, layer)`` for every layer once, under its first node's name (a layer called
        several times, like ResNet's ``relu``, appears once)."""
        owner = self._owners()
        return [(name, layer) for name, layer in self.named_leaves() if owner[name] == name]

    def named_parameters(self):
        """``(key, array)`` for every parameter and buffer, each layer once (its first node's name)."""
        return [(f"{name}.{p}", arr) for name, layer in self.unique_leaves() for p, arr in layer.named_parameters()]

    def state_dict(self):
        """``{dotted_name: array}`` of every parameter, PyTorch's names and layouts.

        The arrays are the model's own (not copies), as in PyTorch.
        """
        return dict(self.named_parameters())

    def state_dict_problems(self, state_dict, strict=True, what="the state dict", against="the model"):
        """Every problem :meth:`load_state_dict` would meet, as sentences (empty: it fits).

        Missing and unexpected keys (when ``strict``), shapes that differ, values that
        are not floating-point arrays; ``what``/``against`` name the two sides. Keys a
        layer ignores (BatchNorm's ``num_batches_tracked``) are accepted.
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(f"load_state_dict: expected a dict of arrays, got {type(state_dict).__name__}")
        own, ignored = dict(self.named_parameters()), self._ignored_keys()
        problems = []
        if strict:
            problems += [f"missing key {k!r} (shape {own[k].shape} in {against})" for k in own if k not in state_dict]
        for key, value in state_dict.items():
            if key in ignored:
                continue
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

    def _ignored_keys(self):
        return {f"{name}.{k}" for name, layer in self.named_leaves() for k in layer.ignored_keys}

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
        own, ignored = dict(self.named_parameters()), self._ignored_keys()
        layers = dict(self.named_leaves())
        for key, value in state_dict.items():
            if key in own:
                arr = np.asarray(value)
                name, pname = key.rsplit(".", 1)
                setattr(layers[name], pname, np.array(arr, dtype=np.float32 if arr.dtype.itemsize <= 4 else np.float64))
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own and k not in ignored]
        return LoadResult([] if strict else missing, [] if strict else unexpected)


def _listing(names, most=12):
    """Up to ``most`` names, the rest elided (error messages of big models stay short)."""
    if len(names) <= most:
        return ", ".join(names)
    return ", ".join(names[:most // 2]) + ", ..., " + ", ".join(names[-most // 2:]) + " (print(model) lists all)"


def _layer_spec(layer):
    return {"type": type(layer).__name__, "config": layer.config()}


# ---------------------------------------------------------------------------- backprop

def backprop(model, x, target, mode="guided", layer=None, *, preset=None, conventions=None, **switches):
    """Signal at the input for one target, in the given mode.

    The model runs forward (up to the target's start layer); the start layer's output
    ``out`` receives the target's seed, and the seed travels back down in ``mode``:
    "vanilla" (the gradient), "deconvnet" or "guided" (see :mod:`minigbp.ops.relu`).

    Parameters
    ----------
    model : Graph or Sequential (or a single Layer)
    x : ndarray (N, ...) float32 or float64, never modified
    target : any form of :mod:`minigbp.targets`
        an int (one class for every sample), an int array (N,) (one per sample), a seed
        array shaped like ``out``, ``"top1"``, ``"layer:NAME"``, ``"channel:NAME:C"``,
        ``"neuron:NAME:C:Y:X"``. The default seed is a one-hot 1 at the *logit*, not the
        logit's value nor a softmax probability (Captum's and most torch recipes' convention).
    mode : "vanilla" | "deconvnet" | "guided"
    layer : str, optional
        Start from this layer's output instead of the model's (e.g. ``"features.28"``, or a
        block such as ``"layer4"``); an int target then picks a channel.
    preset : str, optional
        A library's conventions (:data:`minigbp.presets.PRESETS`: "captum", "torchray", ...).
    conventions : :class:`minigbp.Conventions`, optional
        All the switches at once (instead of ``preset``).
    **switches
        ``relu_at_zero``, ``relu_scope``, ``functional_relu``, ``pool_ties``, ``seed``
        (:mod:`minigbp.conventions`), applied on top of the preset or conventions;
        any other keyword is a ``TypeError``.

    Returns
    -------
    ndarray, same shape and dtype as ``x``.
    """
    model, rules = prepare(model, mode, preset, conventions, switches, layer=layer)
    t = as_target(target, layer)
    out, tape = model.forward(x, upto=t.layer)
    return model.backward(t.seed(out, rules.seed), tape, mode, conventions=rules)


def prepare(model, mode, preset=None, conventions=None, switches=None, base=DEFAULT, layer=None):
    """What every entry point that runs a backward pass checks and settles first: the mode
    (None: a computation that is not one of the three modes, such as Grad-CAM's gradient),
    the conventions (:func:`minigbp.conventions.resolve`), and a single layer wrapped in a
    one-node model (which has no ``layer`` to start from). Returns ``(model, conventions)``."""
    if mode is not None:
        check_mode(mode)
    rules = resolve(preset, mode, conventions, switches or {}, base)
    if not isinstance(model, Graph):
        if not isinstance(model, Layer):
            raise TypeError(f"expected a minigbp model or layer, got {type(model).__name__}")
        if layer is not None:
            raise ValueError(f"layer={layer!r} needs a model (Graph or Sequential), not a single layer")
        model = Graph([("0", model, (INPUT,))])  # named as Sequential(model) would name it
    return model, rules
