"""``from_keras``: a Keras CNN as a minigbp model with the same weights, names and outputs.

A ``keras.Sequential`` or functional model (Keras 3, which is also TensorFlow 2.16+'s
``tf.keras``), or a ``.keras`` file, becomes a :class:`minigbp.Graph`. Keras runs
channels-last, (N, H, W, C); the minigbp model takes the same images channels-first,
``x_minigbp = x_keras.transpose(0, 3, 1, 2)``, like every minigbp model. Each Keras layer
becomes one node, or a few:

========================================  ===================================================
Keras layer                               minigbp nodes
========================================  ===================================================
``InputLayer``                            the graph's input
``Conv2D``                                ``Conv2d`` (kernel HWIO -> OIHW); ``padding="same"``
                                          is the convolution's own symmetric padding when it
                                          can be, else ``SamePad2d`` then ``Conv2d``
``Dense``                                 ``Linear`` (kernel (in, out) -> weight (out, in));
                                          after a ``Flatten`` of an (H, W, C) map, the kernel's
                                          rows are reordered from (h, w, c) to (c, h, w) order
``MaxPooling2D``, ``AveragePooling2D``    ``MaxPool2d``, ``AvgPool2d`` ("same": as for Conv2D,
                                          padding with -inf before a max pooling; an average
                                          pooling's "same" must be symmetric, its divisor
                                          leaving the padding out)
``GlobalAveragePooling2D``                ``AdaptiveAvgPool2d(1)`` and ``Flatten``
``GlobalMaxPooling2D``                    ``GlobalMaxPool2d`` and ``Flatten``
``ZeroPadding2D``                         ``ZeroPad2d``
``Flatten``, ``Dropout``                  ``Flatten``, ``Dropout`` (identity)
``BatchNormalization`` (channels)         ``BatchNorm2d`` (gamma, beta, moving mean and
                                          variance; ``epsilon``)
``Add``, ``Concatenate`` (channels)       ``Add``, ``Cat(dim=1)``
``Activation``, ``ReLU``, ``Softmax``     ``ReLU``, ``Softmax(dim=1)``, ``Identity`` (linear)
``activation=`` of Conv2D and Dense       a ``ReLU`` or ``Softmax`` node after the layer
nested ``Sequential``/functional models   their layers, in place
========================================  ===================================================

Anything else raises :class:`ConversionError` naming the layer and its class.

**Names.** A node is named by its Keras layer; a layer that becomes several nodes names
them ``<layer>.<part>`` (``block5_conv4.conv``, ``block5_conv4.relu``), so the layer's
name, as a block, means its **output, activation included** (:meth:`Graph.resolve`):
``layer="block5_conv4"`` and ``target="layer:block5_conv4"`` mean what a Keras recipe
means by ``model.get_layer("block5_conv4").output``. Layers of a nested model are
``<model>.<layer>``. A softmax head stays in the model: its output is the probability,
and the seeds of :func:`minigbp.backprop` sit at the probability, as Keras code that
differentiates ``model(x)[:, c]`` does.

A live model is checked after conversion: both run on one random input (in the model's
dtype) and must agree (relative 1e-9 in float64, 1e-4 in float32); otherwise the first
layer whose output differs is named. Files are read with h5py and JSON only: no Keras,
and nothing from the file is run.
"""

import json
import math
import os
import warnings
import zipfile

import numpy as np

from .. import layers as L
from ..gradcheck import rel_error
from ..model import INPUT, Graph
from . import ConversionError

__all__ = ["from_keras", "load_keras_model", "is_keras_archive", "SUPPORTED"]

#: Keras layer classes that convert
SUPPORTED = ("InputLayer", "Conv2D", "Dense", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
             "GlobalMaxPooling2D", "ZeroPadding2D", "Flatten", "Dropout", "BatchNormalization", "Add",
             "Concatenate", "Activation", "ReLU", "Softmax")

_MODELS = ("Sequential", "Functional", "Model")


# ------------------------------------------------------------------------ entry points

