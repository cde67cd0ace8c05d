"""The three backward modes (and Grad-CAM) on shipped held-out digits, side by side.

    python examples/digits_three_modes.py                      # writes examples/out/digits/
    python examples/digits_three_modes.py --indices 0 5 9 --out /tmp/digits

Runs offline in a few seconds: the model is ``minigbp.zoo.digits()`` (a small CNN trained on
scikit-learn's 8x8 digits, upsampled to 32x32) and the digits come from
``minigbp.zoo.digits_test_data()``, the held-out split the model never saw in training.

What you see
------------
One row per digit, six columns:

``input``
    the 32x32 network input (the 8x8 digit, bilinearly upsampled).
``vanilla``
    the gradient d(logit_c)/d(input) (Simonyan et al. 2013). Signed and speckled: pixels
    where more ink would raise the score are bright, pixels where it would lower the score
    are dark, and the background is mid-gray (zero) with the default ``--norm symmetric``.
``deconvnet``
    Zeiler & Fergus 2013. It ignores which ReLUs were active in the forward pass, so it
    shows what the *filters* respond to more than where this digit's ink is.
``guided``
    guided backpropagation (Springenberg et al. 2014): the strokes of the digit that
    support the class, crisp and with little background noise.
``Grad-CAM``
    Selvaraju et al. 2017, a coarse heat map (here at the 8x8 resolution of the last
    convolution, upsampled) drawn over the input: *where* the evidence is.
``guided Grad-CAM``
    guided backpropagation times the Grad-CAM map: fine detail, only where Grad-CAM says.

Each map explains the model's predicted class (``--target pred``, the default) or the true
label (``--target label``).

The equations
-------------
The seed is a one-hot 1 at the target logit ``c`` (not the logit's value, not a softmax
probability), and it travels back through the network layer by layer. Convolutions send
the signal through their transposed filters, max pooling routes it to the position that
won the forward max, linear layers multiply by ``W^T``, in every mode. Only the ReLUs,
``f = max(x, 0)``, differ: with ``R`` the signal arriving from above,

=============  ==============================  ===========================================
mode           signal sent down                in words
=============  ==============================  ===========================================
vanilla        ``R * [x > 0]``                 the chain rule (the true gradient)
deconvnet      ``R * [R > 0]``                 keep only positive signal, ignore ``x``
guided         ``R * [x > 0] * [R > 0]``       both masks: active units, positive signal
=============  ==============================  ===========================================

Grad-CAM: with ``A`` the activations of the last convolutional ReLU (``features.7`` here,
shape (K, h, w)) and ``G = d(logit_c)/dA`` (vanilla), ``alpha_k = mean_{i,j} G[k, i, j]``
and ``cam = ReLU(sum_k alpha_k A[k])``, bilinearly upsampled to 32x32.
Guided Grad-CAM: ``guided * cam``, pixel by pixel.

Files written to ``--out``
--------------------------
* ``digit-<i>_<method>.png`` for method in input, vanilla, deconvnet, guided, gradcam,
  guided-gradcam: each panel on its own, ``32 * --scale`` pixels square (``<i>`` is the
  index in the held-out split);
* ``digit-<i>_comparison.png``: the six panels of one digit in a row, with titles;
* ``digits_grid.png``: the grid, rows = digits, columns = the six panels;
* ``digits_maps.npz``: the raw signed signals (before any display normalization) with keys
  ``x``, ``indices``, ``labels``, ``predictions``, ``targets``, ``vanilla``, ``deconvnet``,
  ``guided`` (N, 1, 32, 32), ``gradcam`` (N, 1, 32, 32), ``guided_gradcam``.
"""

import argparse
import os
import sys

import numpy as np

import minigbp as mg
from minigbp import explain as E
from minigbp import visualize as V
from minigbp.io.image import get_preprocessing

