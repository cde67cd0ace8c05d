"""Study line by line: one small input through a tiny network, backwards in all three modes.

    python examples/walkthrough.py                  # prints everything, writes examples/out/walkthrough/

The network and the input are small enough to follow with pencil and paper, and every number
is an integer (integer weights, integer pixels, no bias fractions), so every printed value is
exact and the checks at the end compare with ``==``, not with a tolerance::

    input (1, 1, 6, 6)  values 0..3
    conv1  Conv2d(1, 2, 3, padding=1)   -> (1, 2, 6, 6)   weights in {-1, 0, 1}, biases 0 and -1
    relu1  ReLU                          -> (1, 2, 6, 6)
    pool   MaxPool2d(2)                  -> (1, 2, 3, 3)
    conv2  Conv2d(2, 2, 2)               -> (1, 2, 2, 2)   weights in {-1, 0, 1}, biases -1
    relu2  ReLU                          -> (1, 2, 2, 2)
    flat   Flatten                       -> (1, 8)
    fc     Linear(8, 3)                  -> (1, 3)         three "classes"

The values were chosen (and the script asserts it) so that every case where the modes part
ways actually happens:

* conv1 outputs exact zeros, ``x == 0``, where a ReLU's gradient is taken to be 0;
* one pooling window holds two equal positive maxima (a tie: the first in row-major
  order wins, as in PyTorch, and the backward routes the signal there only);
* a whole pooling window is <= 0 before the ReLU, so after it the window is all zeros: its
  "winner" is a unit that was *off*, and only the deconvnet lets signal through it;
* negative signal ``R < 0`` arrives at units that were on (``x > 0``): vanilla passes it,
  guided blocks it.

What is printed
---------------
1. Every layer: its dotted name, type, input shape and output shape (a forward pass).
2. The forward values that matter: the input, conv1's output (relu1's input ``x``), the
   pooling windows with ties, relu2's input and the logits.
3. For each mode, the backward pass, written out as the loop it is::

       dout = seed                                       # one-hot 1 at the target logit
       for name, layer, cache in reversed(tape):
           dout = layer.backward(dout, cache, mode)

   with the signal ``R`` arriving at each ReLU and the signal it sends down, as arrays
   (batch axis dropped), and a count of the positions where the three rules disagree.
4. The signal at the input in the three modes, checked to be exactly ``mg.backprop``'s.

The equations
-------------
Forward at a ReLU: ``f = max(x, 0)``. Backward, with ``R`` the signal from above and
``[.]`` = 1 where the condition holds, 0 elsewhere:

    vanilla    R * [x > 0]             the chain rule; [x > 0] is f'(x), 0 at x == 0
    deconvnet  R * [R > 0]             Zeiler & Fergus: x is ignored, negative signal dropped
    guided     R * [x > 0] * [R > 0]   Springenberg et al.: both masks

Every other layer does the same in all modes: ``fc`` sends ``R @ W`` (``W^T`` applied to the
signal), ``flat`` reshapes, ``conv`` sends R through the transposed (full) convolution,
``pool`` gives each window's R to the position that won the forward max (the "switch").
The modes therefore differ only at ReLUs, but the difference compounds: what reaches
``relu1`` already depends on what ``relu2`` let through.

Files written to ``--out``: ``walkthrough_signals.npz`` (the input, the logits, and per mode
the signal arriving at and leaving each ReLU and the signal at the input) and
``walkthrough_input_signals.png`` (the input and the three input signals, zero = mid-gray).
"""

import argparse
import os
import sys

import numpy as np

import minigbp as mg
from minigbp import visualize as V

# ------------------------------------------------------------------------ the data

X = np.array([[1, 2, 3, 3, 0, 0],
              [3, 3, 0, 1, 3, 1],
              [1, 3, 1, 1, 2, 2],
              [0, 0, 3, 3, 3, 2],
              [3, 1, 1, 3, 0, 1],
              [0, 1, 3, 0, 1, 1]], dtype=np.float64)[None, None]  # (N=1, C=1, H=6, W=6)

WEIGHTS = {
    "conv1.weight": np.array([[[[1, -1, 0],
                                [-1, -1, 1],
                                [-1, -1, 0]]],
                              [[[0, -1, 1],
                                [1, 1, -1],
                                [1, -1, 0]]]], dtype=np.float64),  # (F=2, C=1, 3, 3), OIHW
    "conv1.bias": np.array([0, -1], dtype=np.float64),
    "conv2.weight": np.array([[[[1, -1], [-1, 1]],
                               [[0, 0], [-1, -1]]],
                              [[[0, 0], [0, 1]],
                               [[0, 0], [1, 1]]]], dtype=np.float64),  # (2, 2, 2, 2)
    "conv2.bias": np.array([-1, -1], dtype=np.float64),
    "fc.weight": np.array([[1, 0, 1, 0, 0, -1, 0, 0],
                           [1, 1, -1, 0, 1, -1, 0, 1],
                           [0, 0, 1, 0, 1, 1, -1, -1]], dtype=np.float64),  # (out=3, in=8)
    "fc.bias": np.zeros(3),
}


