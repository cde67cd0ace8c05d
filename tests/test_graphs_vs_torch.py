"""Random graphs (residual and concatenating blocks, BatchNorm, shared and functional ReLUs)
written in torch, converted by ``from_torch``, and checked in the three modes against torch.

Hypothesis draws a program of 2-5 blocks over an input (N, C, H, W):

* ``residual``: conv3x3 [BN] ReLU conv3x3 [BN], added to the block input (or to a 1x1
  projection of it when channels change), then ReLU; the two ReLUs are sometimes one
  shared ``nn.ReLU`` module called twice (as in torchvision's ResNet);
* ``dense``: ``cat([h, conv(BN-ReLU(h))])``, and sometimes also an earlier value of the
  same spatial size: a long skip (DenseNet);
* ``fire``: a 1x1 squeeze, ReLU, then 1x1 and 3x3 expansions concatenated (SqueezeNet);
* ``pool``: max (ties: the first wins) or average pooling, stride 2;

then a head: [functional ReLU] global average pooling, flatten, linear. ReLUs are nn.ReLU
modules (in place or not) or function calls (``F.relu``, ``torch.relu``,
``F.relu(inplace=True)``), so both kinds meet every rule.

Oracles (float64): autograd for vanilla; :func:`torch_helpers.every_relu` (the rule at every
ReLU, module or function) for guided and deconvnet, against minigbp's defaults; Captum
(rules on ``nn.ReLU`` modules only) against ``preset="captum"``. "int" draws use small
integer weights, inputs and BatchNorm statistics with a power-of-two scale, so everything is
exact: ReLUs see exact zeros and max pools see ties.
"""

import numpy as np
import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")

import minigbp as mg  # noqa: E402
from torch_helpers import autograd_signal, every_relu, randomize_batchnorm  # noqa: E402
from torch_helpers import torch_single_thread  # noqa: E402,F401 (autouse fixture)

nn, F = torch.nn, torch.nn.functional

#: float64, relative to the larger max |signal|: summation orders differ by ~1e-15; a wrong
#: rule at one ReLU or a missing sum over consumers is an O(1) relative error
TOL = 1e-10
pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU:UserWarning")
CAPTUM = {"guided": captum_attr.GuidedBackprop, "deconvnet": captum_attr.Deconvolution}
RELUS = ("module", "module-inplace", "F.relu", "torch.relu", "F.relu-inplace")


class Program(nn.Module):
    """A torch model whose forward runs ``steps``: ``(op, name, inputs, arg)`` with ``inputs``
    indices into the list of values computed so far (0 is the input). ``op`` is "layer" (call
    the module ``name``), "relu" (``arg`` says how: a :data:`RELUS` kind), "add" or "cat"."""

    def __init__(self, steps, modules):
        super().__init__()
        self.steps = steps
        for name, m in modules.items():
            self.add_module(name, m)

    def forward(self, x):
        values = [x]
        for op, name, inputs, arg in self.steps:
            args = [values[i] for i in inputs]
            if op == "layer":
                values.append(getattr(self, name)(*args))
            elif op == "add":
                values.append(args[0] + args[1])
            elif op == "cat":
                values.append(torch.cat(args, 1))
            elif arg == "F.relu":
                values.append(F.relu(args[0]))
            elif arg == "torch.relu":
                values.append(torch.relu(args[0]))
            elif arg == "F.relu-inplace":
                values.append(F.relu(args[0], inplace=True))
            else:  # an nn.ReLU module, possibly shared
                values.append(getattr(self, name)(args[0]))
        return values[-1]


