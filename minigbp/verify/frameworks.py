"""The two frameworks :func:`minigbp.verify.check` works with, one small class apiece.

:func:`check` and the probe are written once against what these classes provide:

* ``convert(x)``: the user's model as a float64 minigbp model (``x``: example inputs, or None);
* ``sample_shape(base, shape)``: one sample's shape, from the model's own layout (None: the
  model's input shape) to minigbp's (C, H, W); ``own_layout(shape)`` the other way, for a batch;
* ``own_dtype``: "float32" or "float64", what the user's model computes in;
* ``copy(dtype, weights)``: a fresh copy of the user's model for one call of the function
  (in ``dtype``, with other weights if given); the function may change it at will;
* ``call(fn, model, x, targets, dtype, warns)``: run ``fn(model, x, target)`` with ``x``
  (given as minigbp's (N, C, H, W) float64) in the framework's layout and dtype; return
  its map as (N, C, H, W) float64 and the dtype it had;
* ``integer_weights(rng, k)``, ``absolute(weights)``, ``minigbp_with(base, weights)``: the
  sparse small-integer weights of the third input batch, in the framework's layout, and
  the minigbp model that holds them;
* ``recorder(model, base)``: records every node of ``model`` while ``fn`` runs (the probe).

PyTorch models run in their own layout, (N, C, H, W); Keras models in theirs,
(N, H, W, C): the function sees its framework's tensors, minigbp compares in its own.
"""

import copy as _copy
import sys
import warnings

import numpy as np

from ..io.keras_model import all_layers, from_keras, graph_from_config, live_weights, model_config, model_dtype, \
    model_kind
from ..io.pytorch import _torch, from_torch, infer_input_shape
from .keras_recorder import KerasRecorder, patched_calls
from .recorder import TorchRecorder

__all__ = ["framework", "TorchSide", "KerasSide", "NotRun", "describe"]


class NotRun(Exception):
    """``attribute_fn`` did not use the model it was given: it ran none of the copy (torch), or
    ran the user's own model (Keras, where a recipe may legitimately clone its copy)."""


def describe(e):
    """``"TypeError: the first line of the message"`` (cut at 160 characters)."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if len(msg) > 160:
        msg = msg[:160] + " ..."
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def framework(model):
    """The side for ``model``: :class:`TorchSide` for a ``torch.nn.Module``, :class:`KerasSide`
    for a ``keras.Model``; a ValueError for anything else."""
    torch, keras = sys.modules.get("torch"), sys.modules.get("keras")
    if torch is not None and isinstance(model, torch.nn.Module):
        return TorchSide(model)
    if keras is not None and isinstance(model, keras.Model):
        return KerasSide(model)
    raise ValueError(f"verify.check: expected a torch.nn.Module or a keras.Model, got {type(model).__name__}")


def _sparse_rows(rng, n_out, fan_in, k):
    """(n_out, fan_in) float64: each row has at most ``k`` entries of -1 or 1, the rest 0."""
    rows = np.zeros((n_out, fan_in))
    taps = rng.integers(0, fan_in, (n_out, min(k, fan_in)))  # repeats: fewer taps
    rows[np.arange(n_out)[:, None], taps] = rng.choice(np.array([-1.0, 1.0]), taps.shape)
    return rows


def _returned(out, is_tensor, to_numpy):
    """The function's result as a float64 array and the dtype it had."""
    if isinstance(out, (tuple, list)) and len(out) == 1:
        out = out[0]
    if is_tensor(out):
        out = to_numpy(out)
    out = np.asarray(out)
    return np.asarray(out, dtype=np.float64), str(out.dtype)


# ------------------------------------------------------------------------------- torch

class TorchSide:
    """A ``torch.nn.Module`` (see the module docstring); converted by :func:`minigbp.from_torch`."""

    name = "torch"

    def __init__(self, module):
        self.torch, self.module, self.model_name = _torch(), module, type(module).__name__

    def convert(self, x):
        return from_torch(self.module, dtype=np.float64, example_input=x)

    def own_layout(self, shape):
        return tuple(shape)

    def sample_shape(self, base, shape=None):
        return tuple(int(s) for s in shape) if shape is not None else infer_input_shape(base)[1:]

    @property
    def own_dtype(self):
        p = next(self.module.parameters(), None)
        return "float64" if p is not None and p.dtype == self.torch.float64 else "float32"

    def copy(self, dtype, weights=None):
        torch = self.torch
        twin = _copy.deepcopy(self.module).to(getattr(torch, dtype)).eval()
        if weights is not None:
            with torch.no_grad():
                for name, p in list(twin.named_parameters()) + list(twin.named_buffers()):
                    if name in weights:
                        p.copy_(torch.from_numpy(weights[name]))
        return twin

    def call(self, fn, model, x, targets, dtype, warns):
        torch = self.torch
        xt = torch.tensor(x, dtype=getattr(torch, dtype)).requires_grad_(True)
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
            raise NotRun()
        return _returned(out, torch.is_tensor, lambda t: t.detach().cpu().numpy())

    def integer_weights(self, rng, k):
        """Weights in {-1, 0, 1}, at most ``k`` non-zeros per output unit; biases in {-1, 0, 1};
        BatchNorm running mean 0 and variance ``4 - eps`` (``var + eps`` is exactly 4)."""
        torch, weights = self.torch, {}
        for name, m in self.module.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d) and m.running_var is not None:
                weights[f"{name}.running_mean"] = np.zeros(m.num_features, np.float32)
                weights[f"{name}.running_var"] = np.full(m.num_features, 4 - m.eps, np.float64)
        for name, p in self.module.named_parameters():
            if name.endswith("bias") or p.dim() == 1:
                weights[name] = rng.integers(-1, 2, tuple(p.shape)).astype(np.float32)
            else:
                rows = _sparse_rows(rng, p.shape[0], int(np.prod(p.shape[1:])), k)
                weights[name] = rows.reshape(tuple(p.shape)).astype(np.float32)
        return weights

    def absolute(self, weights):
        return {k: np.abs(v) for k, v in weights.items()}

    def minigbp_with(self, base, weights):
        """A copy of the minigbp ``base`` holding ``weights`` (its own arrays are not copied)."""
        twin = _copy.deepcopy(base, memo={id(a): a for a in base.state_dict().values()})
        twin.load_state_dict(weights)
        return twin

    def recorder(self, model, base):
        return TorchRecorder(model)