def build_model():
    """The tiny network, with named layers so the tape reads like the table in the docstring."""
    model = mg.Sequential(
        conv1=mg.Conv2d(1, 2, kernel_size=3, padding=1), relu1=mg.ReLU(), pool=mg.MaxPool2d(2),
        conv2=mg.Conv2d(2, 2, kernel_size=2), relu2=mg.ReLU(),
        flat=mg.Flatten(), fc=mg.Linear(8, 3),
    )
    model.load_state_dict(WEIGHTS)  # strict: every key, shape and dtype is checked
    return model


# ------------------------------------------------------------------------ printing

def show(a, indent=6):
    """A small integer-valued array as text (batch axis dropped, -0 printed as 0)."""
    a = np.asarray(a)
    a = a[0] if a.ndim > 1 and a.shape[0] == 1 else a
    text = np.array2string(a + 0.0, separator=" ", formatter={"float_kind": lambda v: f"{v + 0.0:g}"})
    return "\n".join(" " * indent + line for line in text.splitlines())


def pool_ties(x_pool_in, k=2):
    """Windows of a k x k, stride-k max pooling whose maximum occurs more than once.

    Returns ``[(channel, row, col, window, first_winner), ...]`` with ``row, col`` the
    window's top-left corner and ``first_winner`` the (row, col) that PyTorch (and minigbp)
    picks: the first maximum in row-major order.
    """
    out = []
    _, C, H, W = x_pool_in.shape
    for c in range(C):
        for i in range(0, H - k + 1, k):
            for j in range(0, W - k + 1, k):
                win = x_pool_in[0, c, i:i + k, j:j + k]
                if (win == win.max()).sum() > 1:
                    r, s = np.unravel_index(np.argmax(win), win.shape)  # argmax: first maximum
                    out.append((c, i, j, win, (i + r, j + s)))
    return out