METHODS = ("vanilla", "deconvnet", "guided", "gradcam", "guided-gradcam")
TITLES = {"input": "input", "vanilla": "vanilla", "deconvnet": "deconvnet", "guided": "guided",
          "gradcam": "Grad-CAM", "guided-gradcam": "guided Grad-CAM"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the module docstring for what the pictures show.")
    p.add_argument("--out", default=os.path.join("examples", "out", "digits"), metavar="DIR",
                   help="output directory, created if needed (default: examples/out/digits)")
    p.add_argument("--indices", type=int, nargs="+", metavar="I",
                   help="indices into the held-out split (default: the first example of --count "
                        "different digits, 0, 1, 2, ...)")
    p.add_argument("--count", type=int, default=4, metavar="N",
                   help="how many digits when --indices is not given (default 4)")
    p.add_argument("--target", choices=("pred", "label"), default="pred",
                   help="explain the predicted class (default) or the true label")
    p.add_argument("--norm", choices=V.NORMALIZATIONS, default="symmetric",
                   help="display normalization of the signed maps (default symmetric: zero is mid-gray)")
    p.add_argument("--scale", type=int, default=8,
                   help="pixel repetition of the single-panel PNGs (default 8: 256x256)")
    p.add_argument("--panel-size", type=float, default=2.0, metavar="INCHES",
                   help="size of one panel in the figures, at 100 dpi (default 2.0)")
    return p.parse_args(argv)


def pick_indices(labels, count):
    """The first held-out example of digit 0, of digit 1, ... (``count`` of them)."""
    if not 1 <= count <= 10:
        raise SystemExit(f"--count must be between 1 and 10, got {count}")
    return [int(np.flatnonzero(labels == d)[0]) for d in range(count)]


def grid_figure(rows, path, panel_size):
    """Save rows of panels: ``rows`` is a list of ``(row_label, [(title, image), ...])``.

    matplotlib's object API (Figure + FigureCanvasAgg), as :mod:`minigbp.visualize` uses:
    no global pyplot state. The PNG is ``100 * panel_size * columns`` pixels wide and
    ``100 * (panel_size * rows + 0.4)`` high.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_rows, n_cols = len(rows), len(rows[0][1])
    fig = Figure(figsize=(panel_size * n_cols, panel_size * n_rows + 0.4))
    FigureCanvasAgg(fig)
    for r, (label, panels) in enumerate(rows):
        for c, (title, img) in enumerate(panels):
            ax = fig.add_subplot(n_rows, n_cols, r * n_cols + c + 1)
            img = np.clip(np.asarray(img, dtype=np.float64), 0, 1)
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=10)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=100)
    return path


def main(argv=None):
    args = parse_args(argv)
    model = mg.zoo.digits()
    images, labels = mg.zoo.digits_test_data()
    indices = args.indices if args.indices else pick_indices(labels, args.count)
    bad = [i for i in indices if not 0 <= i < len(images)]
    if bad:
        raise SystemExit(f"--indices {bad}: the held-out split has {len(images)} digits (0..{len(images) - 1})")
    os.makedirs(args.out, exist_ok=True)
    preprocessing = get_preprocessing("digits")

    x = mg.zoo.digits_preprocess(images[indices])  # (N, 1, 32, 32) float32
    logits = model(x)  # (N, 10)
    preds = logits.argmax(axis=1)
    targets = preds if args.target == "pred" else labels[indices]

    # The raw signals. The three modes: one backward pass for the whole batch, each sample
    # seeded with a one-hot 1 at its own target logit.
    maps = {m: mg.backprop(model, x, targets, mode=m) for m in ("vanilla", "deconvnet", "guided")}
    # Grad-CAM explains one class per call: loop over the digits.
    for m in ("gradcam", "guided-gradcam"):
        maps[m] = np.concatenate([E.attribute(model, x[n:n + 1], int(targets[n]), m)
                                  for n in range(len(indices))])

    written, rows = [], []
    for n, i in enumerate(indices):
        stem = f"digit-{i}"
        image = preprocessing.deprocess(x[n])  # (32, 32, 3) in [0, 1]
        panels = [("input", image)]
        for m in METHODS:
            if m == "gradcam":
                picture = V.overlay(image, V.normalize(maps[m][n, 0], "minmax"))
            else:
                picture = V.to_display(maps[m][n], args.norm)
            panels.append((TITLES[m], picture))
        for key, (_, picture) in zip(("input",) + METHODS, panels):
            path = os.path.join(args.out, f"{stem}_{key}.png")
            V.save_png(picture, path, scale=args.scale)
            written.append(path)
        title = f"held-out digit #{i}: label {labels[i]}, predicted {preds[n]}, explaining class {targets[n]}"
        path = os.path.join(args.out, f"{stem}_comparison.png")
        V.comparison_figure(panels, path, title=title, panel_size=args.panel_size)
        written.append(path)
        rows.append((f"#{i}: label {labels[i]}\npred {preds[n]}", panels))
        print(f"digit #{i}: label {labels[i]}, predicted {preds[n]} (logit {logits[n, preds[n]]:.2f}), "
              f"explaining class {targets[n]}")

    path = os.path.join(args.out, "digits_grid.png")
    grid_figure(rows, path, args.panel_size)
    written.append(path)
    path = os.path.join(args.out, "digits_maps.npz")
    np.savez_compressed(path, x=x, indices=np.array(indices), labels=labels[indices], predictions=preds,
                        targets=np.asarray(targets), **{m.replace("-", "_"): maps[m] for m in METHODS})
    written.append(path)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
