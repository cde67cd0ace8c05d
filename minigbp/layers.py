"""Layers: thin classes that hold parameters and hyperparameters, nothing per call.

(This module is longer than most: one short class per ``torch.nn`` layer minigbp has,
each a thin wrapper of its op in :mod:`minigbp.ops`, kept together so the contract below
reads once for all of them. The convolution's backward and max pooling call
:mod:`minigbp.fast`, which computes the reference ops' sums with less data movement and
calls the reference op itself wherever its arrangement does not apply.)

Every layer follows one contract:

* ``out, cache = layer.forward(x)`` -- ``cache`` is what the backward pass needs;
* ``dx = layer.backward(dout, cache, mode="vanilla", conventions=DEFAULT)`` -- the
  signal at the input (only ReLU and max pooling read the conventions, see
  :mod:`minigbp.conventions`);
* ``grads = layer.param_grads(dout, cache)`` -- ``{"weight": dW, "bias": db}``
  (vanilla gradient; empty for layers without parameters);
* ``layer(x)`` is ``layer.forward(x)[0]``.

Layers where branches meet (:class:`Add`, :class:`Cat`) take several inputs,
``forward(*xs)``, and their backward returns a tuple with one signal per input.

Because the cache is returned rather than stored, one layer (or model) can serve
many threads at once. Constructors take torch.nn's argument names and defaults,
and parameters use PyTorch's layouts, so converted weights need no transposes.

Parameters are cast to the input's dtype at each call (float32 or float64), so a
float64 input with float64 weights runs entirely in float64.
"""

import numpy as np

from . import fast, ops
from .conventions import DEFAULT
from .shapes import pair, pool_args, same_padding

__all__ = [
    "Layer",
    "Conv2d",
    "ReLU",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "GlobalMaxPool2d",
    "ZeroPad2d",
    "SamePad2d",
    "Linear",
    "Flatten",
    "Dropout",
    "Softmax",
    "BatchNorm2d",
    "Add",
    "Cat",
    "Identity",
    "manual_seed",
]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

_rng = np.random.default_rng()


def manual_seed(seed):
    """Seed the generator that initializes new layers' parameters (like ``torch.manual_seed``)."""
    global _rng
    _rng = np.random.default_rng(seed)


def check_input(x, owner, ndim=None):
    """Raise unless ``x`` is a float32/float64 ndarray (of rank ``ndim``, if given)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{owner}: expected a numpy array, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{owner}: expected a float32 or float64 input, got dtype {x.dtype} (shape {x.shape})")
    if ndim is not None and x.ndim != ndim:
        want = {4: "(N, C, H, W)", 2: "(N, features)"}.get(ndim, f"{ndim}-D")
        raise ValueError(f"{owner}: expected a {ndim}-D input {want}, got shape {x.shape}")


def init_uniform(shape, weight_shape, rng=None):
    """PyTorch's default init for a conv/linear weight or bias: U(-b, b), ``b = 1/sqrt(fan_in)``.

    ``fan_in`` is the weight's size per output, ``prod(weight_shape[1:])``. Drawn in float32
    (VGG16 has 138M parameters) from ``rng``, or from the generator :func:`manual_seed` sets.
    """
    fan_in = int(np.prod(weight_shape[1:]))
    bound = np.float32(1.0 / np.sqrt(fan_in) if fan_in > 0 else 0.0)
    return ((_rng if rng is None else rng).random(shape, dtype=np.float32) * 2 - 1) * bound


def _uniform(shape, fan_in):
    """:func:`init_uniform` for a known ``fan_in``."""
    return init_uniform(shape, (1, fan_in))


def _positive_int(v, name, owner):
    """``TypeError`` unless ``v`` is an int, ``ValueError`` unless it is >= 1 (as torch)."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{owner}: {name} must be an int, got {v!r}")
    if v < 1:
        raise ValueError(f"{owner}: {name} must be >= 1, got {v!r}")


