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

Anything else raises :class:`ConversionError` naming the layer and its class. One function
per Keras layer class does the conversion (:mod:`minigbp.io.keras_layers`); this module walks
the model's config and wires the nodes.

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
import os
import warnings
import zipfile

import numpy as np

from ..gradcheck import rel_error
from ..model import INPUT, Graph
from . import ConversionError
from .keras_layers import CONVERTERS

__all__ = ["from_keras", "load_keras_model", "is_keras_archive", "graph_from_config", "model_kind",
           "model_config", "model_dtype", "layer_paths", "all_layers", "live_weights", "SUPPORTED"]

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
    config = model_config(model)
    graph = graph_from_config(model_kind(model), config, live_weights(model))
    _check_forward(model, graph, example_input)
    return graph


def graph_from_config(kind, config, weights):
    """The minigbp graph of a Keras model config (``model.get_config()``, or a ``.keras``
    file's) of ``kind`` ("Sequential" or "Functional") with ``weights``, ``{layer name: [arrays
    in Keras's order and layout]}``; no forward check."""
    return _Builder(weights.get).build(kind, config)


def model_kind(model):
    """"Sequential" or "Functional" (any other model class is built like a functional one)."""
    return "Sequential" if type(model).__name__ == "Sequential" else "Functional"


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
        return graph_from_config(spec.get("class_name", "Functional"), config, weights)
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


def model_config(model):
    """``model.get_config()`` of a Sequential or functional model; a ConversionError otherwise."""
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


def layer_paths(model, prefix=""):
    """``[(path, layer)]`` of every layer of a Keras model, a nested model's layers in its place
    as ``<model>.<layer>``: the names its nodes get."""
    found = []
    for layer in model.layers:
        if type(layer).__name__ in _MODELS and hasattr(layer, "layers"):
            found += layer_paths(layer, f"{prefix}{layer.name}.")
        else:
            found.append((prefix + layer.name, layer))
    return found


def all_layers(model):
    """Every layer of a Keras model, nested models' layers in place of the nested models."""
    return [layer for _, layer in layer_paths(model)]


def live_weights(model):
    """``{layer name: [arrays]}`` of a Keras model (``layer.get_weights()``, nested models included)."""
    return {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in all_layers(model)}


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
        if kind not in CONVERTERS:
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
            parts = CONVERTERS[kind](self, cfg, name, inputs)
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


# ------------------------------------------------------------------------ forward check

def _check_forward(model, graph, example_input):
    """Run both on one input; name the first top-level layer whose output differs."""
    dtype = model_dtype(model)
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


def model_dtype(model):
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
