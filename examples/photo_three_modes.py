"""The three backward modes on a real photograph, through VGG16 with weights you supply.

    python examples/photo_three_modes.py --weights vgg16-397923af.pth            # torchvision
    python examples/photo_three_modes.py --weights vgg16_weights_tf_dim_ordering_tf_kernels.h5
    python examples/photo_three_modes.py --weights W.pth --image my_cat.jpg --out /tmp/cat
    python examples/photo_three_modes.py --random-weights --size 64               # pipeline check

The photo is the portrait of Grace Hopper that matplotlib ships as sample data
(``matplotlib.cbook.get_sample_data("grace_hopper.jpg")``), so nothing is downloaded;
``--image PATH`` takes any picture Pillow reads. minigbp never downloads weights either: without
``--weights`` the script says what to download and exits (status 0).

Weights (``--weights FILE``):

* torchvision's ImageNet VGG16, ``vgg16-397923af.pth``
  (https://download.pytorch.org/models/vgg16-397923af.pth, 528 MB), or the same weights as
  ``.safetensors`` or minigbp ``.npz``: read by ``minigbp.zoo.vgg16(weights=FILE)`` without torch,
  inputs preprocessed with the ``imagenet`` preprocessing (RGB, resize 256, center crop 224,
  ``(v / 255 - mean) / std``);
* Keras's ``vgg16_weights_tf_dim_ordering_tf_kernels.h5`` (553 MB, the file
  ``keras.applications.VGG16(weights="imagenet")`` downloads): converted by
  ``minigbp.io.keras.load_keras_vgg`` (HWIO -> OIHW kernels, channels-last ``fc1`` reordered), inputs
  preprocessed with the ``caffe`` preprocessing (BGR, 224x224, ImageNet means subtracted). Needs h5py.
  The ``_notop`` file has no classifier and is refused: there is no class to explain.

``--random-weights`` builds VGG16 with PyTorch's default random initialization instead
(``mg.manual_seed(--random-state)``). Its predictions mean nothing; it exists to check the pipeline
(loading, preprocessing, three backward passes, figures) in seconds, e.g. with ``--size 64``
(the photo is prepared at 224x224 as usual, then resized to 64x64; VGG16's adaptive average
pooling makes any size from 32 up work). Look at its pictures anyway: the guided map of a
network that has learned nothing still shows the portrait, while the vanilla gradient is
noise. That is Adebayo et al.'s (2018) point, measured in ``examples/sanity_check.py``.

What you see
------------
``input`` (the image the network sees, preprocessing undone), then the signal at the input for
the top-1 class (or ``--target C``) in each mode, shown in color (one channel per color,
``--norm minmax`` as most tutorials do) or as ``max_c |signal|`` with ``--gray``:

* ``vanilla`` -- the gradient d(logit)/d(input): noisy, speckled over the whole image;
* ``deconvnet`` -- Zeiler & Fergus: edges and textures the filters respond to, loosely tied to
  the class;
* ``guided`` -- guided backpropagation: sharp edges of the object with little background
  noise, the picture the guided-backprop papers and tutorials show.

(These are the patterns reported in the literature for ImageNet-trained VGGs; the test
suite only runs this script with random weights.)

The script also prints the top-5 predicted class indices (ImageNet-1k indices; torchvision and
Keras use the same order; no class names are shipped).

The equations
-------------
The seed is a one-hot 1 at the target logit. Every layer except ReLU sends the signal back the
same way in all modes (transposed convolution, max-pool switches, ``W^T`` for linear layers,
even spreading for the adaptive average pooling). At a ReLU ``f = max(x, 0)`` receiving ``R``:

    vanilla    R * [x > 0]              (the chain rule)
    deconvnet  R * [R > 0]              (forward mask ignored)
    guided     R * [x > 0] * [R > 0]    (both)

applied at all 15 ReLUs of VGG16, the classifier's two included.

Files written to ``--out`` (``<stem>`` is the image's file name without extension)
-----------------------------------------------------------------------------------
* ``<stem>_input.png``, ``<stem>_vanilla.png``, ``<stem>_deconvnet.png``, ``<stem>_guided.png``:
  each ``--size`` pixels square (224 by default);
* ``<stem>_comparison.png``: the four side by side with titles;
* ``<stem>_maps.npz``: ``x`` (the network input), ``logits``, ``top5``, ``target`` and the raw
  signed signals ``vanilla``, ``deconvnet``, ``guided`` (1, 3, size, size), before any display
  normalization.
"""

import argparse
import os
import sys

import numpy as np

import minigbp as mg
from minigbp import visualize as V
from minigbp.io.image import get_preprocessing, load_image, resize

MODES = ("vanilla", "deconvnet", "guided")