class Layer:
    """Base class. ``param_names`` lists the parameter attributes (``weight``, ``bias``);
    ``args`` the constructor arguments kept as attributes of the same name (:meth:`config`
    and the repr read them); ``n_inputs`` is how many inputs ``forward`` takes (None: any
    number from 1); ``ignored_keys`` are state-dict entries accepted on load and not kept
    (PyTorch's ``num_batches_tracked``)."""

    param_names = ()
    args = ()
    n_inputs = 1
    ignored_keys = ()

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dout, cache, mode="vanilla", conventions=DEFAULT):
        raise NotImplementedError

    def param_grads(self, dout, cache):
        return {}

    def config(self):
        """Constructor arguments as a JSON-ready dict: ``type(self)(**layer.config())`` rebuilds it."""
        return {a: list(v) if isinstance(v, tuple) else v for a, v in ((a, getattr(self, a)) for a in self.args)}

    def __call__(self, *xs):
        return self.forward(*xs)[0]

    def reset_parameters(self, rng=None):
        """Draw fresh parameters as PyTorch initializes them (nothing for parameter-free layers)."""

    def named_parameters(self):
        """``(name, array)`` pairs of this layer's parameters (a missing bias is skipped)."""
        return [(n, getattr(self, n)) for n in self.param_names if getattr(self, n) is not None]

    def _extra_repr(self):
        return ", ".join(f"{a}={getattr(self, a)!r}" for a in self.args)

    def __repr__(self):
        return f"{type(self).__name__}({self._extra_repr()})"

    def _cast(self, name, x):
        p = getattr(self, name)
        return None if p is None else p.astype(x.dtype, copy=False)


class Conv2d(Layer):
    """2-D convolution, ``torch.nn.Conv2d``'s arguments and weight layout (OIHW).

    ``out[n, f] = b[f] + sum_c w[f, c] (*) x[n, c]`` (cross-correlation); see
    :mod:`minigbp.ops.conv` for the full equation and shapes. ``padding`` may
    also be ``"valid"`` (0) or ``"same"`` (stride 1, and only when the padding
    ``dilation * (kernel_size - 1) / 2`` is a whole number: minigbp pads symmetrically).
    """

    param_names = ("weight", "bias")

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True):
        owner = "Conv2d"
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            _positive_int(v, name, owner)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{owner}: in_channels={in_channels} and out_channels={out_channels} must both be "
                f"divisible by groups={groups}"
            )
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), int(groups)
        self.kernel_size = pair(kernel_size, "kernel_size", owner, minimum=1)
        self.stride = pair(stride, "stride", owner, minimum=1)
        self.dilation = pair(dilation, "dilation", owner, minimum=1)
        if padding == "valid":
            padding = 0
        elif padding == "same":
            if self.stride != (1, 1):
                raise ValueError(f"{owner}: padding='same' needs stride 1, got stride={self.stride}")
            total = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            if any(t % 2 for t in total):
                raise ValueError(
                    f"{owner}: padding='same' with kernel_size={self.kernel_size}, dilation={self.dilation} "
                    f"needs asymmetric padding, which minigbp does not support; pass explicit padding"
                )
            padding = (total[0] // 2, total[1] // 2)
        self.padding = pair(padding, "padding", owner, minimum=0)
        fan_in = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        self.weight = _uniform((self.out_channels, self.in_channels // self.groups) + self.kernel_size, fan_in)
        self.bias = _uniform((self.out_channels,), fan_in) if bias else None

    def reset_parameters(self, rng=None):
        """PyTorch's default: weight and bias ``U(-b, b)``, ``b = 1/sqrt(fan_in)`` (:func:`init_uniform`)."""
        self.weight = init_uniform(self.weight.shape, self.weight.shape, rng).astype(self.weight.dtype)
        if self.bias is not None:
            self.bias = init_uniform(self.bias.shape, self.weight.shape, rng).astype(self.bias.dtype)

    def config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "dilation": list(self.dilation),
                "groups": self.groups, "bias": self.bias is not None}

    def _extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s

    def forward(self, x):
        check_input(x, repr(self), ndim=4)
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self!r}: expected input with {self.in_channels} channels (N, {self.in_channels}, H, W), "
                f"got shape {x.shape}"
            )
        return fast.conv2d_forward(x, self._cast("weight", x), self._cast("bias", x),
                                   self.stride, self.padding, self.dilation, self.groups)

    def backward(self, dout, cache, mode="vanilla", conventions=DEFAULT):
        return fast.conv2d_backward_data(dout, cache)

    def param_grads(self, dout, cache):
        dw, db = ops.conv2d_backward_weights(dout, cache)
        return {"weight": dw} if db is None else {"weight": dw, "bias": db}