class Builder:
    """Writes a :class:`Program`, keeping each value's (channels, height, width)."""

    def __init__(self, draw, shape):
        self.draw, self.steps, self.modules, self.shapes = draw, [], {}, [shape]

    def layer(self, module, i, shape):
        name = f"m{len(self.modules)}"
        self.modules[name] = module
        return self._add("layer", name, [i], None, shape)

    def relu(self, i, shared=None, inplace=True):
        """A ReLU of a drawn kind on value ``i``; in place only where the caller allows it (on a
        value nothing else reads, which no op saved for its backward: a conv, BN or add output)."""
        kind = self.draw(st.sampled_from([k for k in RELUS if inplace or "inplace" not in k]))
        if kind.startswith("module") or shared is not None:
            module = shared if shared is not None else nn.ReLU(inplace=kind == "module-inplace")
            name = next((n for n, m in self.modules.items() if m is module), None)
            if name is None:
                name = f"m{len(self.modules)}"
                self.modules[name] = module
            return self._add("relu", name, [i], "module", self.shapes[i])
        return self._add("relu", None, [i], kind, self.shapes[i])

    def _add(self, op, name, inputs, arg, shape):
        self.steps.append((op, name, inputs, arg))
        self.shapes.append(shape)
        return len(self.shapes) - 1


def conv(c_in, c_out, k, stride=1):
    return nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False)


