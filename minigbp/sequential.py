"""``Sequential``: layers applied in order, as ``torch.nn.Sequential`` -- a :class:`minigbp.Graph`
whose nodes form a chain (every node reads the one before it).

Its children may be layers or other Sequentials; nesting gives the dotted names PyTorch
gives (``"features.0"``), so ``state_dict()`` keys are PyTorch's. Everything else -- the
forward and backward passes, weights in and out -- is :class:`minigbp.Graph`'s.
"""

import numpy as np

from .layers import Layer
from .model import INPUT, Graph, Node, _layer_spec

__all__ = ["Sequential"]



class Sequential(Graph):
    """Layers applied in order, as ``torch.nn.Sequential``: a graph whose nodes form a chain.

    ``Sequential(a, b, c)`` names the children ``"0"``, ``"1"``, ``"2"``;
    ``Sequential(features=..., classifier=...)`` uses the keywords as names.
    Nesting gives dotted names, so ``state_dict()`` keys are PyTorch's
    (``"features.0.weight"``).

    Examples
    --------
    >>> import numpy as np, minigbp as mg
    >>> model = mg.Sequential(mg.Conv2d(1, 2, 3), mg.ReLU(), mg.Flatten(), mg.Linear(2 * 4 * 4, 3))
    >>> model(np.zeros((5, 1, 6, 6))).shape
    (5, 3)
    >>> sorted(model.state_dict())
    ['0.bias', '0.weight', '3.bias', '3.weight']
    """

    def __init__(self, *layers, **named):
        if layers and named:
            raise TypeError("Sequential: give the layers either all positionally or all by name, not both")
        items = named.items() if named else ((str(i), layer) for i, layer in enumerate(layers))
        self.children = {}
        for name, layer in items:
            if not isinstance(layer, Layer) or (isinstance(layer, Graph) and not isinstance(layer, Sequential)):
                raise TypeError(f"Sequential: child {name!r} is not a minigbp layer or Sequential: {layer!r}")
            if "." in name or not name:
                raise ValueError(f"Sequential: child name {name!r} must be non-empty and contain no '.'")
            self.children[name] = layer

    def call(self, name, layer, *inputs):
        raise TypeError("Sequential is a chain; build a Graph to wire layers freely")

    @property
    def nodes(self):
        """The chain: every leaf reads the one before it (the first reads the input)."""
        nodes, previous = [], INPUT
        for name, layer in self.named_leaves():
            nodes.append(Node(name, layer, (previous,)))
            previous = name
        return nodes

    def named_leaves(self, prefix=""):
        """``(dotted_name, layer)`` for every non-container layer, in execution order."""
        out = []
        for name, layer in self.children.items():
            full = prefix + name
            if isinstance(layer, Sequential):
                out.extend(layer.named_leaves(full + "."))
            else:
                out.append((full, layer))
        return out

    def named_modules(self, prefix=""):
        """``(dotted_name, layer)`` for every child at every depth, containers included."""
        out = []
        for name, layer in self.children.items():
            out.append((prefix + name, layer))
            if isinstance(layer, Sequential):
                out.extend(layer.named_modules(prefix + name + "."))
        return out

    def __getitem__(self, key):
        """``model[0]``, ``model["features"]``, ``model["features.28"]``, or ``model[2:5]``.

        A slice is a new Sequential sharing the children (and their names), as in PyTorch.
        """
        if isinstance(key, slice):
            return Sequential(**dict(list(self.children.items())[key]))
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            return list(self.children.values())[key]
        layer = self
        for part in str(key).split("."):
            if not isinstance(layer, Sequential) or part not in layer.children:
                raise KeyError(f"no layer named {key!r}; layers: {', '.join(n for n, _ in self.named_modules())}")
            layer = layer.children[part]
        return layer

    def __len__(self):
        return len(self.children)

    def __iter__(self):
        return iter(self.children.values())

    def __repr__(self):
        lines = [f"{type(self).__name__}("]
        for name, layer in self.children.items():
            body = repr(layer).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + "\n)"

    def spec(self):
        """The architecture as JSON-ready nested lists (no weights).

        ``{"type": "Sequential", "children": [[name, child_spec], ...]}`` with leaf
        specs ``{"type": "Conv2d", "config": {...constructor arguments...}}``;
        :func:`minigbp.io.weights.model_from_spec` rebuilds the model.
        """
        return {"type": "Sequential",
                "children": [[name, layer.spec() if isinstance(layer, Sequential) else _layer_spec(layer)]
                             for name, layer in self.children.items()]}