class Linear(Layer):
    """Fully connected layer, ``torch.nn.Linear``'s arguments, weights (out, in).

    ``out = x @ weight.T + bias``; see :mod:`minigbp.ops.linear`.
    """

    param_names = ("weight", "bias")

    def __init__(self, in_features, out_features, bias=True):
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            _positive_int(v, name, "Linear")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = _uniform((self.out_features, self.in_features), self.in_features)
        self.bias = _uniform((self.out_features,), self.in_features) if bias else None

    reset_parameters = Conv2d.reset_parameters

    def config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None}

    def _extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}"
                + (", bias=False" if self.bias is None else ""))

    def forward(self, x):
        check_input(x, repr(self))
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"{self!r}: expected input of shape (N, {self.in_features}), got shape {x.shape}")
        return ops.linear_forward(x, self._cast("weight", x), self._cast("bias", x))

    def backward(self, dout, cache, mode="vanilla", conventions=DEFAULT):
        return ops.linear_backward_data(dout, cache)

    def param_grads(self, dout, cache):
        _, dw, db = ops.linear_backward(dout, cache)
        return {"weight": dw} if db is None else {"weight": dw, "bias": db}


class ReLU(Layer):
    """``max(x, 0)``; the only layer whose backward depends on the mode (see :mod:`minigbp.ops.relu`).

    ``inplace`` is accepted for compatibility with ``torch.nn.ReLU`` and ignored:
    minigbp never writes into its inputs. ``functional`` records that the ReLU was a
    function call in the source model (``F.relu``, ``torch.relu``, ``x.relu()``) rather
    than an ``nn.ReLU`` module: it follows the mode like every ReLU, unless the
    ``functional_relu`` convention says otherwise (libraries that hook ``nn.ReLU``
    modules leave such ReLUs plain autograd; see :mod:`minigbp.conventions`).
    """

    def __init__(self, inplace=False, functional=False):
        self.inplace = inplace
        self.functional = bool(functional)

    def config(self):
        return {"inplace": bool(self.inplace), "functional": self.functional}

    def _extra_repr(self):
        return ", ".join(s for s, on in (("inplace=True", self.inplace), ("functional=True", self.functional)) if on)

    def forward(self, x):
        check_input(x, repr(self))
        return ops.relu_forward(x)

    def backward(self, dout, cache, mode="vanilla", conventions=DEFAULT):
        return ops.relu_backward(dout, cache, mode, conventions.relu_at_zero)


class MaxPool2d(Layer):
    """Max pooling with PyTorch CPU semantics (see :mod:`minigbp.ops.pool`).

    Arguments as ``torch.nn.MaxPool2d``; ``ceil_mode`` is keyword-only because torch's
    fifth positional argument is ``return_indices``, which minigbp does not have
    (the switches live in the cache instead).
    """

    args = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, *, ceil_mode=False):
        window = pool_args("MaxPool2d", kernel_size, stride, padding, dilation)
        self.kernel_size, self.stride, self.padding, self.dilation = window
        self.ceil_mode = bool(ceil_mode)

    def forward(self, x):
        check_input(x, repr(self), ndim=4)
        window = self.kernel_size, self.stride, self.padding, self.dilation
        return fast.maxpool2d_forward(x, *window, self.ceil_mode)

    def backward(self, dout, cache, mode="vanilla", conventions=DEFAULT):
        return fast.maxpool2d_backward(dout, cache, conventions.pool_ties)


