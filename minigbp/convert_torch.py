"""``from_torch``: a PyTorch module as a minigbp model with the same weights and names.

Supported modules and how they convert:

* leaves: ``nn.Conv2d`` (zeros padding), ``nn.Linear``, ``nn.ReLU``, ``nn.MaxPool2d``
  (no ``return_indices``), ``nn.AvgPool2d`` (no ``divisor_override``),
  ``nn.AdaptiveAvgPool2d``, ``nn.Flatten``, ``nn.Dropout`` (identity), ``nn.Softmax``;
* ``nn.Sequential`` (nested too) becomes a ``Sequential`` with the same child names;
* any other module with children is read as "its children applied in order". A
  ``Flatten`` child is inserted where the forward must flatten: between ``avgpool``
  and ``classifier`` in torchvision's VGG/AlexNet layout (children ``features``,
  ``avgpool``, ``classifier``, as in :mod:`minigbp.zoo`), and otherwise before the
  first child holding a ``Linear`` when spatial layers come before it. Such a
  module's forward is then checked: both run on a random input, and a difference
  raises ``ConversionError`` ("forward is not the sequential application of its
  children"), naming the module.

Dotted names, and so ``state_dict()`` keys, are PyTorch's (an inserted ``Flatten``
has no parameters). torch is imported only when :func:`from_torch` is called: it
is a test dependency of minigbp, never a runtime one.
"""

import copy

import numpy as np

from . import layers as L
from .model import Sequential
from .shapes import conv_output_size, pool_output_size

__all__ = ["from_torch", "ConversionError", "infer_input_shape", "SUPPORTED"]

#: torch.nn class names that convert to a minigbp layer
SUPPORTED = ("Conv2d", "Linear", "ReLU", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Flatten",
             "Dropout", "Softmax", "Sequential")

#: torchvision's VGG / AlexNet children, in order; forward flattens between the last two
TORCHVISION_LAYOUT = ("features", "avgpool", "classifier")

_SPATIAL = (L.Conv2d, L.MaxPool2d, L.AvgPool2d, L.AdaptiveAvgPool2d)


class ConversionError(ValueError):
    """A module that minigbp cannot represent (the message names it: dotted name and class)."""


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a test dependency
        raise ImportError("minigbp.from_torch needs PyTorch (pip install torch); minigbp itself does not") from e
    return torch


def from_torch(module, dtype=None, example_input=None):
    """A minigbp model equivalent to the torch ``module``, same weights and dotted names.

    Parameters
    ----------
    module : torch.nn.Module
        Built from the supported layers (module docstring). Its training mode is
        irrelevant: minigbp is inference-only (Dropout is the identity).
    dtype : None, numpy.float32 or numpy.float64
        None keeps each parameter's dtype (float16 and bfloat16 become float32);
        otherwise every parameter is cast to it.
    example_input : array or tensor (N, ...), optional
        Input used to check the forward of modules that are not ``nn.Sequential``
        (random data of this shape). Without it the shape is inferred from the
        first layer (:func:`infer_input_shape`).

    Returns
    -------
    Sequential (a single supported layer becomes a one-layer ``Sequential``).

    Raises
    ------
    ConversionError
        Listing every unsupported module (dotted name and class), or naming a module
        whose forward is not the sequential application of its children.

    Examples
    --------
    >>> import torch, minigbp as mg                                  # doctest: +SKIP
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())  # doctest: +SKIP
    >>> mg.from_torch(net).state_dict().keys()                      # doctest: +SKIP
    dict_keys(['0.weight', '0.bias'])
    """
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"from_torch: expected a torch.nn.Module, got {type(module).__name__}")
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype not in L.FLOAT_DTYPES:
            raise TypeError(f"from_torch: dtype must be float32 or float64, got {dtype}")
    problems, customs = [], []
    state = L._rng.bit_generator.state  # building layers draws initial weights: leave the user's seed alone
    try:
        model = _convert(torch, module, "", dtype, problems, customs)
    finally:
        L._rng.bit_generator.state = state
    if problems:
        raise ConversionError(
            f"from_torch: {len(problems)} unsupported module(s):\n  " + "\n  ".join(problems)
            + f"\nsupported: {', '.join('nn.' + s for s in SUPPORTED)}, and modules whose children "
              "are these layers applied in order")
    if not isinstance(model, Sequential):
        model = Sequential(model)
    if customs:
        _check_customs(torch, module, model, customs, example_input)
    return model


# ----------------------------------------------------------------------------- conversion

def _label(name, module):
    return f"'{name or '<root>'}' ({type(module).__module__}.{type(module).__name__})"


def _array(t, dtype, name):
    arr = t.detach().cpu()
    if not arr.is_floating_point():
        raise ConversionError(f"from_torch: parameter '{name}' has dtype {arr.dtype}, not floating point")
    if arr.dtype not in (_torch().float32, _torch().float64):
        arr = arr.float()
    arr = arr.numpy()
    return np.array(arr, dtype=dtype if dtype is not None else arr.dtype)


