"""Adebayo et al.'s sanity check: do the maps change when the network's weights are destroyed?

    python examples/sanity_check.py                  # 10 held-out digits, seed 0, examples/out/sanity/
    python examples/sanity_check.py --count 3 --random-state 1 --out /tmp/sanity

Adebayo et al. (2018, "Sanity Checks for Saliency Maps") ask of an explanation method: if the
map is supposed to explain what the *model* learned, it must change when the model's learned
weights are replaced by random ones. Their *cascading randomization* destroys the layers one at
a time from the output towards the input, keeping the earlier randomizations, and compares each
map with the original one. This script runs that test on the shipped digits model
(``minigbp.zoo.digits()``) with ``minigbp.explain.cascading_randomization``.

What you see
------------
A table, one row per step: which layer was just randomized, and for each mode the Spearman rank
correlation between the map of the damaged model and the map of the trained one, averaged over
the digits. The first row, ``(none)``, is the trained model itself: correlation 1 (the script
measures it on an untouched copy and checks that it is exactly 1.0).

Adebayo et al.'s finding holds on this small model too. With the defaults (10 digits, random state 0)
the vanilla gradient's correlation falls to 0.51 as soon as the last layer is randomized and
keeps falling (0.15 with every layer random); guided backpropagation stays at 0.84 after the
last layer, still 0.66 with only the first convolution left trained, and 0.42 with nothing
trained at all: its maps depend mostly on the input and the lower layers, not on what the
classifier learned. Deconvnet sits in between. The figure shows it: rows are the steps, columns
the modes; the guided maps keep drawing the digit's strokes. (Other random states and 100 digits give
the same picture within a few hundredths, except the last row, which varies more.)

The equations
-------------
Each map is ``m = max_c |s_c|`` of the signal ``s`` at the input (vanilla: ``R * [x > 0]`` at the
ReLUs; deconvnet: ``R * [R > 0]``; guided: ``R * [x > 0] * [R > 0]``; seed: a one-hot 1 at the
class predicted by the *trained* model, kept fixed through the steps). Layer ``l`` is randomized
with PyTorch's default initialization, ``W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))``. Spearman's
correlation of two maps ``a`` and ``b`` (1024 pixels each) is the Pearson correlation of their
ranks (ties share their mean rank):

    rho(a, b) = sum_i (r_i - mean r)(q_i - mean q) / sqrt(sum_i (r_i - mean r)^2 sum_i (q_i - mean q)^2)

with ``r = rank(a)``, ``q = rank(b)``. It is 1 when the two maps order the pixels identically.

Files written to ``--out``
--------------------------
* ``sanity_maps.png``: rows = steps (``(none)``, then each randomized layer), columns = input
  (first row only), vanilla, deconvnet, guided; ``max_c |signal|`` of one digit (``--show``),
  each panel min-max normalized, with that digit's own correlation in the title (the table
  averages over all N digits);
* ``sanity_table.md``: the table as Markdown (for the README);
* ``sanity.npz``: ``layers`` (the step names), ``modes``, ``table`` (steps, modes) mean
  correlations, ``per_digit`` (steps, modes, N), ``indices``, ``random_state``, and ``maps_<mode>``
  (steps, N, 32, 32).
"""

import argparse
import copy
import os
import sys

import numpy as np

import minigbp as mg
from minigbp import explain as E
from minigbp import visualize as V
from minigbp.io.image import get_preprocessing

MODES = ("vanilla", "deconvnet", "guided")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join("examples", "out", "sanity"), metavar="DIR",
                   help="output directory, created if needed (default: examples/out/sanity)")
    p.add_argument("--count", type=int, default=10, metavar="N",
                   help="number of held-out digits: the first example of digit 0, 1, ... (N <= 10), "
                        "or the first N of the split when N > 10 (default 10)")
    p.add_argument("--random-state", type=int, default=0,
                   help="seed of the random generator of the re-initializations (default 0)")
    p.add_argument("--show", type=int, default=0, metavar="K",
                   help="which of the N digits the figure shows (default 0, the first)")
    p.add_argument("--panel-size", type=float, default=1.6, metavar="INCHES",
                   help="size of one panel of the figure, at 100 dpi (default 1.6)")
    return p.parse_args(argv)


def pick_indices(labels, count):
    """One example of each digit (0, 1, ...) for count <= 10, else the first ``count`` digits."""
    if count < 1 or count > len(labels):
        raise SystemExit(f"--count must be between 1 and {len(labels)}, got {count}")
    if count <= 10:
        return [int(np.flatnonzero(labels == d)[0]) for d in range(count)]
    return list(range(count))


def saliency(model, x, classes):
    """``max_c |signal|`` per mode, (N, H, W): what cascading_randomization compares."""
    return {m: np.abs(mg.backprop(model, x, classes, mode=m)).max(axis=1) for m in MODES}