def from_keras(model, example_input=None):
    """A Keras ``Sequential`` or functional model as a minigbp :class:`~minigbp.Graph`.

    Parameters
    ----------
    model : keras.Model
        Built, with its weights (``keras.applications.VGG16(weights=None)``, a model of
        your own, ...). Never modified.
    example_input : array (N, H, W, C), optional
        The input of the forward check; by default a random one of the model's input
        shape (64x64 where that is not fixed).

    Returns
    -------
    minigbp.Graph
        Parameters in the weights' dtype (float64 for a float64 Keras model); input
        (N, C, H, W).

    Raises
    ------
    ConversionError
        A layer that does not convert (named, with its class), a model that is not
        Sequential or functional, or a forward pass that differs from Keras's.
    """
    config = _model_config(model)
    weights = {}
    _live_weights(model, weights)
    graph = _Builder(weights.get).build(type(model).__name__ if type(model).__name__ in _MODELS else "Functional",
                                        config)
    _check_forward(model, graph, example_input)
    return graph


def load_keras_model(path):
    """A ``.keras`` file (Keras 3's archive: ``config.json`` and ``model.weights.h5``) as a
    minigbp :class:`~minigbp.Graph`, read with JSON and h5py only (no Keras, nothing run)."""
    from .keras import read_keras_weights

    path = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as zf:
            spec = json.loads(zf.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as e:
        raise ValueError(f"{path}: not a .keras model archive ({e})") from None
    stored = read_keras_weights(path)
    config = spec.get("config", {})
    if any(layer.name is None for layer in stored):  # older archives: layers with weights, in model order
        order = [c["config"]["name"] for c in _flat_layers(config) if c["class_name"] in _WEIGHTED]
        if len(order) != len(stored):
            raise ValueError(f"{path}: {len(stored)} layers with weights, but the architecture has {len(order)}")
        weights = {n: layer.weights for n, layer in zip(order, stored)}
    else:
        weights = {layer.name: layer.weights for layer in stored}
    try:
        return _Builder(weights.get).build(spec.get("class_name", "Functional"), config)
    except ConversionError as e:
        raise ConversionError(f"{path}: {e}") from None


def is_keras_archive(path):
    """True if ``path`` is a ``.keras`` model archive (a zip holding ``config.json`` and
    ``model.weights.h5``), by content."""
    try:
        with zipfile.ZipFile(os.fspath(path)) as zf:
            return {"config.json", "model.weights.h5"} <= set(zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


_WEIGHTED = ("Conv2D", "Dense", "BatchNormalization")


def _flat_layers(config):
    for c in config.get("layers", []):
        if c["class_name"] in _MODELS:
            yield from _flat_layers(c["config"])
        else:
            yield c


def _model_config(model):
    if not hasattr(model, "get_config") or not hasattr(model, "layers"):
        raise ConversionError(f"from_keras: expected a keras.Model, got {type(model).__name__}")
    try:
        config = model.get_config()
    except NotImplementedError:
        config = None
    if not isinstance(config, dict) or "layers" not in config:
        raise ConversionError(f"from_keras: {model.name!r} ({type(model).__name__}) is a subclassed model; "
                              "minigbp converts Sequential and functional models")
    return config


def _live_weights(model, into):
    for layer in model.layers:
        if hasattr(layer, "layers") and hasattr(layer, "get_config") and type(layer).__name__ in _MODELS:
            _live_weights(layer, into)
        else:
            into[layer.name] = [np.asarray(w) for w in layer.get_weights()]


# ------------------------------------------------------------------------ the builder

class _Builder:
    """Walks a model config (layers in topological order) and calls :meth:`Graph.call`."""

    def __init__(self, weights):
        self.weights, self.graph = weights, Graph()
        self.input_shape = None   # (H, W, C) of the model input, None where not fixed
        self.flat = {}            # value -> (H, W, C) of the channels-last map a Flatten made it from

    def build(self, kind, config):
        out = self.model(kind, config, "", [INPUT])
        graph = self.graph
        if graph.nodes and out != graph.nodes[-1].name:  # side branches that do not reach the output
            graph = Graph(graph.nodes_through(out))
        if not graph.nodes:
            raise ConversionError("from_keras: the model has no layers to convert")
        return graph

    def model(self, kind, config, prefix, inputs):
        if kind == "Sequential":
            value = inputs
            for c in config["layers"]:
                if c["class_name"] == "InputLayer":
                    self._input(c, prefix)
                    continue
                value = [self.layer(c, prefix, value)]
            return value[0]
        values = {}
        for (name, _), given in zip(_triples(config.get("input_layers"), "input_layers"), inputs):
            values[name] = given
        if len(values) != len(inputs) or len(values) != 1:
            raise ConversionError(f"from_keras: model {config.get('name')!r} has {len(values)} inputs; minigbp "
                                  f"models take one")
        for c in config["layers"]:
            name = c["config"]["name"]
            if c["class_name"] == "InputLayer":
                self._input(c, prefix)
                continue
            nodes = c.get("inbound_nodes", [])
            if len(nodes) != 1:
                raise ConversionError(f"from_keras: layer {prefix + name!r} ({c['class_name']}) is called "
                                      f"{len(nodes)} times; minigbp converts layers called once")
            sources = _history(nodes[0])
            missing = [s for s, _ in sources if s not in values]
            if missing:
                raise ConversionError(f"from_keras: layer {prefix + name!r} reads {missing[0]!r}, which is not "
                                      f"an earlier layer")
            values[name] = self.layer(c, prefix, [values[s] for s, _ in sources])
        outputs = _triples(config.get("output_layers"), "output_layers")
        if len(outputs) != 1:
            raise ConversionError(f"from_keras: model {config.get('name')!r} has {len(outputs)} outputs; minigbp "
                                  f"models have one")
        return values[outputs[0][0]]

    def _input(self, c, prefix):
        shape = c["config"].get("batch_shape") or c["config"].get("batch_input_shape")
        if not prefix and shape is not None:
            if len(shape) != 4:
                raise ConversionError(f"from_keras: input {c['config']['name']!r} has shape {shape}; minigbp "
                                      f"converts image models, (N, H, W, C)")
            self.input_shape = tuple(shape[1:])

    def layer(self, c, prefix, inputs):
        """Convert one layer config; return the name of its output value."""
        kind, cfg = c["class_name"], c["config"]
        name = prefix + cfg["name"]
        if kind in _MODELS:
            return self.model(kind, cfg, name + ".", inputs)
        if kind not in _CONVERTERS:
            raise ConversionError(f"from_keras: layer {name!r} ({kind}) is not supported; minigbp converts "
                                  f"{', '.join(SUPPORTED)} (and nested Sequential or functional models)")
        if cfg.get("data_format", "channels_last") != "channels_last":
            raise ConversionError(f"from_keras: layer {name!r} ({kind}): data_format={cfg['data_format']!r}; "
                                  f"minigbp converts channels_last models")
        if kind not in ("Dense", "Dropout") and any(v in self.flat for v in inputs):
            raise ConversionError(f"from_keras: layer {name!r} ({kind}) reads a Flatten of an (H, W, C) map, whose "
                                  f"order minigbp reproduces only in the Dense that reads it")
        hwc = self.shape_of(inputs[0], name, kind) if kind == "Flatten" else None
        try:
            parts = _CONVERTERS[kind](self, cfg, name, inputs)
        except ConversionError:
            raise
        except (ValueError, TypeError, KeyError) as e:
            raise ConversionError(f"from_keras: layer {name!r} ({kind}): {e}") from e
        value = inputs
        for role, layer in parts:
            value = [self.graph.call(name if len(parts) == 1 else f"{name}.{role}", layer, *value)]
        if kind == "Flatten" and hwc is not None and hwc[0] * hwc[1] > 1:
            self.flat[value[0]] = hwc
        if kind == "Dropout" and inputs[0] in self.flat:
            self.flat[value[0]] = self.flat[inputs[0]]
        return value[0]

    def take(self, cfg, name, kind, count):
        """The layer's stored arrays (a list of ``count``), or an error naming what is missing."""
        arrays = self.weights(cfg["name"])
        if arrays is None or len(arrays) != count:
            found = "none" if arrays is None else f"{len(arrays)}: {[np.shape(a) for a in arrays]}"
            raise ConversionError(f"from_keras: layer {name!r} ({kind}) needs {count} weight arrays, found {found}")
        return [np.asarray(a) for a in arrays]

    def shape_of(self, value, name, kind):
        """(H, W, C) of a channels-last value, found by running the graph built so far on zeros."""
        if self.input_shape is None or None in self.input_shape:
            raise ConversionError(f"from_keras: layer {name!r} ({kind}) needs the size of its input, and the "
                                  f"model's input size is not fixed; build the Keras model with one")
        h, w, c = self.input_shape
        if value == INPUT:
            return h, w, c
        out, _ = self.graph.forward(np.zeros((1, c, h, w), np.float32), upto=value)
        return (out.shape[2], out.shape[3], out.shape[1]) if out.ndim == 4 else None


def _triples(spec, what):
    """``[name, node, tensor]`` triples (one may come unwrapped) -> ``[(name, tensor), ...]``."""
    if not spec:
        raise ConversionError(f"from_keras: the model config has no {what}")
    if isinstance(spec[0], str):
        spec = [spec]
    return [(s[0], s[2]) for s in spec]


def _history(node):
    """The ``(layer name, tensor index)`` of every tensor an inbound node reads, in order."""
    found = []

    def walk(v):
        if isinstance(v, dict):
            if v.get("class_name") == "__keras_tensor__":
                h = v["config"]["keras_history"]
                found.append((h[0], h[2]))
            else:
                for u in v.values():
                    walk(u)
        elif isinstance(v, (list, tuple)):
            for u in v:
                walk(u)

    walk(node.get("args", []) if isinstance(node, dict) else node)
    return found


# -------------------------------------------------------------------- layer converters

def _activation(cfg, name):
    """The node a layer's ``activation=`` adds: [] for linear, [("relu", ReLU())], ..."""
    act = cfg.get("activation", "linear")
    if isinstance(act, dict):  # a serialized function: {"class_name": "function", "config": "relu", ...}
        act = act.get("config") if isinstance(act.get("config"), str) else act.get("class_name")
    if act in (None, "linear"):
        return []
    if act == "relu":
        return [("relu", L.ReLU())]
    if act == "softmax":
        return [("softmax", L.Softmax(1))]
    raise ConversionError(f"from_keras: layer {name!r}: activation {act!r} is not supported (relu, softmax, "
                          f"linear are)")


def _same(kernel, stride, dilation=(1, 1)):
    """Symmetric per-axis padding for Keras's "same" when it is symmetric at every input size
    (stride 1, even total ``D(K-1)``), else None."""
    if stride != (1, 1):
        return None
    totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
    return tuple(t // 2 for t in totals) if all(t % 2 == 0 for t in totals) else None


def _conv2d(b, cfg, name, inputs):
    k, s, d = tuple(cfg["kernel_size"]), tuple(cfg["strides"]), tuple(cfg["dilation_rate"])
    use_bias, groups = cfg.get("use_bias", True), cfg.get("groups", 1)
    arrays = b.take(cfg, name, "Conv2D", 2 if use_bias else 1)
    kernel = arrays[0]  # (kh, kw, in / groups, out)
    parts, padding = [], 0
    if cfg["padding"] == "same":
        padding = _same(k, s, d)
        if padding is None:
            parts.append(("pad", L.SamePad2d(k, s, d)))
            padding = 0
    elif cfg["padding"] != "valid":
        raise ConversionError(f"from_keras: layer {name!r} (Conv2D): padding={cfg['padding']!r} is not supported")
    conv = L.Conv2d(kernel.shape[2] * groups, cfg["filters"], k, stride=s, padding=padding, dilation=d,
                    groups=groups, bias=use_bias)
    conv.weight = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))
    conv.bias = arrays[1] if use_bias else None
    return parts + [("conv", conv)] + _activation(cfg, name)


def _dense(b, cfg, name, inputs):
    use_bias = cfg.get("use_bias", True)
    arrays = b.take(cfg, name, "Dense", 2 if use_bias else 1)
    kernel = arrays[0]  # (in, out)
    if inputs[0] in b.flat:  # rows in Keras's (h, w, c) order -> minigbp's (c, h, w)
        h, w, c = b.flat[inputs[0]]
        kernel = kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
    dense = L.Linear(kernel.shape[0], kernel.shape[1], bias=use_bias)
    dense.weight = np.ascontiguousarray(kernel.T)
    dense.bias = arrays[1] if use_bias else None
    return [("dense", dense)] + _activation(cfg, name)


def _pool(b, cfg, name, inputs, kind):
    k = tuple(cfg["pool_size"])
    s = tuple(cfg.get("strides") or k)
    layer = L.MaxPool2d if kind == "MaxPooling2D" else L.AvgPool2d
    if cfg["padding"] == "valid":
        return [("pool", layer(k, s))]
    padding = _same(k, s)
    if padding is not None and all(p <= kk // 2 for p, kk in zip(padding, k)):
        if kind == "MaxPooling2D":
            return [("pool", L.MaxPool2d(k, s, padding))]
        return [("pool", L.AvgPool2d(k, s, padding, count_include_pad=False))]
    if kind == "MaxPooling2D":
        return [("pad", L.SamePad2d(k, s, value=-math.inf)), ("pool", L.MaxPool2d(k, s))]
    raise ConversionError(f"from_keras: layer {name!r} (AveragePooling2D): padding='same' with pool_size {k} and "
                          f"strides {s} pads asymmetrically, and its divisor leaves the padding out; minigbp "
                          f"converts it only with stride 1 and odd pool sizes")


def _global(b, cfg, name, inputs, kind):
    pool = L.AdaptiveAvgPool2d(1) if kind == "GlobalAveragePooling2D" else L.GlobalMaxPool2d()
    return [("pool", pool)] + ([] if cfg.get("keepdims", False) else [("flatten", L.Flatten())])


def _batchnorm(b, cfg, name, inputs):
    axis = cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    if axis not in (-1, 3):
        raise ConversionError(f"from_keras: layer {name!r} (BatchNormalization): axis={cfg.get('axis')!r}; minigbp "
                              f"normalizes the channels (axis -1 of (N, H, W, C))")
    scale, center = cfg.get("scale", True), cfg.get("center", True)
    arrays = b.take(cfg, name, "BatchNormalization", 2 + scale + center)
    mean, var = arrays[-2], arrays[-1]
    bn = L.BatchNorm2d(len(mean), eps=cfg["epsilon"])
    bn.weight = arrays[0] if scale else np.ones_like(mean)
    bn.bias = arrays[int(scale)] if center else np.zeros_like(mean)
    bn.running_mean, bn.running_var = mean, var
    return [("bn", bn)]


def _activation_layer(b, cfg, name, inputs):
    parts = _activation(cfg, name)
    return parts or [("identity", L.Identity())]


def _relu_layer(b, cfg, name, inputs):
    extra = {k: cfg.get(k) for k in ("max_value", "negative_slope", "threshold") if cfg.get(k) not in (None, 0, 0.0)}
    if extra:
        raise ConversionError(f"from_keras: layer {name!r} (ReLU): {extra} is not a plain ReLU")
    return [("relu", L.ReLU())]


def _softmax_layer(b, cfg, name, inputs):
    if cfg.get("axis", -1) != -1:
        raise ConversionError(f"from_keras: layer {name!r} (Softmax): axis={cfg['axis']!r}; minigbp converts the "
                              f"softmax over the last (class or channel) axis")
    return [("softmax", L.Softmax(1))]


def _concatenate(b, cfg, name, inputs):
    if cfg.get("axis", -1) not in (-1, 3):
        raise ConversionError(f"from_keras: layer {name!r} (Concatenate): axis={cfg['axis']!r}; minigbp "
                              f"concatenates channels (axis -1)")
    return [("cat", L.Cat(1))]


def _zero_padding(b, cfg, name, inputs):
    (top, bottom), (left, right) = cfg["padding"]
    return [("pad", L.ZeroPad2d((left, right, top, bottom)))]


_CONVERTERS = {
    "Conv2D": _conv2d,
    "Dense": _dense,
    "MaxPooling2D": lambda b, cfg, name, inputs: _pool(b, cfg, name, inputs, "MaxPooling2D"),
    "AveragePooling2D": lambda b, cfg, name, inputs: _pool(b, cfg, name, inputs, "AveragePooling2D"),
    "GlobalAveragePooling2D": lambda b, cfg, name, inputs: _global(b, cfg, name, inputs, "GlobalAveragePooling2D"),
    "GlobalMaxPooling2D": lambda b, cfg, name, inputs: _global(b, cfg, name, inputs, "GlobalMaxPooling2D"),
    "ZeroPadding2D": _zero_padding,
    "Flatten": lambda b, cfg, name, inputs: [("flatten", L.Flatten())],
    "Dropout": lambda b, cfg, name, inputs: [("dropout", L.Dropout(cfg.get("rate", 0.5)))],
    "BatchNormalization": _batchnorm,
    "Add": lambda b, cfg, name, inputs: [("add", L.Add())],
    "Concatenate": _concatenate,
    "Activation": _activation_layer,
    "ReLU": _relu_layer,
    "Softmax": _softmax_layer,
}


# ------------------------------------------------------------------------ forward check

def _check_forward(model, graph, example_input):
    """Run both on one input; name the first top-level layer whose output differs."""
    dtype = _dtype(model)
    if example_input is None:
        shape = tuple(model.inputs[0].shape)
        shape = (2,) + tuple(64 if s is None else int(s) for s in shape[1:])
        x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    else:
        x = np.asarray(example_input, dtype=dtype)
    x = x.astype(str(model.inputs[0].dtype)).astype(dtype)  # what Keras computes with (an input layer may be float32)
    tol = 1e-9 if dtype == np.float64 else 1e-4
    theirs = _run(model, x)
    mine = graph(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    if mine.ndim == 4:
        mine = mine.transpose(0, 2, 3, 1)
    if mine.shape == theirs.shape and rel_error(mine, theirs) <= tol:
        return
    raise ConversionError(f"from_keras: the converted model's output differs from {model.name!r}'s on an input "
                          f"of shape {x.shape}{_first_difference(model, graph, x, tol)}")


def _first_difference(model, graph, x, tol):
    import keras

    names = [layer.name for layer in model.layers if layer.name in {n.split(".")[0] for n, _ in
                                                                    graph.named_leaves()}]
    try:
        outs = _run(keras.Model(model.inputs, [model.get_layer(n).output for n in names]), x)
    except Exception:  # e.g. a layer output that is not reachable as a tensor: say no more
        return ""
    for name, theirs in zip(names, outs if isinstance(outs, list) else [outs]):
        theirs = np.asarray(theirs)
        mine, _ = graph.forward(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), upto=name)
        if mine.ndim == 4:
            mine = mine.transpose(0, 2, 3, 1)
        if mine.shape != theirs.shape:
            return f"; first at layer {name!r}: shape {mine.shape}, Keras {theirs.shape}"
        if rel_error(mine, theirs) > tol:
            return f"; first at layer {name!r} (relative difference {rel_error(mine, theirs):.2g})"
    return ""


def _dtype(model):
    """The dtype a Keras model computes in: its weights' (float32 or float64)."""
    weights = getattr(model, "weights", [])
    dtype = np.dtype(str(getattr(weights[0], "dtype", "float32")).replace("tf.", "")) if weights else None
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float32)


def _run(model, x):
    """``model(x)`` in inference mode as NumPy (a list for several outputs)."""
    with warnings.catch_warnings():  # Keras warns when a one-input model built on [input] gets a tensor
        warnings.simplefilter("ignore", UserWarning)
        out = model(x, training=False)
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else np.asarray(out)