def _params(layer, tmod, name, dtype):
    layer.weight = _array(tmod.weight, dtype, f"{name}.weight")
    layer.bias = None if tmod.bias is None else _array(tmod.bias, dtype, f"{name}.bias")
    return layer


def _leaf(torch, m, name, dtype):
    """The minigbp layer for a supported torch leaf, or None if the class is not supported."""
    nn = torch.nn
    where = _label(name, m)
    if type(m) is nn.Conv2d:
        if m.padding_mode != "zeros":
            raise ConversionError(f"from_torch: {where}: padding_mode={m.padding_mode!r}; minigbp pads with zeros only")
        padding = m.padding if isinstance(m.padding, str) else tuple(m.padding)
        layer = L.Conv2d(m.in_channels, m.out_channels, tuple(m.kernel_size), stride=tuple(m.stride),
                         padding=padding, dilation=tuple(m.dilation), groups=m.groups, bias=m.bias is not None)
        return _params(layer, m, name, dtype)
    if type(m) is nn.Linear:
        return _params(L.Linear(m.in_features, m.out_features, bias=m.bias is not None), m, name, dtype)
    if type(m) is nn.ReLU:
        return L.ReLU(inplace=m.inplace)
    if type(m) is nn.MaxPool2d:
        if m.return_indices:
            raise ConversionError(f"from_torch: {where}: return_indices=True is not supported")
        return L.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation, ceil_mode=m.ceil_mode)
    if type(m) is nn.AvgPool2d:
        if m.divisor_override is not None:
            raise ConversionError(f"from_torch: {where}: divisor_override is not supported")
        return L.AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad)
    if type(m) is nn.AdaptiveAvgPool2d:
        return L.AdaptiveAvgPool2d(m.output_size)
    if type(m) is nn.Flatten:
        return L.Flatten(m.start_dim, m.end_dim)
    if type(m) is nn.Dropout:
        return L.Dropout(m.p)
    if type(m) is nn.Softmax:
        if m.dim is None:
            raise ConversionError(f"from_torch: {where}: Softmax(dim=None) is ambiguous; give dim")
        return L.Softmax(m.dim)
    return None


def _convert(torch, m, name, dtype, problems, customs):
    prefix = name + "." if name else ""
    try:
        layer = _leaf(torch, m, name, dtype)
    except ConversionError:
        raise
    except (TypeError, ValueError) as e:
        raise ConversionError(f"from_torch: {_label(name, m)}: {e}") from e
    if layer is not None:
        return layer
    children = [(n, c) for n, c in m._modules.items() if c is not None]
    if not children:
        problems.append(_label(name, m))
        return None
    converted = {n: _convert(torch, c, prefix + n, dtype, problems, customs) for n, c in children}
    if problems:
        return None
    plain = isinstance(m, torch.nn.Sequential) and type(m).forward is torch.nn.Sequential.forward
    if not plain:
        converted = _with_flatten(converted)
        customs.append(name)
    return Sequential(**converted)


def _with_flatten(children):
    """Insert a ``Flatten`` where a custom forward must flatten (module docstring)."""
    names = list(children)
    if tuple(names) == TORCHVISION_LAYOUT:
        at = 2
    else:
        at, seen_spatial = None, False
        for i, child in enumerate(children.values()):
            leaves = child.named_leaves() if isinstance(child, Sequential) else [("", child)]
            kinds = [type(layer) for _, layer in leaves]
            first_linear = next((j for j, k in enumerate(kinds) if k is L.Linear), None)
            before = kinds if first_linear is None else kinds[:first_linear]
            if L.Flatten in before:
                break  # the model flattens by itself
            if first_linear is not None:
                if seen_spatial and not any(issubclass(k, _SPATIAL) for k in before):
                    at = i
                break
            seen_spatial = seen_spatial or any(issubclass(k, _SPATIAL) for k in kinds)
    if at is None:
        return children
    flat = "flatten"
    while flat in children:
        flat += "_"
    items = list(children.items())
    return dict(items[:at] + [(flat, L.Flatten())] + items[at:])


# ---------------------------------------------------------------- checking custom forwards

def infer_input_shape(model, batch=2):
    """A valid input shape ``(batch, ...)`` for ``model`` (a minigbp Sequential).

    From the first layer: a ``Linear`` gives ``(batch, in_features)``; a ``Conv2d``
    gives ``(batch, in_channels, S, S)`` with the smallest square size ``S >= 16``
    (else the smallest at all) that the whole model runs on. Raises ``ValueError``
    when no size works (then pass an input shape explicitly).
    """
    leaves = model.named_leaves()
    first = next((layer for _, layer in leaves if isinstance(layer, (L.Conv2d, L.Linear))), None)
    if isinstance(first, L.Linear) and not any(isinstance(layer, _SPATIAL) for _, layer in leaves):
        return (batch, first.in_features)
    if not isinstance(first, L.Conv2d):
        raise ValueError("cannot infer the input shape of a model that starts with neither Conv2d nor Linear; "
                         "pass it explicitly")
    sizes = list(range(16, 65)) + [96, 112, 128, 224, 227, 256, 299] + list(range(1, 16))
    for s in sizes:
        shape = (batch, first.in_channels, s, s)
        if _output_shape(model, shape) is None:  # cheap: the shape formulas only
            continue
        try:
            model.forward(np.zeros((1,) + shape[1:], dtype=np.float32))
        except (ValueError, TypeError):
            continue
        return shape
    raise ValueError(f"cannot infer the input shape: the model runs on no square input with {first.in_channels} "
                     "channels up to 299x299; pass it explicitly")