class AvgPool2d(Layer):
    """Average pooling, ``torch.nn.AvgPool2d``'s arguments (no ``divisor_override``).

    ``out[n, c, i, j] = (sum of window (i, j)'s taps inside the input) / divisor(i, j)``,
    (N, C, H, W) -> (N, C, Ho, Wo); the divisor counts the padding or not
    (``count_include_pad``), see :mod:`minigbp.ops.pool`.
    """

    args = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        self.kernel_size, self.stride, self.padding, _ = pool_args("AvgPool2d", kernel_size, stride, padding)
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x):
        check_input(x, repr(self), ndim=4)
        return ops.avgpool2d_forward(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                     self.count_include_pad)

    def backward(self, dout, cache, mode="vanilla", conventions=DEFAULT):
        return ops.avgpool2d_backward(dout, cache)


class AdaptiveAvgPool2d(Layer):
    """Adaptive average pooling to ``output_size`` (int, pair, or pair with ``None`` = keep).

    ``out[n, c, i, j]`` is the mean of ``x[n, c, rows_i, cols_j]`` with the bins
    ``[floor(i H / Ho), ceil((i + 1) H / Ho))`` of :func:`minigbp.shapes.adaptive_bins`;
    (N, C, H, W) -> (N, C, Ho, Wo).
    """

    args = ("output_size",)

    def __init__(self, output_size):
        if isinstance(output_size, (tuple, list)):
            if len(output_size) != 2 or not all(o is None or (isinstance(o, (int, np.integer))
                                                               and not isinstance(o, bool) and o >= 1)
                                                for o in output_size):
                raise ValueError(f"AdaptiveAvgPool2d: output_size must be positive ints or None, got {output_size!r}")
            self.output_size = tuple(output_size)
        else:
            self.output_size = pair(output_size, "output_size", "AdaptiveAvgPool2d", minimum=1)

    def forward(self, x):
        check_input(x, repr(self), ndim=4)
        return ops.adaptive_avgpool2d_forward(x, self.output_size)

    def backward(self, dout, cache, mode="vanilla", conventions=DEFAULT):
        return ops.adaptive_avgpool2d_backward(dout, cache)


class GlobalMaxPool2d(Layer):
    """The maximum of each channel as a reduction: (N, C, H, W) -> (N, C, 1, 1).

    Keras's ``GlobalMaxPooling2D`` (TensorFlow's ``reduce_max``, PyTorch's ``amax``): tied
    maxima share the signal equally (see :mod:`minigbp.ops.reduce`), in every mode.
    """

    def forward(self, x):
        check_input(x, repr(self), ndim=4)
        return ops.global_max_forward(x)

    def backward(self, dout, cache, mode="vanilla", conventions=DEFAULT):
        return ops.global_max_backward(dout, cache)


class ZeroPad2d(Layer):
    """A frame of zeros, ``torch.nn.ZeroPad2d``: ``padding`` is an int, or
    ``(left, right, top, bottom)`` in PyTorch's order; see :mod:`minigbp.ops.pad`.
    (N, C, H, W) -> (N, C, top + H + bottom, left + W + right)."""

    args = ("padding",)

    def __init__(self, padding):
        p = (padding,) * 4 if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool) \
            else tuple(padding) if isinstance(padding, (tuple, list)) else None
        if p is None or len(p) != 4 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                                 and v >= 0 for v in p):
            raise ValueError(f"ZeroPad2d: padding must be an int >= 0 or four of them (left, right, top, "
                             f"bottom), got {padding!r}")
        self.padding = tuple(int(v) for v in p)

    def forward(self, x):
        check_input(x, repr(self), ndim=4)
        left, right, top, bottom = self.padding
        return ops.pad2d_forward(x, (top, bottom, left, right))

    def backward(self, dout, cache, mode="vanilla", conventions=DEFAULT):
        return ops.pad2d_backward(dout, cache)


