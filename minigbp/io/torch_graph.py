"""A PyTorch module's ``forward`` as a graph of calls (``torch.fx``): tracing it, naming its
nodes as minigbp names them, and running it node by node.

:func:`trace_module` is what :func:`minigbp.from_torch` converts and what
:class:`minigbp.verify.recorder.TorchRecorder` runs, so the two sides of a comparison have
the same nodes under the same names (see :mod:`minigbp.io.pytorch` for the naming rules).
"""

import copy
import inspect
import operator

import numpy as np

from ..model import INPUT, forward_nodes
from . import ConversionError

__all__ = ["trace_module", "call_label", "ConversionError", "check_forward"]


def _label(name, module):
    return f"'{name or '<root>'}' ({type(module).__module__}.{type(module).__name__})"


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a test dependency
        raise ImportError("minigbp.from_torch needs PyTorch (pip install torch); minigbp itself does not") from e
    return torch



def trace_module(module):
    """``(fx graph, names, plain)`` of ``module``'s forward (in eval mode).

    ``names`` maps each fx node that computes a tensor to its minigbp node name (module
    docstring); ``plain`` is True when ``forward`` only calls modules in order through
    ``nn.Sequential`` containers (nothing to check against the module then).
    """
    torch = _torch()
    fx = torch.fx
    nn = torch.nn

    class Tracer(fx.Tracer):
        """torch.nn's own layers are leaves; containers and user modules are traced through.
        A module registered under several names (one layer in two slots of an nn.Sequential)
        is named by its k-th name at its k-th call (fx alone would use the first name twice)."""

        def __init__(self):
            super().__init__()
            self.record_stack_traces = True
            self.custom, self.calls, self.chosen = [], {}, {}
            self.paths = {}
            for name, m in module.named_modules(remove_duplicate=False):
                self.paths.setdefault(id(m), []).append(name)

        def is_leaf_module(self, m, qualname):
            containers = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
            return type(m).__module__.startswith("torch.nn.modules") and not isinstance(m, containers)

        def path_of_module(self, mod):
            return self.chosen.get(id(mod)) or super().path_of_module(mod)

        def call_module(self, m, forward, args, kwargs):
            paths, k = self.paths.get(id(m), []), self.calls.get(id(m), 0)
            self.calls[id(m)] = k + 1
            if len(paths) > 1:
                self.chosen[id(m)] = paths[min(k, len(paths) - 1)]
            if not self.is_leaf_module(m, "") and type(m) is not nn.Sequential:
                self.custom.append(m)
            return super().call_module(m, forward, args, kwargs)

    was_training = {m: m.training for m in module.modules()}  # per submodule: eval() flips them all
    module.eval()
    tracer = Tracer()
    try:
        graph = tracer.trace(module, concrete_args=_defaults(module))
    except Exception as e:
        raise ConversionError(
            f"from_torch: torch.fx cannot trace {_label('', module)}: {type(e).__name__}: {str(e).strip()[:300]}; "
            "minigbp converts modules whose forward is a fixed graph of calls (no branches on tensor values)") from e
    finally:
        for m, flag in was_training.items():
            m.training = flag
    names = _fx_names(graph)
    functional = any(n.op in ("call_function", "call_method") for n in graph.nodes)
    custom_root = type(module) is not nn.Sequential
    return graph, names, not (functional or tracer.custom or custom_root)


def _defaults(module):
    """``forward``'s arguments after the first, at their default values (``forward(x, x2=None)``
    converts as ``forward(x)``); an argument without a default is a second input, refused later."""
    params = list(inspect.signature(module.forward).parameters.values())[1:]
    return {p.name: p.default for p in params
            if p.default is not inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD} or None


def _fx_names(graph):
    """``{fx node: minigbp name}`` for every node that computes a tensor (module docstring)."""
    names, taken = {}, set()
    for node in graph.nodes:
        if node.op == "placeholder" and INPUT not in names.values():  # further arguments stay at their defaults
            names[node] = INPUT
        elif node.op == "call_module" or (node.op in ("call_function", "call_method") and not _is_shape(node)
                                          and not _is_default_check(node)):
            if node.op == "call_module":
                base = node.target
            else:
                scope = _scope(node)[0]
                base = f"{scope}.{_short(node)}" if scope else _short(node)
            name, k = base, 0
            while name in taken:
                k += 1
                name = f"{base}@{k}"
            taken.add(name)
            names[node] = name
    return names


