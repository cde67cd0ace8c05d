"""One function per Keras layer class: a layer's config (and its stored weights) -> the minigbp
layers it becomes, as ``[(part, layer), ...]`` (see the table in :mod:`minigbp.io.keras_model`,
which calls these).

Each converter is ``f(builder, cfg, name, inputs)``: ``cfg`` is the layer's Keras config,
``name`` its node name, ``inputs`` the values it reads; ``builder.take(cfg, name, kind, n)``
returns its ``n`` stored arrays (Keras's order and layouts), and ``builder.flat`` says which
values are a ``Flatten`` of an (H, W, C) map.
"""

import math

import numpy as np

from .. import layers as L
from . import ConversionError

__all__ = ["CONVERTERS"]


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


CONVERTERS = {
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