class SamePad2d(Layer):
    """TensorFlow's ``padding="same"`` for the convolution or pooling that follows it.

    Pads each spatial axis by :func:`minigbp.shapes.same_padding` of the input's size
    for this ``kernel_size``, ``stride`` and ``dilation`` (computed at every call, so the
    layer works at any input size), with ``value`` (0 before a convolution, ``-inf``
    before a max pooling); the layer after it then uses ``padding=0``. Keras models
    convert to it where the padding is not symmetric (:func:`minigbp.from_keras`).
    """

    args = ("kernel_size", "stride", "dilation", "value")

    def __init__(self, kernel_size, stride=1, dilation=1, value=0.0):
        self.kernel_size = pair(kernel_size, "kernel_size", "SamePad2d", minimum=1)
        self.stride = pair(stride, "stride", "SamePad2d", minimum=1)
        self.dilation = pair(dilation, "dilation", "SamePad2d", minimum=1)
        self.value = float(value)

    def forward(self, x):
        check_input(x, repr(self), ndim=4)
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        pads = same_padding(x.shape[2], kh, sh, dh) + same_padding(x.shape[3], kw, sw, dw)
        return ops.pad2d_forward(x, pads, self.value)

    def backward(self, dout, cache, mode="vanilla", conventions=DEFAULT):
        return ops.pad2d_backward(dout, cache)


class Flatten(Layer):
    """Flatten axes ``start_dim..end_dim`` into one (default: everything but the batch axis).

    (N, C, H, W) -> (N, C*H*W) in C order, as ``torch.flatten``; the backward reshapes back.
    """

    args = ("start_dim", "end_dim")

    def __init__(self, start_dim=1, end_dim=-1):
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def forward(self, x):
        check_input(x, repr(self))
        start = self.start_dim % x.ndim if -x.ndim <= self.start_dim < x.ndim else None
        end = self.end_dim % x.ndim if -x.ndim <= self.end_dim < x.ndim else None
        if start is None or end is None or start > end:
            raise ValueError(f"{self!r}: cannot flatten an input of shape {x.shape}")
        shape = x.shape[:start] + (-1,) + x.shape[end + 1:]
        return x.reshape(shape), x.shape

    def backward(self, dout, cache, mode="vanilla", conventions=DEFAULT):
        return dout.reshape(cache)


class Softmax(Layer):
    """``softmax(x)`` along ``dim`` (default 1, the class axis), as ``torch.nn.Softmax``.

    Forward: ``s_i = exp(x_i - max_j x_j) / sum_k exp(x_k - max_j x_j)`` (shifting by the
    maximum changes nothing mathematically and avoids overflow).

    Backward through the Jacobian ``ds_i/dx_j = s_i ([i == j] - s_j)``, the same in every
    mode (there is no ReLU in it)::

        dx_j = sum_i dout_i s_i ([i == j] - s_j) = s_j (dout_j - sum_i dout_i s_i)

    Models that end in a softmax (Keras applications with ``include_top=True``) are
    explained through it, as their users' code does.
    """

    args = ("dim",)

    def __init__(self, dim=1):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"Softmax: dim must be an int, got {dim!r}")
        self.dim = int(dim)

    def forward(self, x):
        check_input(x, repr(self))
        if not -x.ndim <= self.dim < x.ndim:
            raise ValueError(f"{self!r}: dim {self.dim} out of range for an input of shape {x.shape}")
        e = np.exp(x - x.max(axis=self.dim, keepdims=True))
        s = e / e.sum(axis=self.dim, keepdims=True)
        return s, s

    def backward(self, dout, cache, mode="vanilla", conventions=DEFAULT):
        s = cache
        return s * (dout - (dout * s).sum(axis=self.dim, keepdims=True))


class Dropout(Layer):
    """Identity: minigbp is inference-only for explanations (``torch.nn.Dropout`` in eval mode)."""

    args = ("p",)

    def __init__(self, p=0.5, inplace=False):
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)):
            raise TypeError(f"Dropout: p must be a number, got {p!r}")
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p!r}")
        self.p, self.inplace = p, inplace

    def forward(self, x):
        check_input(x, repr(self))
        return x, None

    def backward(self, dout, cache, mode="vanilla", conventions=DEFAULT):
        return dout


