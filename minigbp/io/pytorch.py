"""``from_torch``: a PyTorch module as a minigbp model with the same weights and names.

``torch.fx`` traces the module's ``forward`` into a graph of calls; each call becomes a
node of a :class:`minigbp.Graph`:

* calls of ``torch.nn`` layers (modules): ``nn.Conv2d`` (zeros padding), ``nn.Linear``,
  ``nn.ReLU``, ``nn.BatchNorm2d`` (running statistics), ``nn.MaxPool2d`` (no
  ``return_indices``), ``nn.AvgPool2d`` (no ``divisor_override``), ``nn.AdaptiveAvgPool2d``,
  ``nn.ZeroPad2d``, ``nn.Flatten``, ``nn.Dropout`` (identity), ``nn.Softmax``, ``nn.Identity``; containers
  (``nn.Sequential``) and your own modules are traced through;
* function calls (:data:`FUNCTIONS`): ``F.relu``, ``torch.relu``, ``x.relu()`` (in place or
  not) become ``ReLU(functional=True)``; ``+``, ``+=``, ``torch.add`` become ``Add``;
  ``torch.cat`` becomes ``Cat``; ``torch.flatten``, ``x.flatten(1)`` and
  ``x.view(x.size(0), -1)`` become ``Flatten``; ``F.max_pool2d``, ``F.avg_pool2d``,
  ``F.adaptive_avg_pool2d``, ``F.dropout`` and ``F.softmax`` become the matching layer.

Anything else raises :class:`ConversionError` listing every unsupported call: the node,
its op, the module it sits in, and its source line.

Names: a module call is named by the module's dotted name (``"layer1.0.conv1"``), so the
``state_dict()`` keys are PyTorch's; a module called again is ``"layer1.0.relu@1"``
(PyTorch's own suffix); a function call is named by its module scope and the function
(``"layer1.0.add"``, ``"features.denseblock1.denselayer1.cat"``, ``"relu"`` at the top),
with ``@1``, ``@2`` for further calls in that scope. A model whose calls form a chain
that follows its module tree (``nn.Sequential``, torchvision's VGG and AlexNet) comes
back as a nested :class:`minigbp.Sequential`; anything else as a :class:`minigbp.Graph`.

When ``forward`` does more than call modules in order, the converted model is run
against the module on a random input (node by node, in the module's dtype) and must
agree; otherwise the first node whose output differs is named. torch is imported only when :func:`from_torch` is called:
it is a test dependency of minigbp, never a runtime one.
"""

import operator

import numpy as np

from .. import layers as L
from ..model import INPUT, Graph
from ..sequential import Sequential
from .torch_graph import (ConversionError, _is_default_check, _is_shape, _label, _scope, _source, _torch,
                          check_forward, trace_module)
from ..shapes import conv_output_size, pool_output_size

__all__ = ["from_torch", "ConversionError", "infer_input_shape", "SUPPORTED", "FUNCTIONS", "trace_module"]

#: torch.nn class names that convert to a minigbp layer
SUPPORTED = ("Conv2d", "Linear", "ReLU", "BatchNorm2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "ZeroPad2d",
             "Flatten", "Dropout", "Softmax", "Identity", "Sequential")

#: function calls in ``forward`` that convert (see the module docstring)
FUNCTIONS = ("F.relu/torch.relu/x.relu()", "+/+=/torch.add", "torch.cat", "torch.flatten/x.flatten()",
             "x.view(x.size(0), -1)/x.reshape(...)", "F.max_pool2d", "F.avg_pool2d", "F.adaptive_avg_pool2d",
             "F.dropout", "F.softmax/torch.softmax")

_SPATIAL = (L.Conv2d, L.MaxPool2d, L.AvgPool2d, L.AdaptiveAvgPool2d)


class _Unsupported(Exception):
    """One call that does not convert; collected so that all are reported at once."""


