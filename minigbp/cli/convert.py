"""``minigbp convert``: any readable checkpoint -> minigbp's native ``.npz`` (see :mod:`minigbp.io.convert`)."""

import argparse
import sys

from ..io import zoo
from ..io.convert import convert
from .inputs import positive

__all__ = ["add_convert_parser"]

DESCRIPTION = """\
Convert a checkpoint to minigbp's native .npz.

SRC may be a PyTorch checkpoint (.pth/.pt, read without torch and without running
code from the file), .safetensors, .npz, a Keras .keras model of any architecture
minigbp.from_keras converts (read without Keras; Keras's layer names), or a Keras
VGG16/VGG19 .h5 / .weights.h5 (converted to torchvision's names and layouts). With
--arch, or when SRC is a saved minigbp or Keras model, the architecture is stored too
and minigbp.load(DST) rebuilds the model; otherwise only the weights are written.
Prints one summary line.
"""

EXAMPLES = """\
examples:
  # a torchvision checkpoint -> a model file (mg.load("vgg16.npz") rebuilds it)
  minigbp convert vgg16-397923af.pth vgg16.npz --arch vgg16
  minigbp convert resnet50-0676ba61.pth resnet50.npz --arch resnet50
  minigbp convert densenet121-a639ec97.pth densenet121.npz --arch densenet121

  # a Keras model (ResNet50, DenseNet121, your own CNN) -> a model file
  minigbp convert my_cnn.keras my_cnn.npz

  # Keras's VGG16 weights (HWIO kernels, channels-last flatten) -> torchvision layout
  minigbp convert vgg16_weights_tf_dim_ordering_tf_kernels.h5 vgg16_keras.npz --arch vgg16

  # a fine-tuned checkpoint with 10 classes
  minigbp convert finetuned.pth vgg11_10.npz --arch vgg11 --num-classes 10

  # weights only (no architecture): load with model.load_state_dict(mg.load_weights(...))
  minigbp convert model.safetensors weights.npz

notes:
  * With --arch, every key and shape is checked first; all mismatches (missing,
    unexpected, wrong shape or dtype) are listed together, the exit status is 2 and
    nothing is written. The same holds for any other error.
  * A Keras file saved with include_top=False has no classifier: convert it without
    --arch and load it with model.load_state_dict(weights, strict=False).
  * A .keras model keeps its softmax head (the model returns probabilities, as Keras's
    does); Keras VGG weights converted to torchvision's layout return the logits.
    Keras VGG weights expect Keras's preprocessing (BGR, ImageNet means subtracted):
    minigbp.io.keras.keras_vgg_preprocess.
  * Keras files need h5py: pip install "minigbp[keras]".
"""


def _flatten_hw(text):
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 7x7, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return h, w


def run(args):
    """The ``convert`` subcommand: print notes and a one-line summary; exit status."""
    try:
        r = convert(args.src, args.dst, arch=args.arch, num_classes=args.num_classes,
                    flatten_hw=args.flatten_hw)
    except (ImportError, OSError) as e:  # h5py missing; unreadable or unwritable paths
        if isinstance(e, FileNotFoundError):
            raise  # the CLI's own error line
        print(f"minigbp convert: error: {e}", file=sys.stderr)
        return 2
    for note in r.notes:
        print(f"note: {note}")
    what = {None: "weights only", "saved model": "architecture of SRC included"}.get(
        r.architecture, f"{r.architecture} architecture included")
    print(f"wrote {r.path}: {r.arrays} arrays, {r.parameters:,} parameters, {r.bytes:,} bytes ({what})")
    return 0


def add_convert_parser(subparsers):
    """Register ``minigbp convert`` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "convert",
        help="convert a .pth/.pt/.safetensors/.npz or Keras VGG .h5 checkpoint to minigbp's .npz",
        description=DESCRIPTION,
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", metavar="SRC", help="the checkpoint to read")
    p.add_argument("dst", metavar="DST", help="the .npz to write (only if conversion succeeds)")
    p.add_argument("--arch", metavar="NAME", choices=sorted(zoo.ARCHITECTURES),
                   help=f"check the weights against this architecture and store it with them: "
                        f"{', '.join(zoo.ARCHITECTURES)}")
    p.add_argument("--num-classes", type=positive, default=1000, metavar="N",
                   help="outputs of --arch's classifier (default: 1000)")
    p.add_argument("--flatten-hw", type=_flatten_hw, default=None, metavar="HxW",
                   help="Keras only: the feature map fc1 flattens, if not square "
                        "(default: inferred, 7x7 for 224x224 inputs)")
    p.set_defaults(run=run)
    return p