# ------------------------------------------------------------------------------- Keras

class KerasSide:
    """A ``keras.Model``, Sequential or functional (see the module docstring); converted by
    :func:`minigbp.from_keras`. Copies are rebuilt from the model's config in the dtype asked
    for (every layer's dtype policy set to it) and given the model's weights."""

    name = "keras"

    def __init__(self, model):
        import tensorflow as tf

        self.tf, self.model, self.model_name = tf, model, model.name
        self.config, self.kind = model_config(model), model_kind(model)
        self.weights = live_weights(model)

    def convert(self, x):
        example = None if x is None else x.transpose(0, 2, 3, 1)
        return from_keras(self.copy("float64"), example_input=example)

    def own_layout(self, shape):
        """(N, C, H, W) -> Keras's (N, H, W, C)."""
        n, c, h, w = shape
        return n, h, w, c

    def sample_shape(self, base, shape=None):
        if shape is None:
            shape = tuple(32 if s is None else int(s) for s in self.model.inputs[0].shape[1:])
        h, w, c = (int(s) for s in shape)
        return c, h, w

    @property
    def own_dtype(self):
        return str(model_dtype(self.model))

    def copy(self, dtype, weights=None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            twin = type(self.model).from_config(_retyped(self.config, dtype))
        given = {**self.weights, **(weights or {})}
        for layer in all_layers(twin):
            if given.get(layer.name):
                layer.set_weights([np.asarray(a, dtype=dtype) for a in given[layer.name]])
        return twin

    def call(self, fn, model, x, targets, dtype, warns):
        tf = self.tf
        xt = tf.constant(np.ascontiguousarray(x.transpose(0, 2, 3, 1)).astype(dtype))
        tt = tf.constant(np.asarray(targets), dtype=tf.int32)
        calls = []  # calls of the *user's* model's layers: the function closed over it
        with patched_calls(self.model, lambda layer, call: _counted(call, calls)), \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = fn(model, xt, tt)
        warns.update(f"{w.category.__name__}: {w.message}" for w in caught
                     if "structure of `inputs`" not in str(w.message))
        if calls:
            raise NotRun()
        result, returned = _returned(out, tf.is_tensor, lambda t: t.numpy())
        if result.shape == tuple(xt.shape):  # the map in the model's layout, NHWC -> minigbp's NCHW
            result = np.ascontiguousarray(result.transpose(0, 3, 1, 2))
        return result, returned

    def integer_weights(self, rng, k):
        """As for torch: kernels with at most ``k`` entries of -1 or 1 per output unit (the last
        axis of a Keras kernel), biases, gammas and betas in {-1, 0, 1}, moving mean 0 and
        moving variance ``4 - epsilon``."""
        weights = {}
        for layer in all_layers(self.model):
            arrays = [np.asarray(a) for a in layer.get_weights()]
            if not arrays:
                continue
            if type(layer).__name__ == "BatchNormalization":
                n = arrays[-1].shape
                affine = [rng.integers(-1, 2, n).astype(np.float64) for _ in arrays[:-2]]
                weights[layer.name] = affine + [np.zeros(n), np.full(n, 4 - layer.epsilon)]
                continue
            kernel = arrays[0]
            rows = _sparse_rows(rng, kernel.shape[-1], int(np.prod(kernel.shape[:-1])), k)
            weights[layer.name] = [rows.T.reshape(kernel.shape)] + [
                rng.integers(-1, 2, a.shape).astype(np.float64) for a in arrays[1:]]
        return weights

    def absolute(self, weights):
        return {k: [np.abs(a) for a in v] for k, v in weights.items()}

    def minigbp_with(self, base, weights):
        stored = {k: [np.asarray(a, np.float64) for a in v] for k, v in self.weights.items()}
        return graph_from_config(self.kind, self.config, {**stored, **weights})

    def recorder(self, model, base):
        return KerasRecorder(model, base)


def _retyped(config, dtype):
    """A model config whose every layer (and input) computes in ``dtype``."""
    config = _copy.deepcopy(config)

    def walk(cfg):
        if "dtype" in cfg:
            cfg["dtype"] = dtype
        for layer in cfg.get("layers", []):
            walk(layer["config"])

    walk(config)
    return config


def _counted(call, calls):
    def counted(*args, **kwargs):
        calls.append(1)
        return call(*args, **kwargs)
    return counted