def from_torch(module, dtype=None, example_input=None):
    """A minigbp model equivalent to the torch ``module``, same weights and dotted names.

    Parameters
    ----------
    module : torch.nn.Module
        Any module ``torch.fx`` can trace whose calls are supported (module docstring).
        Its training mode is irrelevant: minigbp is inference-only (Dropout is the
        identity, BatchNorm uses the running statistics); it is left as it was.
    dtype : None, numpy.float32 or numpy.float64
        None keeps each parameter's dtype (float16 and bfloat16 become float32);
        otherwise every parameter is cast to it.
    example_input : array or tensor (N, ...), optional
        Input used to check a custom ``forward`` (random data of this shape). Without
        it the shape is inferred (:func:`infer_input_shape`).

    Returns
    -------
    Sequential (a chain following the module tree; a single supported layer becomes a
    one-layer ``Sequential``) or Graph.

    Raises
    ------
    ConversionError
        Listing every unsupported call (node, op, module, source line), or naming the
        first node whose output differs from the module's.

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
    state = L._rng.bit_generator.state  # building layers draws initial weights: leave the user's seed alone
    try:
        single = _module_layer(torch, module, "", dtype) if not module._modules else None
        if single is not None:
            return Sequential(single)
        fx_graph, names, plain = trace_module(module)
        model = _build(torch, module, fx_graph, names, dtype)
    finally:
        L._rng.bit_generator.state = state
    if not plain:
        shape = tuple(example_input.shape) if example_input is not None else infer_input_shape(model)
        check_forward(torch, module, model, fx_graph, names, shape)
    return model


# ---------------------------------------------------------------------------- conversion

def _build(torch, module, fx_graph, names, dtype):
    """The minigbp model for a traced module: a Graph, or a nested Sequential for a tree-shaped chain."""
    graph, layers, problems, output = Graph(), {}, [], None
    inputs = [n for n in fx_graph.nodes if n.op == "placeholder" and any(not _is_default_check(u) for u in n.users)]
    if len(inputs) > 1:
        raise ConversionError(f"from_torch: {_label('', module)}: forward must take exactly one input tensor; it "
                              f"uses {', '.join(n.name for n in inputs)} (arguments with defaults stay at them)")
    for node in fx_graph.nodes:
        if node.op == "output":
            output = node.args[0]
        if node.op in ("placeholder", "output") or (node.op != "get_attr" and node not in names):
            continue  # sizes feeding a reshape are not nodes of their own
        try:
            if node.op == "call_module":
                m = module.get_submodule(node.target)
                if id(m) not in layers:
                    layers[id(m)] = _module_layer(torch, m, node.target, dtype)
                if layers[id(m)] is None:
                    raise _Unsupported("no minigbp layer for this module")
                layer, inputs = layers[id(m)], _tensor_args(node)
            elif node.op == "get_attr":
                raise _Unsupported("uses a parameter or buffer directly, outside a module")
            else:
                layer, inputs = _function_layer(torch, node)
            missing = [a for a in inputs if a not in names]
            if missing:
                raise _Unsupported(f"reads {missing[0].name!r}, which is not a tensor a layer computed")
            if problems:  # an input may be a call that did not convert: report, do not build
                continue
            graph.call(names[node], layer, *[names[a] for a in inputs])
        except _Unsupported as e:
            problems.append(f"{_what(module, node, names)}: {e}{_where(node)}")
    if problems:
        raise ConversionError(
            f"from_torch: {len(problems)} unsupported call(s) in {_label('', module)}:\n  " + "\n  ".join(problems)
            + f"\nsupported modules: {', '.join('nn.' + s for s in SUPPORTED)}"
            + f"\nsupported functions: {', '.join(FUNCTIONS)}")
    if not hasattr(output, "op") or output not in names or output.op == "placeholder":
        raise ConversionError(f"from_torch: {_label('', module)}: forward must return one tensor computed by "
                              f"its layers, got {output!r}")
    if names[output] != graph.nodes[-1].name:  # calls after the returned value do not matter
        graph = Graph(graph.nodes_through(names[output]))
    return _as_sequential(graph) or graph


def _what(module, node, names):
    """How an error names a call: the module and its class, or the node and its op."""
    if node.op == "call_module":
        return _label(node.target, module.get_submodule(node.target))
    return f"node {names.get(node, node.name)!r} ({node.op} {getattr(node.target, '__name__', node.target)})"


def _where(node):
    path, kind = _scope(node)
    inside = f" in '{path}' ({kind.__module__}.{kind.__name__})" if path and node.op != "call_module" else ""
    return f"{inside} at {_source(node)}"


def _tensor_args(node):
    """The tensor inputs of a module call (its positional arguments that are nodes)."""
    if node.kwargs or not all(hasattr(a, "op") for a in node.args):
        raise _Unsupported("called with non-tensor or keyword arguments")
    return list(node.args)


def _array(t, dtype, name):
    torch = _torch()
    arr = t.detach().cpu()
    if not arr.is_floating_point():
        raise ConversionError(f"from_torch: parameter '{name}' has dtype {arr.dtype}, not floating point")
    if arr.dtype not in (torch.float32, torch.float64):
        arr = arr.float()
    arr = arr.numpy()
    return np.array(arr, dtype=dtype if dtype is not None else arr.dtype)


def _params(layer, tmod, name, dtype, names=("weight", "bias")):
    for p in names:
        value = getattr(tmod, p)
        setattr(layer, p, None if value is None else _array(value, dtype, f"{name}.{p}"))
    return layer


def _module_layer(torch, m, name, dtype):
    """The minigbp layer for a supported torch module, or None if the class is not supported."""
    nn = torch.nn
    where = _label(name, m)
    try:
        if type(m) is nn.Conv2d:
            if m.padding_mode != "zeros":
                raise ConversionError(f"from_torch: {where}: padding_mode={m.padding_mode!r}; minigbp pads with zeros only")
            padding = m.padding if isinstance(m.padding, str) else tuple(m.padding)
            layer = L.Conv2d(m.in_channels, m.out_channels, tuple(m.kernel_size), stride=tuple(m.stride),
                             padding=padding, dilation=tuple(m.dilation), groups=m.groups, bias=m.bias is not None)
            return _params(layer, m, name, dtype)
        if type(m) is nn.Linear:
            return _params(L.Linear(m.in_features, m.out_features, bias=m.bias is not None), m, name, dtype)
        if type(m) is nn.BatchNorm2d:
            if not m.track_running_stats or m.running_mean is None:
                raise ConversionError(f"from_torch: {where}: track_running_stats=False normalizes with each batch's "
                                      "statistics; minigbp supports running statistics only")
            layer = L.BatchNorm2d(m.num_features, eps=m.eps, affine=m.affine)
            return _params(layer, m, name, dtype, ("weight", "bias", "running_mean", "running_var"))
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
        if type(m) is nn.ZeroPad2d:
            return L.ZeroPad2d(tuple(m.padding))
        if type(m) is nn.Flatten:
            return L.Flatten(m.start_dim, m.end_dim)
        if type(m) is nn.Dropout:
            return L.Dropout(m.p)
        if type(m) is nn.Identity:
            return L.Identity()
        if type(m) is nn.Softmax:
            if m.dim is None:
                raise ConversionError(f"from_torch: {where}: Softmax(dim=None) is ambiguous; give dim")
            return L.Softmax(m.dim)
    except ConversionError:
        raise
    except (TypeError, ValueError) as e:
        raise ConversionError(f"from_torch: {where}: {e}") from e
    return None


# positional parameters of the functions and methods that convert (``self`` is "input")
_SIGNATURES = {
    "relu": ("input", "inplace"),
    "add": ("input", "other"),
    "cat": ("tensors", "dim"),
    "flatten": ("input", "start_dim", "end_dim"),
    "max_pool2d": ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "avg_pool2d": ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    "adaptive_avg_pool2d": ("input", "output_size"),
    "dropout": ("input", "p", "training", "inplace"),
    "softmax": ("input", "dim", "_stacklevel", "dtype"),
}


def _function_layer(torch, node):
    """``(layer, input nodes)`` for a supported function or method call; else :class:`_Unsupported`."""
    F = torch.nn.functional
    functions = {F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", F.relu_: "relu",
                 operator.add: "add", operator.iadd: "add", torch.add: "add",
                 torch.cat: "cat", torch.concat: "cat", torch.concatenate: "cat", torch.flatten: "flatten",
                 torch.reshape: "reshape", F.max_pool2d: "max_pool2d", F.avg_pool2d: "avg_pool2d",
                 F.adaptive_avg_pool2d: "adaptive_avg_pool2d", F.dropout: "dropout", F.softmax: "softmax",
                 torch.softmax: "softmax"}
    methods = {"relu": "relu", "relu_": "relu", "add": "add", "add_": "add", "flatten": "flatten",
               "view": "reshape", "reshape": "reshape", "softmax": "softmax"}
    kind = methods.get(node.target) if node.op == "call_method" else functions.get(node.target)
    if kind is None:
        raise _Unsupported("no minigbp layer for this call")
    if kind == "reshape":
        return _reshape(node)
    a = dict(zip(_SIGNATURES[kind], node.args))
    a.update(node.kwargs)
    given = lambda key, default=None: a.get(key, default)  # noqa: E731
    x = given("input")
    if kind == "relu":
        return L.ReLU(inplace=bool(given("inplace", node.target in (torch.relu_, F.relu_, "relu_"))),
                      functional=True), [x]
    if kind == "add":
        other, alpha = given("other"), given("alpha", 1)
        if not (hasattr(x, "op") and hasattr(other, "op")) or alpha != 1:
            raise _Unsupported("only the sum of two tensors converts (no constants, "
                               "no alpha)")
        return L.Add(), [x, other]
    if kind == "cat":
        tensors = given("tensors")
        if not isinstance(tensors, (list, tuple)) or not all(hasattr(t, "op") for t in tensors):
            raise _Unsupported("expects a list of tensors")
        return L.Cat(given("dim", 0)), list(tensors)
    if kind == "flatten":
        return L.Flatten(given("start_dim", 0), given("end_dim", -1)), [x]
    if kind == "max_pool2d":
        if given("return_indices", False):
            raise _Unsupported("return_indices=True is not supported")
        stride = given("stride") or None  # F.max_pool2d's default stride is [] or None: the kernel size
        return L.MaxPool2d(given("kernel_size"), stride, given("padding", 0), given("dilation", 1),
                           ceil_mode=given("ceil_mode", False)), [x]
    if kind == "avg_pool2d":
        if given("divisor_override") is not None:
            raise _Unsupported("divisor_override is not supported")
        return L.AvgPool2d(given("kernel_size"), given("stride") or None, given("padding", 0),
                           given("ceil_mode", False), given("count_include_pad", True)), [x]
    if kind == "adaptive_avg_pool2d":
        return L.AdaptiveAvgPool2d(given("output_size")), [x]
    if kind == "dropout":
        return L.Dropout(given("p", 0.5)), [x]
    if given("dim") is None:  # softmax
        raise _Unsupported("softmax without dim is ambiguous")
    return L.Softmax(given("dim")), [x]


def _reshape(node):
    """``x.view(x.size(0), -1)``, ``x.reshape(n, -1)``, ``x.view(-1, K)``: a Flatten of all but the batch
    axis (the forward check catches a ``K`` that is not the per-sample size)."""
    x, *shape = node.args
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = list(shape[0])
    batch = len(shape) == 2 and ((hasattr(shape[0], "op") and _is_shape(shape[0]) and shape[1] == -1)
                                 or (shape[0] == -1 and isinstance(shape[1], int)))
    if not batch or node.kwargs:
        raise _Unsupported("only a reshape to (batch, -1) converts (a Flatten)")
    return L.Flatten(), [x]


def _as_sequential(graph):
    """A nested Sequential with the same nodes, if the graph is a chain whose names follow a tree
    (every prefix's nodes contiguous, no repeated calls); else None."""
    nodes, previous = graph.nodes, INPUT
    for node in nodes:
        if node.inputs != (previous,) or "@" in node.name:
            return None
        previous = node.name
    return _nest([(n.name.split("."), n.layer) for n in nodes])


def _nest(items):
    children, closed = {}, set()
    for parts, layer in items:
        head = parts[0]
        if head in closed or (head in children and (len(parts) == 1 or not isinstance(children[head], list))):
            return None
        for done in [k for k in children if k != head]:
            closed.add(done)
        if len(parts) == 1:
            children[head] = layer
        else:
            children.setdefault(head, []).append((parts[1:], layer))
    out = {}
    for name, child in children.items():
        if isinstance(child, list):
            child = _nest(child)
            if child is None:
                return None
        out[name] = child
    return Sequential(**out)


# ------------------------------------------------------------------ input shape

def infer_input_shape(model, batch=2):
    """A valid input shape ``(batch, ...)`` for ``model`` (a minigbp Graph or Sequential).

    From the first layer that reads the input: a ``Linear`` gives ``(batch, in_features)``;
    a ``Conv2d`` (or a BatchNorm2d) gives ``(batch, channels, S, S)`` with the smallest square
    size ``S >= 16`` (else the smallest at all) that the whole model runs on. Raises
    ``ValueError`` when no size works (then pass an input shape explicitly).
    """
    leaves = model.named_leaves()
    first = next((layer for _, layer in leaves if isinstance(layer, (L.Conv2d, L.Linear, L.BatchNorm2d))), None)
    if isinstance(first, L.Linear) and not any(isinstance(layer, _SPATIAL) for _, layer in leaves):
        return (batch, first.in_features)
    if not isinstance(first, (L.Conv2d, L.BatchNorm2d)):
        raise ValueError("cannot infer the input shape of a model that starts with neither Conv2d nor Linear; "
                         "pass it explicitly")
    channels = first.in_channels if isinstance(first, L.Conv2d) else first.num_features
    chain = isinstance(model, Sequential)
    sizes = list(range(16, 65)) + [96, 112, 128, 224, 227, 256, 299] + list(range(1, 16))
    for s in sizes:
        shape = (batch, channels, s, s)
        if chain and _output_shape(model, shape) is None:  # cheap: the shape formulas only
            continue
        try:
            model.forward(np.zeros((1,) + shape[1:], dtype=np.float32))
        except (ValueError, TypeError):
            continue
        return shape
    raise ValueError(f"cannot infer the input shape: the model runs on no square input with {channels} "
                     "channels up to 299x299; pass it explicitly")


def _output_shape(model, shape):
    """The output shape of a chain for an input of ``shape`` from the shape formulas alone, or
    None if it cannot run (an unknown layer type gives ``shape`` unchanged: the real forward decides)."""
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
        elif isinstance(layer, L.ZeroPad2d) and len(shape) == 4:
            left, right, top, bottom = layer.padding
            shape = shape[:2] + (shape[2] + top + bottom, shape[3] + left + right)
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