NO_WEIGHTS = """\
{what}

This example runs VGG16 with ImageNet weights that you download yourself (minigbp never
downloads anything). Either of these works:

  torchvision (528 MB):  https://download.pytorch.org/models/vgg16-397923af.pth
      python examples/photo_three_modes.py --weights vgg16-397923af.pth

  Keras (553 MB, needs h5py):
      https://storage.googleapis.com/tensorflow/keras-applications/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5
      python examples/photo_three_modes.py --weights vgg16_weights_tf_dim_ordering_tf_kernels.h5

(a .safetensors or minigbp .npz copy of torchvision's weights works too; `minigbp convert`
writes one.) To check the pipeline without any download, use random weights; the predictions
are then meaningless:

  python examples/photo_three_modes.py --random-weights --size 64
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the module docstring for the weights to download and what the "
                                       "pictures show.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", metavar="FILE",
                     help="VGG16 weights: torchvision .pth/.pt, .safetensors, minigbp .npz, or Keras .h5")
    src.add_argument("--random-weights", action="store_true",
                     help="random VGG16 weights: only checks the pipeline, the maps mean nothing")
    p.add_argument("--image", metavar="PATH",
                   help="image to explain (default: matplotlib's sample photo grace_hopper.jpg)")
    p.add_argument("--out", default=os.path.join("examples", "out", "photo"), metavar="DIR",
                   help="output directory, created if needed (default: examples/out/photo)")
    p.add_argument("--size", type=int, default=224,
                   help="input side in pixels (default 224, what the weights were trained at; "
                        "smaller is faster, e.g. 64 with --random-weights)")
    p.add_argument("--target", type=int, metavar="CLASS",
                   help="class index to explain (default: the top-1 prediction)")
    p.add_argument("--preprocess", choices=("imagenet", "caffe"),
                   help="preprocessing (default: caffe for Keras .h5 weights, imagenet otherwise)")
    p.add_argument("--norm", choices=V.NORMALIZATIONS, default="minmax",
                   help="display normalization (default minmax)")
    p.add_argument("--gray", action="store_true", help="draw max |signal| over channels instead of color")
    p.add_argument("--random-state", type=int, default=0, help="seed of --random-weights' generator (default 0)")
    return p.parse_args(argv)


def default_image():
    """The photo matplotlib ships: Grace Hopper, 512x600 JPEG."""
    from matplotlib import cbook

    return cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


def build_model(args):
    """``(model, default preprocessing name, description)`` or raise ``ValueError``."""
    if args.random_weights:
        mg.manual_seed(args.random_state)
        return mg.zoo.vgg16(), "imagenet", f"VGG16 with random weights (random state {args.random_state})"
    path = args.weights
    if path.endswith((".h5", ".hdf5", ".keras")):
        from minigbp.io.keras import load_keras_vgg

        conv = load_keras_vgg(path)
        for note in conv.notes:
            print(f"note: {note}")
        if conv.missing_keys:
            raise ValueError(f"{path}: the file has no classifier ({len(conv.missing_keys)} keys missing, "
                             f"an include_top=False / _notop file?); use the full "
                             f"vgg16_weights_tf_dim_ordering_tf_kernels.h5")
        if conv.arch != "vgg16":
            print(f"note: {path} holds a {conv.arch}, not a vgg16; using {conv.arch}")
        return mg.zoo.build(conv.arch, conv.state_dict), "caffe", f"Keras {conv.arch} from {path}"
    return mg.zoo.vgg16(weights=path), "imagenet", f"VGG16 from {path}"


def prepare_input(image, preprocessing, size):
    """RGB uint8 photo -> ``(1, 3, size, size)`` float32 network input.

    The preprocessing does its usual 224x224 geometry (resize + crop); a different ``size`` resizes
    that picture once more, then the preprocessing's value map (mean/std or BGR mean subtraction)
    applies.
    """
    img = preprocessing.prepare(image)
    if size != img.shape[0] or size != img.shape[1]:
        img = resize(img, (size, size))
    return preprocessing.to_input(img)[None]


def main(argv=None):
    args = parse_args(argv)
    if not args.random_weights:
        if args.weights is None:
            print(NO_WEIGHTS.format(what="No VGG16 weights given (--weights FILE)."))
            return 0
        if not os.path.exists(args.weights):
            print(NO_WEIGHTS.format(what=f"Weights file not found: {args.weights}"))
            return 0
    if args.size < 32:
        print(f"error: --size must be at least 32 (VGG16 halves the image five times), got {args.size}",
              file=sys.stderr)
        return 2
    try:
        model, default_preprocessing, description = build_model(args)
        image_path = args.image or default_image()
        image = load_image(image_path)
    except (ValueError, OSError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    preprocessing = get_preprocessing(args.preprocess or default_preprocessing)
    stem = os.path.splitext(os.path.basename(image_path))[0]
    print(f"model: {description}; preprocessing: {preprocessing.name}; image: {image_path} "
          f"({image.shape[1]}x{image.shape[0]}) -> {args.size}x{args.size}")
    if args.random_weights:
        print("random weights: the predictions are meaningless; this run checks the pipeline (the module "
              "docstring says what the pictures still show)")

    x = prepare_input(image, preprocessing, args.size)  # (1, 3, S, S) float32
    logits = model(x)  # (1, 1000)
    top5 = np.argsort(-logits[0], kind="stable")[:5]
    print("top-5 predicted classes (ImageNet index: logit): "
          + ", ".join(f"{c}: {logits[0, c]:.3f}" for c in top5))
    target = int(top5[0]) if args.target is None else args.target
    if not 0 <= target < logits.shape[1]:
        print(f"error: --target {target} out of range (0..{logits.shape[1] - 1})", file=sys.stderr)
        return 2
    print(f"explaining class {target}")

    os.makedirs(args.out, exist_ok=True)
    signals = {m: mg.backprop(model, x, target, mode=m) for m in MODES}  # each (1, 3, S, S)
    bgr = preprocessing.name == "caffe"
    image_shown = preprocessing.deprocess(x)  # RGB in [0, 1]
    panels = [("input", image_shown)]
    panels += [(m, V.to_display(signals[m][0], args.norm, gray=args.gray, channels_bgr=bgr)) for m in MODES]
    written = []
    for name, picture in panels:
        path = os.path.join(args.out, f"{stem}_{name}.png")
        V.save_png(picture, path)
        written.append(path)
    path = os.path.join(args.out, f"{stem}_comparison.png")
    V.comparison_figure(panels, path, title=f"{stem}: {description}, class {target}")
    written.append(path)
    path = os.path.join(args.out, f"{stem}_maps.npz")
    np.savez_compressed(path, x=x, logits=logits, top5=top5, target=target, **signals)
    written.append(path)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