RULES = {"vanilla": "R * [x > 0]", "deconvnet": "R * [R > 0]", "guided": "R * [x > 0] * [R > 0]"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join("examples", "out", "walkthrough"), metavar="DIR",
                   help="output directory, created if needed (default: examples/out/walkthrough)")
    p.add_argument("--scale", type=int, default=32, help="pixel repetition in the PNG panels (default 32)")
    args = p.parse_args(argv)

    model = build_model()

    # ------------------------------------------------------------ 1. the layers
    out, tape = model.forward(X)  # tape: [(name, layer, cache), ...], one entry per layer run
    print("1. The network (one forward pass; the tape records each layer's cache)\n")
    print(f"   {'name':6} {'type':10} {'input shape':14} {'output shape':14} layer")
    shape_in = X.shape
    for (name, layer, _), (shape_out, _) in zip(tape, tape.outputs):
        print(f"   {name:6} {type(layer).__name__:10} {str(shape_in):14} {str(shape_out):14} {layer!r}")
        shape_in = shape_out

    # ------------------------------------------------------------ 2. forward values
    caches = {name: cache for name, _, cache in tape}
    x1 = caches["relu1"]  # a ReLU's cache is its input x
    x2 = caches["relu2"]
    relu1_out = model["relu1"](x1)
    print("\n2. Forward values\n")
    print("   input x (6x6):")
    print(show(X[0]))
    print("\n   conv1 output = relu1's input x1 (2 channels of 6x6):")
    print(show(x1))
    print(f"   x1 == 0 at {int((x1 == 0).sum())} positions, x1 < 0 at {int((x1 < 0).sum())}, "
          f"x1 > 0 at {int((x1 > 0).sum())}")
    ties = pool_ties(relu1_out)
    print("\n   pool windows (after relu1) whose maximum occurs more than once; the switch, the")
    print("   position the backward pass routes the window's signal to, is the first maximum in")
    print("   row-major order (PyTorch's rule):")
    for c, i, j, win, winner in ties:
        if win.max() > 0:
            print(f"     channel {c}, rows {i}-{i + 1}, cols {j}-{j + 1}: {win.astype(int).tolist()}, "
                  f"tie of {win.max():g}s; switch at row {winner[0]}, col {winner[1]}")
    zero = [(c, i, j, w) for c, i, j, win, w in ties if win.max() == 0]
    print(f"     ... and {len(zero)} windows that are all 0 (every unit off): their switch is the "
          f"window's top-left unit, e.g. channel {zero[0][0]}, row {zero[0][3][0]}, col {zero[0][3][1]}")
    print("\n   relu2's input x2 (2 channels of 2x2):")
    print(show(x2))
    print("\n   logits:", show(out, indent=0))
    target = int(np.argmax(out[0]))
    print(f"   target: class {target} (the top-1); seed = one-hot 1 at logit {target}")

    # The input was chosen so that every case where the modes differ occurs (asserted, not hoped):
    assert (x1 == 0).any(), "expected exact zeros at relu1's input"
    assert zero, "expected an all-zero pooling window"
    assert (x2 > 0).any() and (x2 <= 0).any(), "expected relu2 to have units on and off"

    # ------------------------------------------------------------ 3. backward, per mode
    seed = np.zeros_like(out)
    seed[0, target] = 1.0
    saved = {"x": X, "logits": out}
    finals = {}
    routed_ties = set()  # modes in which a tie of positive maxima receives signal
    cases = {}  # (mode, relu name) -> (# x > 0 & R < 0, # x <= 0 & R > 0, # x == 0 & R > 0)
    for mode in mg.MODES:
        print(f"\n3. Backward in mode {mode!r}: at every ReLU the signal sent down is {RULES[mode]}\n")
        dout = seed
        for name, layer, cache in reversed(tape):
            arriving = dout
            dout = layer.backward(dout, cache, mode)  # <- the whole backward pass is this line
            if not isinstance(layer, mg.ReLU):
                print(f"   {name:6} {type(layer).__name__:10} signal {arriving.shape} -> {dout.shape}"
                      f"   (same rule in every mode)")
                if isinstance(layer, mg.MaxPool2d):
                    for c, i, j, win, (r, s) in ties:
                        if win.max() > 0 and arriving[0, c, i // 2, j // 2] != 0:
                            routed_ties.add(mode)
                            print(f"     the tied window (channel {c}, rows {i}-{i + 1}, cols {j}-{j + 1}) "
                                  f"receives {arriving[0, c, i // 2, j // 2]:g}: all of it goes to its "
                                  f"switch, row {r}, col {s}")
                continue
            x = cache  # the ReLU's forward input
            R = arriving
            print(f"   {name:6} ReLU       signal {R.shape} -> {dout.shape}")
            print("     R arriving from above:")
            print(show(R))
            print(f"     sent down, {RULES[mode]}:")
            print(show(dout))
            # Where the three rules disagree (R != 0 only: a zero signal stays zero in every mode):
            #   x > 0, R < 0   vanilla passes R, deconvnet and guided block it (they keep R > 0 only)
            #   x <= 0, R > 0  deconvnet passes R (it ignores x), vanilla and guided block it;
            #                  x == 0 belongs here: f'(0) is taken to be 0, like PyTorch
            #   x <= 0, R < 0  vanilla and guided block it for the [x > 0] mask, deconvnet for R < 0
            on_neg = int(((x > 0) & (R < 0)).sum())
            off_pos = int(((x <= 0) & (R > 0)).sum())
            zero_pos = int(((x == 0) & (R > 0)).sum())
            print(f"     R < 0 at units that were on (x > 0): {on_neg} (vanilla passes, deconvnet and guided block)")
            print(f"     R > 0 at units that were off (x <= 0): {off_pos}, of which {zero_pos} at x == 0 "
                  f"(deconvnet passes, vanilla and guided block)")
            cases[mode, name] = (on_neg, off_pos, zero_pos)
            saved[f"{mode}_{name}_arriving"] = R
            saved[f"{mode}_{name}_sent"] = dout
        finals[mode] = dout
        saved[f"{mode}_input_signal"] = dout
        print("\n   signal at the input (6x6):")
        print(show(dout[0]))

        # The loop above is exactly what mg.backprop does: integer arithmetic, so exactly equal.
        reference = mg.backprop(model, X, target, mode=mode)
        assert np.array_equal(dout, reference), f"{mode}: walkthrough differs from mg.backprop"
        print(f"   == mg.backprop(model, x, {target}, mode={mode!r}): checked")

    # Every case where the rules disagree occurred (see the module docstring):
    assert routed_ties, "expected signal through a tie of positive maxima"
    assert any(c[0] for (m, _), c in cases.items() if m == "vanilla"), "expected R < 0 at an active unit"
    assert any(c[2] for c in cases.values()), "expected R > 0 at a unit with x == 0"
    assert cases["deconvnet", "relu1"][1], "expected deconvnet signal through an all-zero window"
    # The three modes give three different answers on this input:
    for a, b in (("vanilla", "deconvnet"), ("vanilla", "guided"), ("deconvnet", "guided")):
        assert not np.array_equal(finals[a], finals[b]), f"{a} and {b} should differ here"

    # ------------------------------------------------------------ 4. files
    os.makedirs(args.out, exist_ok=True)
    path_npz = os.path.join(args.out, "walkthrough_signals.npz")
    np.savez(path_npz, **saved)
    panels = [("input", V.normalize(X[0, 0], "minmax"))]
    panels += [(m, V.to_display(finals[m][0], "symmetric")) for m in mg.MODES]
    path_png = os.path.join(args.out, "walkthrough_input_signals.png")
    V.comparison_figure([(t, img.repeat(args.scale, 0).repeat(args.scale, 1)) for t, img in panels], path_png,
                        title=f"signal at the input for class {target} (zero = mid-gray)")
    print("\n4. All checks passed: the walkthrough equals mg.backprop in all three modes, and the modes differ.")
    print(f"wrote {path_npz}")
    print(f"wrote {path_png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