def randomized_steps(model, x, classes, random_state):
    """The maps after each step of the cascade, step by step, as the API does it.

    Mirrors ``minigbp.explain.cascading_randomization`` (same order, same initialization,
    same random numbers) so the figure shows the maps behind the table; ``main`` checks that
    both give the same correlations. Returns ``[(layer name, maps), ...]``, first ``"(none)"``
    with the maps of an untouched copy of the model.
    """
    work = copy.deepcopy(model)
    steps = [("(none)", saliency(work, x, classes))]
    rng = np.random.default_rng(random_state)
    layers = [(name, layer) for name, layer in work.unique_leaves() if layer.named_parameters()]
    for name, layer in reversed(layers):  # from the output towards the input
        layer.reset_parameters(rng)  # PyTorch's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        steps.append((name, saliency(work, x, classes)))
    return steps


def figure(steps, rho, image, k, path, panel_size):
    """rows = steps, columns = input (first row) + modes; matplotlib's object API.

    ``rho``: (steps, modes) correlations of the digit shown, ``k``: its position in the batch.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_rows, n_cols = len(steps), len(MODES) + 1
    fig = Figure(figsize=(panel_size * n_cols, panel_size * n_rows + 0.5))
    FigureCanvasAgg(fig)
    for r, (name, maps) in enumerate(steps):
        for c in range(n_cols):
            ax = fig.add_subplot(n_rows, n_cols, r * n_cols + c + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                if r == 0:
                    ax.imshow(image, vmin=0, vmax=1, interpolation="nearest")
                    ax.set_title("input", fontsize=9)
                else:
                    for spine in ax.spines.values():
                        spine.set_visible(False)
                ax.set_ylabel("trained" if name == "(none)" else f"+ {name}", fontsize=9)
                continue
            mode = MODES[c - 1]
            ax.imshow(V.normalize(maps[mode][k], "minmax"), cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_title(f"{mode}  rho={rho[r, c - 1]:.2f}", fontsize=8)
    fig.suptitle("cascading randomization (top to bottom: layers randomized from the output)", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=100)
    return path


def markdown_table(names, table, n, random_state):
    lines = [f"Cascading randomization on the digits model, {n} held-out digits, random state {random_state} "
             f"(mean Spearman correlation of max_c |signal| with the trained model's map):", "",
             "| randomized (cumulative) | " + " | ".join(MODES) + " |",
             "|---|" + "---:|" * len(MODES)]
    for name, row in zip(names, table):
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    model = mg.zoo.digits()
    images, labels = mg.zoo.digits_test_data()
    indices = pick_indices(labels, args.count)
    if not 0 <= args.show < len(indices):
        raise SystemExit(f"--show must be between 0 and {len(indices) - 1}, got {args.show}")
    x = mg.zoo.digits_preprocess(images[indices])  # (N, 1, 32, 32)
    classes = model(x).argmax(axis=1)  # the class to explain, fixed on the trained model
    print(f"digits model, {len(indices)} held-out digits (indices {indices}), labels {labels[indices].tolist()}, "
          f"predicted {classes.tolist()}, random state {args.random_state}")

    # The measurement, by the library function:
    rows = E.cascading_randomization(model, x, target="top1", modes=MODES, random_state=args.random_state)

    # The same cascade step by step, for the figure and to measure the first row on an untouched copy:
    steps = randomized_steps(model, x, classes, args.random_state)
    reference = steps[0][1]
    per_digit = np.array([[[E.spearman(reference[m][i], maps[m][i]) for i in range(len(indices))]
                           for m in MODES] for _, maps in steps])  # (steps, modes, N)
    table = per_digit.mean(axis=2)
    names = [name for name, _ in steps]
    assert names == [r["randomized"] for r in rows], (names, rows)
    api = np.array([[r[m] for m in MODES] for r in rows])
    assert np.allclose(table, api, rtol=0, atol=1e-12), (table, api)
    assert np.all(table[0] == 1.0), f"an untouched model must correlate 1.0 with itself, got {table[0]}"

    print()
    print(f"{'randomized (cumulative)':24}" + "".join(f"{m:>11}" for m in MODES))
    for name, row in zip(names, table):
        print(f"{name:24}" + "".join(f"{v:11.3f}" for v in row))
    print("\n(Spearman rank correlation with the trained model's map, mean over the digits; the first row "
          "is measured on an untouched copy of the model)")

    os.makedirs(args.out, exist_ok=True)
    image = get_preprocessing("digits").deprocess(x[args.show])
    written = [figure(steps, per_digit[:, :, args.show], image, args.show, os.path.join(args.out, "sanity_maps.png"),
                      args.panel_size)]
    path = os.path.join(args.out, "sanity_table.md")
    with open(path, "w") as f:
        f.write(markdown_table(names, table, len(indices), args.random_state))
    written.append(path)
    path = os.path.join(args.out, "sanity.npz")
    np.savez_compressed(path, layers=np.array(names), modes=np.array(MODES), table=table, per_digit=per_digit,
                        indices=np.array(indices), random_state=args.random_state,
                        **{f"maps_{m}": np.stack([maps[m] for _, maps in steps]) for m in MODES})
    written.append(path)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
