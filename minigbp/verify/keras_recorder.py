"""The Keras side of a trace: a Keras model's layers run as usual, every observable signal recorded.

:class:`KerasRecorder` replaces each layer's ``call`` on the model given to the function
under test (an instance attribute, removed afterwards) by one that records the layer's
inputs and output and wraps them in identities whose TensorFlow gradient records the signal
arriving at the output and the signal leaving through each input. For a layer with an
``activation=`` it also wraps the activation (whatever function a recipe installed there)
the same way, so the convolution and its ReLU are recorded as the two minigbp nodes
(``block5_conv4.conv``, ``block5_conv4.relu``). Values inside a layer that converts to
more nodes (a ``SamePad2d`` before a convolution, the ``Flatten`` after a global pooling)
are not observable; those nodes are left out of the trace. Recording needs eager execution
(a ``tf.function`` runs the layers symbolically: nothing is recorded then).
"""

import contextlib

import numpy as np

from ..io.keras_model import layer_paths
from ..model import INPUT
from .tracing import Record, Trace

__all__ = ["KerasRecorder", "patched_calls"]


@contextlib.contextmanager
def patched_calls(model, wrap):
    """While active, every layer's ``call`` is ``wrap(layer, call)``."""
    saved = []
    try:
        for _, layer in layer_paths(model):
            saved.append((layer, layer.__dict__.get("call")))
            layer.call = wrap(layer, layer.call)
        yield
    finally:
        for layer, own in reversed(saved):
            if own is None:
                del layer.__dict__["call"]
            else:
                layer.call = own


def _nchw(a):
    a = np.asarray(a, dtype=np.float64)
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2)) if a.ndim == 4 else a


class KerasRecorder:
    """Context manager: while active, the layers of ``model`` record every call (see the module
    docstring); ``runs`` holds one recording per forward pass (a pass starts when the layer
    reading the model's input runs), :meth:`trace` turns the last into a :class:`Trace` with
    the node names of ``base``, the model's minigbp conversion."""

    def __init__(self, model, base):
        import tensorflow as tf

        self.tf, self.model, self.runs = tf, model, []
        paths = {p for p, _ in layer_paths(model)}
        self.parts, self.types, self.readers = {}, {}, set()
        for node in base.nodes:
            path = node.name if node.name in paths else node.name.rsplit(".", 1)[0]
            self.parts.setdefault(path, []).append(node.name)
            self.types[node.name] = type(node.layer).__name__
            if INPUT in node.inputs:
                self.readers.add(path)
        self._paths = {id(layer): p for p, layer in layer_paths(model)}
        self._patch = patched_calls(model, self._wrap)

    def __enter__(self):
        self._patch.__enter__()
        return self

    def __exit__(self, *exc):
        return self._patch.__exit__(*exc)

    def _tap(self, value, store, key):
        """``value`` through an identity whose gradient is stored as ``store[key]``."""
        tf = self.tf

        @tf.custom_gradient
        def identity(v):
            def grad(dy):
                store[key] = dy.numpy()
                return dy
            return tf.identity(v), grad

        return identity(value)

    def _wrap(self, layer, call):
        path = self._paths[id(layer)]
        nodes = self.parts.get(path)
        if not nodes:
            return call
        split = len(nodes) >= 2 and nodes[-1].rsplit(".", 1)[-1] in ("relu", "softmax") and hasattr(layer, "activation")

        def recorded(*args, **kwargs):
            if not self.tf.executing_eagerly() or not args:
                return call(*args, **kwargs)
            if path in self.readers or not self.runs:
                self.runs.append([])
            rec = {"path": path, "inputs": [], "leaving": {}}
            first = args[0]
            many = isinstance(first, (list, tuple))
            tapped = [self._tap_input(rec, t) for t in (first if many else [first])]
            args = (type(first)(tapped) if many else tapped[0],) + args[1:]
            if split:
                act = layer.activation

                def watched(z):
                    rec["pre"] = np.asarray(z)
                    return act(self._tap(z, rec, "pre_signal"))

                layer.activation = watched
                try:
                    out = call(*args, **kwargs)
                finally:
                    layer.activation = act
            else:
                out = call(*args, **kwargs)
            rec["output"] = np.asarray(out)
            self.runs[-1].append(rec)
            return self._tap(out, rec, "arriving")

        return recorded

    def _tap_input(self, rec, value):
        k = len(rec["inputs"])
        rec["inputs"].append(np.asarray(value))
        return self._tap(value, rec["leaving"], k)

    def trace(self, mode="keras", target="", x=None, result=None):
        """The last recorded forward pass as a :class:`Trace` (source "keras", NCHW arrays)."""
        notes, records = [], []
        if len(self.runs) > 1:
            notes.append(f"the model ran {len(self.runs)} times; the last run is recorded")
        for rec in (self.runs[-1] if self.runs else []):
            nodes = self.parts[rec["path"]]
            inputs = tuple(_nchw(v) for v in rec["inputs"])
            leaving = tuple(_nchw(rec["leaving"][k]) if k in rec["leaving"] else np.zeros_like(v)
                            for k, v in enumerate(inputs))
            out = _nchw(rec["output"])
            arriving = _nchw(rec["arriving"]) if "arriving" in rec else np.zeros_like(out)
            if "arriving" not in rec:
                notes.append(f"no gradient reached the output of {rec['path']}: recorded as zeros")
            one = len(inputs) == 1
            if len(nodes) == 1:
                records.append(Record(nodes[0], self.types[nodes[0]], out, arriving,
                                      leaving[0] if one else leaving, inputs[0] if one else inputs))
            elif "pre" in rec:
                pre = _nchw(rec["pre"])
                pre_signal = _nchw(rec["pre_signal"]) if "pre_signal" in rec else np.zeros_like(pre)
                if len(nodes) == 2:
                    records.append(Record(nodes[0], self.types[nodes[0]], pre, pre_signal, leaving[0], inputs[0]))
                records.append(Record(nodes[-1], self.types[nodes[-1]], out, arriving, pre_signal, pre))
        return Trace(records, mode, None, target, "keras", x, result, notes)
