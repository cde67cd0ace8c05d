"""Write the golden vectors in ``tests/golden/*.npz`` with torch + Captum as the oracle.

The golden files let a checkout *without torch* still test minigbp against PyTorch
(oracle 4 of DESIGN.md): ``tests/test_golden.py`` rebuilds each network from the
stored spec and weights and compares minigbp's logits and its three input signals
with the stored ones. This script is the only place that needs torch and Captum.

Regenerate (after changing a network below, or to re-check against a new torch)::

    cd /work/main            # the repository root
    python tests/make_golden.py            # writes tests/golden/*.npz
    python -m pytest tests/test_golden.py  # must pass

Requires ``torch`` and ``captum`` (the ``test`` extra). Everything is float64 and
deterministic (fixed seeds, CPU), so regenerating with the same torch reproduces the
files up to the last bits of float64 rounding; the test's tolerance is 1e-10.

Oracle for each mode, on the torch twin of the network built from the same spec
(minigbp's constructors take torch.nn's argument names, so one spec builds both):

* ``vanilla``   -- ``torch.autograd.grad`` of the target logits' sum;
* ``guided``    -- ``captum.attr.GuidedBackprop(net).attribute(x, target)``;
* ``deconvnet`` -- ``captum.attr.Deconvolution(net).attribute(x, target)``.

Each file holds (all arrays float64 unless noted):

``spec``            JSON string: ``{"model": <node>, "start": {...} or null, "oracle": {...}}``
                    with ``<node>`` = ``{"type": "Sequential", "children": [[name, <node>], ...]}``
                    or ``{"type": "Conv2d", "kwargs": {...}}`` (torch.nn's argument names)
``param/<key>``     every parameter, under its torch ``state_dict`` key
``x``               the input, integer-valued (so ReLU inputs of exactly 0 and tied maxima occur
                    in the integer-weight networks)
``target``          int64, one class per sample
``logits``          the torch output
``vanilla``, ``guided``, ``deconvnet``   the signals at the input
``start/<mode>``    (when ``spec["start"]`` is set) the signals when backprop starts at the
                    intermediate layer ``spec["start"]["layer"]`` with the integer channel target
                    ``spec["start"]["target"]`` (seed: 1 at every position of that channel; the
                    torch side sums the channel over space and takes that as the target logit)

Integer-weight networks use integers in [-1, 1] for weights and biases and in [-2, 2] for
the input: every forward value is then an exact small integer (or a dyadic fraction after
2x2 averaging), identical in torch and NumPy regardless of summation order, so ties and
zeros are the same on both sides. The script checks that they do occur.
"""

import json
import os
import sys
import warnings
from collections import OrderedDict

import numpy as np
import torch
from captum.attr import Deconvolution, GuidedBackprop
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "golden")


# ------------------------------------------------------------------ spec helpers

def leaf(kind, **kwargs):
    return {"type": kind, "kwargs": kwargs}


def seq(*children, **named):
    items = named.items() if named else ((str(i), c) for i, c in enumerate(children))
    return {"type": "Sequential", "children": [[n, c] for n, c in items]}


def build_torch(node):
    if node["type"] == "Sequential":
        return nn.Sequential(OrderedDict((n, build_torch(c)) for n, c in node["children"]))
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in node["kwargs"].items()}
    return getattr(nn, node["type"])(**kwargs)


class SpatialSum(nn.Module):
    """(N, C, H, W) -> (N, C): target channel c's logit is the channel's sum, so its seed is
    a 1 at every position of channel c -- minigbp's seed for an int target at a 4-D layer."""

    def forward(self, x):
        return x.sum(dim=(2, 3))


def truncate(net, dotted):
    """The torch prefix of ``net`` that ends with layer ``dotted`` (leaves in execution order)."""
    leaves = [(n, m) for n, m in net.named_modules() if len(list(m.children())) == 0]
    names = [n for n, _ in leaves]
    stop = max(i for i, n in enumerate(names) if n == dotted or n.startswith(dotted + "."))
    return nn.Sequential(*[m for _, m in leaves[:stop + 1]])


# ------------------------------------------------------------------ the networks

def networks():
    """(name, spec node, input shape, integer weights?, number of classes, start or None)."""
    ties_int = seq(
        leaf("Conv2d", in_channels=2, out_channels=4, kernel_size=3, padding=1), leaf("ReLU"),
        leaf("MaxPool2d", kernel_size=2),                                                       # 8 -> 4
        leaf("Conv2d", in_channels=4, out_channels=4, kernel_size=3, padding=1, groups=2), leaf("ReLU"),
        leaf("MaxPool2d", kernel_size=3, stride=2, padding=1, ceil_mode=True),                 # 4 -> 3, overlapping
        leaf("Flatten"), leaf("Linear", in_features=36, out_features=8), leaf("ReLU"),
        leaf("Linear", in_features=8, out_features=5),
    )
    avg_int = seq(
        features=seq(
            leaf("Conv2d", in_channels=1, out_channels=3, kernel_size=2, stride=1), leaf("ReLU"),   # 9 -> 8
            leaf("AvgPool2d", kernel_size=2),                                                        # 8 -> 4, /4 exact
            leaf("MaxPool2d", kernel_size=2, stride=1, dilation=2),                                  # 4 -> 2
            leaf("Conv2d", in_channels=3, out_channels=4, kernel_size=1), leaf("ReLU"),
        ),
        pool=leaf("AdaptiveAvgPool2d", output_size=[1, 2]),
        classifier=seq(leaf("Flatten"), leaf("Linear", in_features=8, out_features=4)),
    )
    float_nested = seq(
        features=seq(
            leaf("Conv2d", in_channels=3, out_channels=6, kernel_size=3, padding=1, groups=3), leaf("ReLU"),
            leaf("Conv2d", in_channels=6, out_channels=8, kernel_size=3, padding=2, dilation=2), leaf("ReLU"),
            leaf("MaxPool2d", kernel_size=2, stride=2),                                             # 10 -> 5
            leaf("Conv2d", in_channels=8, out_channels=8, kernel_size=1, bias=False), leaf("ReLU"),
            leaf("AvgPool2d", kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),  # 5 -> 3
        ),
        avgpool=leaf("AdaptiveAvgPool2d", output_size=2),
        classifier=seq(
            leaf("Flatten"), leaf("Dropout", p=0.5), leaf("Linear", in_features=32, out_features=16),
            leaf("ReLU"), leaf("Dropout", p=0.5), leaf("Linear", in_features=16, out_features=6),
        ),
    )
    return [
        ("ties_int", ties_int, (3, 2, 8, 8), True, 5, {"layer": "4", "target": 2}),
        ("avg_int", avg_int, (3, 1, 9, 9), True, 4, {"layer": "features.3", "target": 1}),
        ("float_nested", float_nested, (2, 3, 10, 10), False, 6, {"layer": "features.5", "target": 3}),
    ]


