"""The torch side of a trace: a PyTorch module run node by node, every signal recorded.

:class:`TorchRecorder` runs the module as its ``torch.fx`` graph (the graph
:func:`minigbp.from_torch` converts, with the same node names), so functional ReLUs and
additions are recorded as well as modules, and turns the recording into a
:class:`minigbp.verify.tracing.Trace` comparable with minigbp's own.
"""

import numpy as np

from ..io.torch_graph import _torch, call_label, trace_module
from .tracing import Record, Trace, _np

__all__ = ["TorchRecorder"]


class TorchRecorder:
    """Context manager: while it is active, ``module(x)`` runs as the module's ``torch.fx`` graph
    and records every node (see :meth:`Trace.from_torch`).

    The module's own ``forward`` is set aside for the duration (an instance attribute shadows
    it), so the function under test still receives, hooks and calls the very module it was
    given; its submodules (and whatever hooks a recipe put on them, or modules it swapped in)
    run as usual. ``runs`` holds one recording per forward pass; :meth:`trace` turns the last
    one into a :class:`Trace`.
    """

    def __init__(self, module):

        self.module = module
        self.graph, self.names, _ = trace_module(module)
        self.runs = []

    def __enter__(self):
        torch = _torch()
        names, runs = self.names, self.runs

        class Recording(torch.fx.Interpreter):
            def run_node(self, n):
                if n not in names or n.op == "placeholder":
                    return super().run_node(n)
                args, kwargs = self.fetch_args_kwargs_from_env(n)
                rec = {"name": names[n], "inputs": [], "leaving": {}}
                args, kwargs = _clone_inputs(torch, (args, kwargs), rec)
                out = getattr(self, n.op)(n.target, args, kwargs)
                if not torch.is_tensor(out):
                    return out
                rec["output"] = out.detach().clone()
                rec["type"] = type(self.fetch_attr(n.target)).__name__ if n.op == "call_module" else call_label(n)
                runs[-1].append(rec)
                if not (out.requires_grad and torch.is_grad_enabled()):
                    return out

                def grab(g):
                    rec["arriving"] = g.detach().clone()

                out.register_hook(grab)
                return out.clone()  # downstream sees a clone, so hooks others place on it run before ours

        def forward(*args, **kwargs):
            runs.append([])
            return Recording(self.module, graph=self.graph).run(*args, **kwargs)

        self.module.forward = forward  # shadows the class's forward until __exit__
        return self

    def __exit__(self, *exc):
        self.module.__dict__.pop("forward", None)
        return False

    def trace(self, mode="torch", target="", x=None, result=None):
        """The last recorded forward pass as a :class:`Trace` (source "torch", conventions None)."""
        notes, records = [], []
        if len(self.runs) > 1:
            notes.append(f"the module ran {len(self.runs)} times; the last run is recorded")
        for rec in (self.runs[-1] if self.runs else []):
            name, out = rec["name"], _np(rec["output"])
            inputs = tuple(_np(v) for v in rec["inputs"])
            sig_in = _np(rec.get("arriving"))
            if sig_in is None:
                sig_in = np.zeros_like(out)
                notes.append(f"no gradient reached the output of {name}: recorded as zeros")
            leaving = []
            for k, v in enumerate(inputs):
                g = _np(rec["leaving"].get(k))
                if g is None:
                    g = np.zeros_like(v)
                    notes.append(f"no signal left {name} through its input {k}: recorded as zeros")
                leaving.append(g)
            one = len(inputs) == 1
            records.append(Record(name, rec["type"], out, sig_in, leaving[0] if one else tuple(leaving),
                                  inputs[0] if one else inputs))
        return Trace(records, mode, None, target, "torch", _np(x), _np(result), notes)


def _clone_inputs(torch, value, rec):
    """``value`` (nested args) with every tensor replaced by a clone whose gradient is caught.

    The op then works on the clone: what leaves through input ``k`` is the gradient of the
    clone, caught at the clone's own graph node, whatever the op does to the clone in place.
    """
    if isinstance(value, (list, tuple)):
        return type(value)(_clone_inputs(torch, v, rec) for v in value)
    if isinstance(value, dict):
        return {k: _clone_inputs(torch, v, rec) for k, v in value.items()}
    if not torch.is_tensor(value):
        return value
    k = len(rec["inputs"])
    rec["inputs"].append(value.detach().clone())
    if not (value.requires_grad and torch.is_grad_enabled()):
        return value.clone()
    twin = value.clone()

    def grab(grad_inputs, grad_outputs):
        if grad_outputs and grad_outputs[0] is not None:
            rec["leaving"][k] = grad_outputs[0].detach().clone()

    twin.grad_fn.register_hook(grab)
    return twin