def _short(node):
    """The op's short name: the function or method, without a trailing ``_`` (``relu_`` -> relu)."""
    if node.op == "call_method":
        name = node.target
    elif node.target in (operator.add, operator.iadd):
        name = "add"
    else:
        name = getattr(node.target, "__name__", str(node.target))
    name = name.strip("_")
    return {"view": "flatten", "reshape": "flatten", "concat": "cat", "concatenate": "cat"}.get(name, name)


def call_label(node):
    """How the source wrote a call: ``F.relu``, ``torch.cat``, ``+``, ``Tensor.relu_``."""
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.target in (operator.add, operator.iadd):
        return "+" if node.target is operator.add else "+="
    module = getattr(node.target, "__module__", None) or "torch"
    module = {"torch.nn.functional": "F", "torch._C._nn": "F", "torch._VariableFunctions": "torch"}.get(module, module)
    return f"{module}.{getattr(node.target, '__name__', node.target)}"


def _scope(node):
    """``(dotted name, class)`` of the innermost module whose forward made this call, ``("", None)`` at the top."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "", None
    path, kind = list(stack.values())[-1]
    return path, kind


def _is_default_check(node):
    """torch.fx's check that an argument given a concrete default (``x2=None``) is that default."""
    return node.op == "call_function" and getattr(node.target, "__name__", "") == "_assert_is_none"


def _is_shape(node):
    """Does ``node`` compute a size (``x.size(0)``, ``x.shape[0]``) rather than a tensor?"""
    if node.op == "call_method" and node.target == "size":
        return True
    if node.op == "call_function" and node.target is getattr and len(node.args) > 1 and node.args[1] == "shape":
        return True
    if node.op == "call_function" and node.target is operator.getitem:
        return hasattr(node.args[0], "op") and _is_shape(node.args[0])
    return False


def _source(node):
    """``file:line: code`` of the call, from the stack trace torch.fx recorded."""
    lines = (node.stack_trace or "").strip().splitlines()
    if len(lines) < 2 or not lines[0].strip().startswith("File "):
        return "(source unknown)"
    head = lines[0].strip()
    try:
        path = head.split('"')[1]
        line = head.split("line ")[1].split(",")[0]
    except IndexError:
        return head
    return f"{path.rsplit('/', 1)[-1]}:{line}: {lines[1].strip()}"



def check_forward(torch, module, model, fx_graph, names, shape):
    """Run the module (in eval mode, its own dtype) and ``model`` on one random input, node by node;
    name the first node whose output differs (relative 1e-9 in float64, 1e-4 in float32)."""
    tdtype = next((p.dtype for p in module.parameters()), torch.float32)
    twin = module if tdtype in (torch.float32, torch.float64) else copy.deepcopy(module).float()
    tdtype = torch.float64 if tdtype == torch.float64 else torch.float32
    x = np.random.default_rng(0).standard_normal(shape).astype(str(tdtype).replace("torch.", ""))
    tol = 1e-9 if tdtype == torch.float64 else 1e-4
    theirs, mine = {}, {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if n in names and torch.is_tensor(out):
                theirs[names[n]] = out.detach().cpu().numpy().copy()
            return out

    was_training = {m: m.training for m in twin.modules()}
    twin.eval()
    try:
        with torch.no_grad():
            Recorder(twin, graph=fx_graph).run(torch.from_numpy(x))
    except Exception as e:
        raise ConversionError(
            f"from_torch: could not run {_label('', module)} on a random input of shape {shape} to check "
            f"its forward ({type(e).__name__}: {e}); pass example_input=") from e
    finally:
        for m, flag in was_training.items():
            m.training = flag
    try:
        forward_nodes(model.nodes, x, on_step=lambda name, layer, out: mine.__setitem__(name, out))
    except (ValueError, TypeError) as e:
        raise ConversionError(f"from_torch: {_label('', module)}: the converted model does not run on the "
                              f"module's input of shape {shape}: {e}") from e
    for name, _ in model.named_leaves():
        want, got = theirs.get(name), mine[name]
        if want is None:
            continue
        same_shape = got.shape == want.shape
        err = float(np.max(np.abs(got - want), initial=0.0)) if same_shape else float("inf")
        scale = float(np.max(np.abs(want), initial=0.0))
        if not err <= tol * max(1.0, scale):
            raise ConversionError(
                f"from_torch: {_label('', module)}: node {name!r} computes a different value than the module's "
                f"forward (max |diff| {err:.3g}, values up to {scale:.3g}, shapes {got.shape} vs {want.shape}); "
                "an in-place operation on a tensor that is read again, or a reshape other than a flatten?")