@st.composite
def programs(draw):
    """``(torch model, x, kind)``: a random float64 graph in eval mode and an input batch."""
    kind = draw(st.sampled_from(["int", "cont"]))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    N, C, H = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(4, 9))
    b = Builder(draw, (C, H, H))
    h = 0
    for _ in range(draw(st.integers(2, 5))):
        c, s, _ = b.shapes[h]
        block = draw(st.sampled_from(["residual", "residual", "dense", "dense", "fire", "pool"]))
        event(f"block {block}")
        if block == "residual":
            out = draw(st.integers(1, 4))
            shared = nn.ReLU(inplace=True) if draw(st.booleans()) else None
            bn = draw(st.booleans())
            r = b.layer(conv(c, out, 3), h, (out, s, s))
            r = b.layer(nn.BatchNorm2d(out), r, (out, s, s)) if bn else r
            r = b.relu(r, shared)
            r = b.layer(conv(out, out, 3), r, (out, s, s))
            r = b.layer(nn.BatchNorm2d(out), r, (out, s, s)) if bn else r
            skip = h if out == c else b.layer(conv(c, out, 1), h, (out, s, s))
            r = b._add("add", None, [r, skip], None, (out, s, s))
            h = b.relu(r, shared)
        elif block == "dense":
            growth = draw(st.integers(1, 3))
            d = b.layer(nn.BatchNorm2d(c), h, (c, s, s))
            d = b.relu(d)
            d = b.layer(conv(c, growth, draw(st.sampled_from([1, 3]))), d, (growth, s, s))
            older = [i for i, shp in enumerate(b.shapes[:h]) if shp[1:] == (s, s)]
            extra = [draw(st.sampled_from(older))] if older and draw(st.booleans()) else []
            parts = [h] + extra + [d]
            h = b._add("cat", None, parts, None, (sum(b.shapes[i][0] for i in parts), s, s))
        elif block == "fire":
            sq, e = draw(st.integers(1, 3)), draw(st.integers(1, 3))
            q = b.relu(b.layer(nn.Conv2d(c, sq, 1), h, (sq, s, s)))
            e1 = b.relu(b.layer(nn.Conv2d(sq, e, 1), q, (e, s, s)))
            e3 = b.relu(b.layer(nn.Conv2d(sq, e, 3, padding=1), q, (e, s, s)))
            h = b._add("cat", None, [e1, e3], None, (2 * e, s, s))
        elif s >= 2:
            pool = nn.MaxPool2d(2, ceil_mode=draw(st.booleans())) if draw(st.booleans()) else nn.AvgPool2d(2)
            out = -(-s // 2) if getattr(pool, "ceil_mode", False) else s // 2
            h = b.layer(pool, h, (c, out, out))
    c = b.shapes[h][0]
    if draw(st.booleans()):
        h = b.relu(h, inplace=False)  # the value may be a ReLU's output, saved for its backward
    h = b.layer(nn.AdaptiveAvgPool2d(1), h, (c, 1, 1))
    h = b.layer(nn.Flatten(), h, (c,))
    b.layer(nn.Linear(c, draw(st.integers(2, 5))), h, None)
    model = Program(b.steps, b.modules).double().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and kind == "int":
                m.weight.copy_(torch.from_numpy(rng.integers(-1, 2, m.weight.shape).astype(np.float64)))
                if m.bias is not None:
                    m.bias.copy_(torch.from_numpy(rng.integers(-1, 2, m.bias.shape).astype(np.float64)))
    randomize_batchnorm(model, seed, exact=kind == "int")
    x = (rng.integers(-2, 3, (N, C, H, H)) if kind == "int" else rng.standard_normal((N, C, H, H))).astype(np.float64)
    note(f"kind {kind}, steps {b.steps}")
    return model, x, kind


def assert_signal_close(got, want, what):
    scale = max(float(np.abs(got).max()), float(np.abs(want).max()))
    err = float(np.abs(got - want).max())
    note(f"{what}: max |err| {err:.3g}, scale {scale:.3g}")
    assert got.shape == want.shape and err <= TOL * scale, f"{what}: {err:.3g} > {TOL:g} * {scale:.3g}"


@given(programs(), st.data())
def test_random_graphs_in_three_modes_vs_torch(program, data):
    tmodel, x, kind = program
    model = mg.from_torch(tmodel)
    with torch.no_grad():
        out = tmodel(torch.from_numpy(x)).numpy()
    assert_signal_close(model(x), out, "forward")
    n_classes = out.shape[1]
    targets = np.array(data.draw(st.lists(st.integers(0, n_classes - 1), min_size=len(x), max_size=len(x))))
    seed = np.zeros_like(out)
    seed[np.arange(len(x)), targets] = 1
    want = {"vanilla": autograd_signal(tmodel, x, seed)}
    for mode in ("guided", "deconvnet"):
        with every_relu(mode):
            want[mode] = autograd_signal(tmodel, x, seed)
    for mode in mg.MODES:
        assert_signal_close(mg.backprop(model, x, targets, mode), want[mode], mode)
    functional = any(getattr(layer, "functional", False) for _, layer in model.named_leaves())
    event(f"functional ReLUs: {functional}, kind {kind}")
    for mode, method in CAPTUM.items():
        theirs = method(tmodel).attribute(torch.tensor(x, requires_grad=True), target=torch.from_numpy(targets))
        assert_signal_close(mg.backprop(model, x, targets, mode, preset="captum"), theirs.detach().numpy(),
                            f"captum {mode}")


def test_shared_relu_module_and_functional_relu_names():
    """The naming rules on one small graph: a module called twice, functions by scope."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            h = self.relu(self.conv(x))
            return self.relu(h + x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Block()
            self.fc = nn.Linear(2, 3)

        def forward(self, x):
            x = F.relu(self.block(x))
            x = torch.relu(x)
            return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))

    model = mg.from_torch(Net())
    assert [(n.name, type(n.layer).__name__, n.inputs) for n in model.nodes] == [
        ("block.conv", "Conv2d", ("input",)), ("block.relu", "ReLU", ("block.conv",)),
        ("block.add", "Add", ("block.relu", "input")), ("block.relu@1", "ReLU", ("block.add",)),
        ("relu", "ReLU", ("block.relu@1",)), ("relu@1", "ReLU", ("relu",)),
        ("adaptive_avg_pool2d", "AdaptiveAvgPool2d", ("relu@1",)), ("flatten", "Flatten", ("adaptive_avg_pool2d",)),
        ("fc", "Linear", ("flatten",))]
    assert model["block.relu"] is model["block.relu@1"] and not model["block.relu"].functional
    assert model["relu"].functional and model["relu@1"].functional
    assert list(model.state_dict()) == ["block.conv.weight", "block.conv.bias", "fc.weight", "fc.bias"]
