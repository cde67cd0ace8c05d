"""minigbp against stored torch/Captum results (oracle 4 of DESIGN.md). No torch needed.

``tests/golden/*.npz`` were written by ``tests/make_golden.py`` (see its docstring for the
file layout and how to regenerate). Each holds a network spec, its weights under torch's
``state_dict`` keys, an integer-valued input, targets, and torch's logits plus the vanilla
(autograd), guided (Captum GuidedBackprop) and deconvnet (Captum Deconvolution) signals.

Tolerance: 1e-10 relative to the largest stored value of each array. Both sides compute
in float64 and differ only in summation order (~1e-16 relative per value), so 1e-10 leaves
a wide margin yet catches any wrong routing, mask or index. The integer-weight networks
are computed exactly on both sides (all values small integers or dyadic fractions), so
for them the comparison is exact equality, in float64 and in float32.

This module must not import torch or captum: a checkout without them still runs it.
"""

import ast
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import minigbp as mg

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden")
FILES = sorted(glob.glob(os.path.join(GOLDEN, "*.npz")))
NAMES = [os.path.splitext(os.path.basename(f))[0] for f in FILES]
RTOL = 1e-10


def build(node):
    """A minigbp model from a spec node (torch.nn argument names, which minigbp shares)."""
    if node["type"] == "Sequential":
        return mg.Sequential(**{name: build(child) for name, child in node["children"]})
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in node["kwargs"].items()}
    return getattr(mg, node["type"])(**kwargs)


def load(name):
    """``(model, arrays, meta)`` for golden file ``name``; weights loaded strictly."""
    with np.load(os.path.join(GOLDEN, name + ".npz"), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("spec")))
    model = build(meta["model"])
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    model.load_state_dict(params)  # strict: the spec's names are exactly torch's keys
    return model, arrays, meta


def is_integer_net(arrays):
    return all(np.array_equal(v, np.round(v)) for k, v in arrays.items() if k.startswith("param/"))


def assert_matches(got, want, what, exact=False):
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    if exact:
        assert np.array_equal(got, want), f"{what}: not exactly equal, max diff {np.abs(got - want).max()}"
        return
    scale = np.abs(want).max()
    assert scale > 0, f"{what}: the stored signal is all zeros, it tests nothing"
    err = np.abs(got.astype(np.float64) - want).max()
    assert err <= RTOL * scale, f"{what}: max |diff| {err:.3g} > {RTOL} * {scale:.3g}"


def check_file(name):
    """Every comparison for one golden file (also run by the no-torch subprocess test)."""
    model, arrays, meta = load(name)
    x, target = arrays["x"], arrays["target"]
    exact = is_integer_net(arrays)
    assert_matches(model(x), arrays["logits"], f"{name} logits", exact)
    for mode in mg.MODES:
        assert_matches(mg.backprop(model, x, target, mode=mode), arrays[mode], f"{name} {mode}", exact)
    start = meta.get("start")
    if start:
        for mode in mg.MODES:
            got = mg.backprop(model, x, start["target"], mode=mode, layer=start["layer"])
            assert_matches(got, arrays[f"start/{mode}"], f"{name} {mode} from {start['layer']}", exact)


def test_golden_files_present_and_small():
    assert {"ties_int", "avg_int", "float_nested"} <= set(NAMES), f"missing golden files in {GOLDEN}"
    total = sum(os.path.getsize(f) for f in FILES)
    assert total < 200 * 1024, f"golden files take {total} bytes"


@pytest.mark.parametrize("name", NAMES)
def test_logits_and_three_signals_match_torch(name):
    check_file(name)


@pytest.mark.parametrize("name", NAMES)
def test_float32_run_matches(name):
    model, arrays, meta = load(name)
    x = arrays["x"].astype(np.float32)
    exact = is_integer_net(arrays)  # small integers and /4 are exact in float32 too
    for mode in mg.MODES:
        got = mg.backprop(model, x, arrays["target"], mode=mode)
        assert got.dtype == np.float32
        if exact:
            assert np.array_equal(got, arrays[mode]), mode
        else:
            assert np.allclose(got, arrays[mode], rtol=0, atol=1e-5 * np.abs(arrays[mode]).max()), mode


@pytest.mark.parametrize("name", NAMES)
def test_golden_cases_discriminate(name):
    """The stored cases would expose a wrong rule: modes differ, and the integer networks
    really contain ReLU inputs of exactly 0 and tied maxima (both as recorded by torch
    and as seen by minigbp's own forward pass)."""
    model, arrays, meta = load(name)
    for a, b in (("vanilla", "guided"), ("vanilla", "deconvnet"), ("guided", "deconvnet")):
        assert not np.array_equal(arrays[a], arrays[b]), f"{a} == {b}"
    assert meta["oracle"]["guided"] == "captum.attr.GuidedBackprop"
    assert meta["oracle"]["deconvnet"] == "captum.attr.Deconvolution"
    assert np.array_equal(arrays["x"], np.round(arrays["x"]))  # integer-valued input
    if is_integer_net(arrays):
        assert meta["relu_zero_inputs"] > 0 and meta["tied_pool_windows"] > 0
        _, tape = model.forward(arrays["x"])
        zeros = sum(int((cache == 0).sum()) for _, layer, cache in tape if isinstance(layer, mg.ReLU))
        assert zeros == meta["relu_zero_inputs"]


def test_integer_target_equals_one_hot_seed():
    model, arrays, _ = load("ties_int")
    x, target = arrays["x"], arrays["target"]
    seed = np.zeros_like(arrays["logits"])
    seed[np.arange(len(x)), target] = 1
    for mode in mg.MODES:
        assert np.array_equal(mg.backprop(model, x, seed, mode=mode), arrays[mode])


def test_this_module_imports_neither_torch_nor_captum():
    tree = ast.parse(open(__file__).read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"torch", "captum", "torchvision"}, imported


def test_runs_without_torch():
    """Run every golden check in a fresh interpreter in which importing torch fails."""
    code = (
        "import sys\n"
        "sys.modules['torch'] = None; sys.modules['captum'] = None\n"
        f"sys.path.insert(0, {HERE!r})\n"
        "import test_golden as t\n"
        "for name in t.NAMES: t.check_file(name)\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
        "print(len(t.NAMES))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) == len(NAMES)