class BatchNorm2d(Layer):
    """Batch normalization with running statistics, ``torch.nn.BatchNorm2d`` in eval mode.

    ``out = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` per channel,
    (N, C, H, W) -> (N, C, H, W); see :mod:`minigbp.ops.batchnorm`. The parameter and
    buffer names are PyTorch's (``weight``, ``bias``, ``running_mean``, ``running_var``), so
    torchvision checkpoints load as they are; their ``num_batches_tracked`` entry is
    accepted and ignored (it only matters for training). ``momentum`` is kept for
    compatibility and unused: minigbp never updates the statistics.
    """

    param_names = ("weight", "bias", "running_mean", "running_var")
    ignored_keys = ("num_batches_tracked",)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        _positive_int(num_features, "num_features", "BatchNorm2d")
        if not track_running_stats:
            raise ValueError("BatchNorm2d: track_running_stats=False normalizes with each batch's own "
                             "statistics even at inference; minigbp supports running statistics only")
        if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)) or not eps > 0:
            raise ValueError(f"BatchNorm2d: eps must be a positive number, got {eps!r}")
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), momentum
        self.weight = np.ones(self.num_features, np.float32) if affine else None
        self.bias = np.zeros(self.num_features, np.float32) if affine else None
        self.reset_parameters()

    def reset_parameters(self, rng=None):
        """PyTorch's initial state: running mean 0, variance 1, weight 1, bias 0 (an identity)."""
        dtype = (self.weight if self.weight is not None else np.zeros(0, np.float32)).dtype
        self.running_mean = np.zeros(self.num_features, dtype)
        self.running_var = np.ones(self.num_features, dtype)
        if self.weight is not None:
            self.weight, self.bias = np.ones_like(self.weight), np.zeros_like(self.bias)

    def config(self):
        return {"num_features": self.num_features, "eps": self.eps, "affine": self.weight is not None}

    def _extra_repr(self):
        return f"{self.num_features}, eps={self.eps:g}" + ("" if self.weight is not None else ", affine=False")

    def forward(self, x):
        check_input(x, repr(self), ndim=4)
        if x.shape[1] != self.num_features:
            raise ValueError(f"{self!r}: expected input with {self.num_features} channels, got shape {x.shape}")
        return ops.batchnorm2d_forward(x, self._cast("running_mean", x), self._cast("running_var", x),
                                       self._cast("weight", x), self._cast("bias", x), self.eps)

    def backward(self, dout, cache, mode="vanilla", conventions=DEFAULT):
        return ops.batchnorm2d_backward_data(dout, cache)

    def param_grads(self, dout, cache):
        _, dw, db = ops.batchnorm2d_backward(dout, cache)
        return {} if dw is None else {"weight": dw, "bias": db}


class Add(Layer):
    """The sum of its inputs, all of one shape: a residual connection ``x + F(x)``.

    ``forward(*xs)``; the backward sends the whole signal to every input (see
    :mod:`minigbp.ops.merge`). PyTorch's ``+``, ``+=`` and ``torch.add`` convert to it.
    """

    n_inputs = None

    def forward(self, *xs):
        for x in xs:
            check_input(x, repr(self))
        return ops.add_forward(*xs)

    def backward(self, dout, cache, mode="vanilla", conventions=DEFAULT):
        return ops.add_backward(dout, cache)


class Cat(Layer):
    """Concatenation of its inputs along ``dim`` (default 1, the channels), as ``torch.cat``.

    ``forward(*xs)``; the backward gives each input its slice of the signal (see
    :mod:`minigbp.ops.merge`).
    """

    args = ("dim",)

    n_inputs = None

    def __init__(self, dim=1):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"Cat: dim must be an int, got {dim!r}")
        self.dim = int(dim)

    def forward(self, *xs):
        for x in xs:
            check_input(x, repr(self))
        return ops.cat_forward(*xs, dim=self.dim)

    def backward(self, dout, cache, mode="vanilla", conventions=DEFAULT):
        return ops.cat_backward(dout, cache)


class Identity(Layer):
    """``out = x`` (``torch.nn.Identity``): a placeholder that keeps a module's name."""

    def forward(self, x):
        check_input(x, repr(self))
        return x, None

    def backward(self, dout, cache, mode="vanilla", conventions=DEFAULT):
        return dout