def _output_shape(model, shape):
    """The output shape for an input of ``shape`` from the shape formulas alone, or None if it
    cannot run (an unknown layer type gives ``shape`` unchanged: the real forward decides)."""
    for _, layer in model.named_leaves():
        if isinstance(layer, (L.Conv2d, L.MaxPool2d, L.AvgPool2d, L.AdaptiveAvgPool2d)) and len(shape) != 4:
            return None
        if isinstance(layer, L.Conv2d):
            if shape[1] != layer.in_channels:
                return None
            hw = [conv_output_size(n, k, s, p, d) for n, k, s, p, d in
                  zip(shape[2:], layer.kernel_size, layer.stride, layer.padding, layer.dilation)]
            shape = (shape[0], layer.out_channels, *hw)
        elif isinstance(layer, (L.MaxPool2d, L.AvgPool2d)):
            dilation = getattr(layer, "dilation", (1, 1))
            hw = [pool_output_size(n, k, s, p, d, layer.ceil_mode) for n, k, s, p, d in
                  zip(shape[2:], layer.kernel_size, layer.stride, layer.padding, dilation)]
            shape = shape[:2] + tuple(hw)
        elif isinstance(layer, L.AdaptiveAvgPool2d):
            shape = shape[:2] + tuple(n if o is None else o for n, o in zip(shape[2:], layer.output_size))
        elif isinstance(layer, L.Flatten):
            start, end = layer.start_dim % len(shape), layer.end_dim % len(shape)
            shape = shape[:start] + (int(np.prod(shape[start:end + 1])),) + shape[end + 1:]
        elif isinstance(layer, L.Linear):
            if len(shape) != 2 or shape[1] != layer.in_features:
                return None
            shape = (shape[0], layer.out_features)
        if min(shape) < 1:
            return None
    return shape


def _check_customs(torch, module, model, customs, example_input):
    """Run ``module`` and ``model`` on one random input; compare every custom module's output."""
    if example_input is not None:
        shape = tuple(example_input.shape)
    else:
        shape = infer_input_shape(model)
    x = np.random.default_rng(0).standard_normal(shape)
    try:
        twin = copy.deepcopy(module).double()
        tol = 1e-9
    except Exception:  # a module that cannot be copied: use it as it is, in its dtype
        twin, tol = module, 1e-4
    named = dict(twin.named_modules(remove_duplicate=False))
    seen, handles = {}, []

    def recorder(name):
        def hook(mod, args, out):
            seen.setdefault(name, (args, out))
        return hook

    for name in customs:
        handles.append(named[name].register_forward_hook(recorder(name)))
    was_training = {m: m.training for m in twin.modules()}  # per submodule: eval() flips them all
    twin.eval()
    try:
        param = next(twin.parameters(), None)
        tdtype = param.dtype if param is not None else torch.float64
        with torch.no_grad():
            twin(torch.from_numpy(x).to(tdtype))
    except Exception as e:
        raise ConversionError(
            f"from_torch: could not run {_label('', module)} on a random input of shape {shape} to check "
            f"its forward ({type(e).__name__}: {e}); pass example_input=") from e
    finally:
        for h in handles:
            h.remove()
        for m, flag in was_training.items():
            m.training = flag
    for name in customs:
        where = _label(name, named[name])
        msg = f"from_torch: {where}: forward is not the sequential application of its children"
        if name not in seen:
            raise ConversionError(f"{msg} (it was not called when the model ran)")
        args, out = seen[name]
        if len(args) != 1 or not torch.is_tensor(args[0]) or not torch.is_tensor(out):
            raise ConversionError(f"{msg} (it takes or returns something other than one tensor)")
        xin = args[0].detach().cpu().double().numpy()
        want = out.detach().cpu().double().numpy()
        sub = model[name] if name else model
        try:
            got = sub(xin)
        except (ValueError, TypeError) as e:
            raise ConversionError(f"{msg}: applying them in order fails: {e}") from e
        if got.shape != want.shape:
            raise ConversionError(f"{msg}: applying them in order gives shape {got.shape}, the module {want.shape}")
        err = float(np.max(np.abs(got - want))) if got.size else 0.0
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        if not err <= tol * max(1.0, scale):
            raise ConversionError(
                f"{msg}: on a random input of shape {tuple(xin.shape)} the outputs differ by up to {err:.3g} "
                f"(outputs up to {scale:.3g}); functional calls (F.relu), skips or reshapes in forward "
                "cannot be converted")