# ------------------------------------------------------------------ the oracle

def signals(net, x, target):
    """vanilla (autograd), guided and deconvnet (Captum) signals at the input, and the logits."""
    xt = torch.tensor(x, requires_grad=True)
    logits = net(xt)
    tt = torch.as_tensor(target)
    (vanilla,) = torch.autograd.grad(logits[torch.arange(len(x)), tt].sum(), xt)
    out = {"logits": logits.detach().numpy(), "vanilla": vanilla.numpy()}
    for mode, method in (("guided", GuidedBackprop), ("deconvnet", Deconvolution)):
        attr = method(net).attribute(torch.tensor(x), target=tt)
        out[mode] = attr.detach().numpy()
    return out


def relu_inputs_and_pool_ties(net, x):
    """Count exact zeros at ReLU inputs and max-pool windows with a tied maximum."""
    zeros, ties = 0, 0

    def relu_hook(module, inp, out):
        nonlocal zeros
        zeros += int((inp[0] == 0).sum())

    def pool_hook(module, inp, out):
        nonlocal ties
        k, s, p, d = (module.kernel_size, module.stride, module.padding, module.dilation)
        unfold = nn.functional.unfold(nn.functional.pad(inp[0], [p] * 4, value=-1e9), k, dilation=d, stride=s)
        n, ck, l = unfold.shape
        win = unfold.view(n, inp[0].shape[1], -1, l)
        top = win.max(dim=2, keepdim=True).values
        ties += int(((win == top).sum(dim=2) > 1).sum())

    hooks = [m.register_forward_hook(relu_hook) for m in net.modules() if isinstance(m, nn.ReLU)]
    hooks += [m.register_forward_hook(pool_hook) for m in net.modules()
              if isinstance(m, nn.MaxPool2d) and not m.ceil_mode]
    with torch.no_grad():
        net(torch.tensor(x))
    for h in hooks:
        h.remove()
    return zeros, ties


def make(name, spec, shape, integer, classes, start, seed):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_torch(spec).double().eval()
    if integer:
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.as_tensor(rng.integers(-1, 2, size=tuple(p.shape)), dtype=torch.float64))
    x = rng.integers(-2, 3, size=shape).astype(np.float64)
    target = rng.integers(0, classes, size=shape[0]).astype(np.int64)
    arrays = {"x": x, "target": target}
    arrays.update(signals(net, x, target))
    zeros, ties = relu_inputs_and_pool_ties(net, x)
    if integer:
        assert zeros > 0 and ties > 0, f"{name}: the integer network should meet zeros and ties ({zeros}, {ties})"
    for a, b in (("guided", "vanilla"), ("deconvnet", "vanilla"), ("guided", "deconvnet")):
        assert not np.array_equal(arrays[a], arrays[b]), f"{name}: {a} equals {b}: not a discriminating case"
    if start is not None:
        head = nn.Sequential(truncate(net, start["layer"]), SpatialSum()).eval()
        fixed = np.full(shape[0], start["target"], dtype=np.int64)
        for mode, value in signals(head, x, fixed).items():
            if mode != "logits":
                arrays[f"start/{mode}"] = value
    for key, value in net.state_dict().items():
        arrays[f"param/{key}"] = value.numpy()
    meta = {
        "name": name, "model": spec, "start": start,
        "oracle": {"torch": torch.__version__, "captum": __import__("captum").__version__,
                   "vanilla": "torch.autograd.grad", "guided": "captum.attr.GuidedBackprop",
                   "deconvnet": "captum.attr.Deconvolution", "seed": seed},
        "relu_zero_inputs": zeros, "tied_pool_windows": ties,
    }
    arrays["spec"] = np.array(json.dumps(meta))
    return arrays


def main():
    warnings.filterwarnings("ignore", module="captum")  # "setting backward hooks on ReLU", "requires_grad set"
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    total = 0
    for seed, (name, spec, shape, integer, classes, start) in enumerate(networks()):
        arrays = make(name, spec, shape, integer, classes, start, seed)
        path = os.path.join(OUT, f"{name}.npz")
        np.savez_compressed(path, **arrays)
        size = os.path.getsize(path)
        total += size
        meta = json.loads(str(arrays["spec"]))
        print(f"{path}: {size / 1024:.1f} KB, {meta['relu_zero_inputs']} zero ReLU inputs, "
              f"{meta['tied_pool_windows']} tied pool windows")
    assert total < 200 * 1024, f"golden files too big: {total} bytes"
    print(f"total {total / 1024:.1f} KB")


if __name__ == "__main__":
    sys.exit(main())
