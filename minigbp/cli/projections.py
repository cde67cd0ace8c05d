"""``minigbp projections``: Zeiler & Fergus projections from the command line (see
:mod:`minigbp.explain.projection`)."""

import argparse
import os

import numpy as np

from ..explain import default_gradcam_layer
from ..explain.projection import layer_activations, projection_figure, projections
from ..explain.receptive import receptive_field
from ..io import zoo
from ..io.image import get_preprocessing
from ..targets import SEEDS
from .inputs import load_model, output_folder, positive, read_input

__all__ = ["add_projections_parser"]

EXAMPLES = """examples:
  minigbp projections --out out/                      digits model, its last conv ReLU, 4 channels
  minigbp projections --layer features.4 --channels 1,5,9 -k 16 --out out/
  minigbp projections --channel 19 --mode guided --seed one --out out/
  minigbp projections --model my_digits.npz --layer features.7 --channel 2 --out out/
  minigbp projections --model vgg16 --weights vgg16-397923af.pth --images a.jpg b.jpg c.jpg \\
                      --layer features.29 --channel 17 --out out/

For each channel: the k strongest activations over all images and positions (ties: smaller
image index, then row, then column), each projected alone to the input (deconvnet by default,
seeded with the activation's value, every other unit of the layer zero) and cropped to its
receptive field; written as <model>_<layer>_channel-<C>.png with the projections on the left
and the matching input patches on the right (Zeiler & Fergus 2013, Fig. 2)."""


def add_projections_parser(subparsers):
    p = subparsers.add_parser(
        "projections", help="Zeiler & Fergus projections: the top activations of channels, seen in the input",
        description="Draw, for each channel, its k strongest activations over a set of images projected "
                    "to the input and cropped to the receptive field, beside the input patches.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="digits",
                   help="digits (shipped, default), vgg11/13/16/19 or alexnet with --weights, "
                        "or a model file saved with minigbp.save / minigbp convert")
    p.add_argument("--weights", metavar="FILE", help="weights for a zoo model (as minigbp explain)")
    p.add_argument("--images", nargs="+", metavar="IMAGE",
                   help="images to search (files of one size, or digits:N); default: the 360 held-out "
                        "digits shipped with minigbp")
    p.add_argument("--preprocess", choices=["imagenet", "caffe", "digits"],
                   help="preprocessing of --images (default: digits for the digits model, imagenet otherwise)")
    p.add_argument("--layer", metavar="NAME",
                   help="dotted layer name (default: the last convolution's ReLU, features.7 for digits)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--channel", type=int, metavar="C", help="one channel")
    which.add_argument("--channels", metavar="C1,C2,...",
                       help="several channels (default: the 4 whose strongest activation is largest)")
    p.add_argument("-k", type=positive, default=9, help="activations per channel (default 9, a 3x3 grid)")
    p.add_argument("--mode", default="deconvnet", choices=["deconvnet", "guided", "vanilla"],
                   help="backward mode of the projection (default deconvnet, as Zeiler & Fergus)")
    p.add_argument("--seed", default="value", choices=sorted(SEEDS, reverse=True),
                   help="seed at the unit: its activation value (default) or 1")
    p.add_argument("--norm", default="minmax", choices=["minmax", "symmetric", "percentile"],
                   help="display normalization of each projection (default minmax)")
    p.add_argument("--panel-size", type=float, default=1.0, metavar="INCHES",
                   help="size of one panel in inches (default 1; 100 dpi)")
    p.add_argument("--batch-size", type=positive, default=64, help="images per forward pass (default 64)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created if needed)")
    p.set_defaults(run=run_projections)
    return p


def _load_images(args, model_preprocessing):
    if not args.images:
        if model_preprocessing != "digits" and args.preprocess not in (None, "digits"):
            raise ValueError("without --images the shipped digits are used; they need the digits preprocessing")
        return zoo.digits_preprocess(zoo.digits_test_data()[0]), "the 360 held-out digits"
    preprocessing = get_preprocessing(args.preprocess or model_preprocessing)
    xs = [read_input(spec, preprocessing).x for spec in args.images]
    shapes = {x.shape for x in xs}
    if len(shapes) > 1:
        raise ValueError(f"--images: all images must have one size after preprocessing, got "
                         f"{', '.join(str(s[1:]) for s in sorted(shapes))}")
    return np.concatenate(xs), f"{len(xs)} image(s)"


def run_projections(args):
    output_folder(args.out)
    model, model_preprocessing = load_model(args.model, args.weights)
    images, what = _load_images(args, model_preprocessing)
    layer = args.layer or default_gradcam_layer(model)
    rf = receptive_field(model, layer, images.shape)
    if args.channel is not None:
        channels = [args.channel]
    elif args.channels:
        try:
            channels = [int(c) for c in args.channels.split(",") if c.strip()]
        except ValueError:
            raise ValueError(f"--channels {args.channels!r}: expected comma-separated ints such as 1,5,9") from None
    else:
        strongest = layer_activations(model, images, layer, None, args.batch_size).max(axis=(0, 2, 3))
        channels = [int(c) for c in np.argsort(-strongest, kind="stable")[:4]]
    results = {c: projections(model, images, layer, c, k=args.k, mode=args.mode, seed=args.seed,
                              batch_size=args.batch_size) for c in channels}
    os.makedirs(args.out, exist_ok=True)
    stem = "digits" if args.model == "digits" else os.path.splitext(os.path.basename(args.model))[0]
    print(f"{layer}: receptive field {rf.size[0]}x{rf.size[1]} pixels, jump {rf.jump[0]}x{rf.jump[1]}, "
          f"over {what}")
    for c, res in results.items():
        path = os.path.join(args.out, f"{stem}_{layer}_channel-{c}.png")
        title = f"{layer} channel {c} ({args.mode})"
        panels = projection_figure(res, rf, images, path, title=title, norm=args.norm, panel_size=args.panel_size)
        tops = ", ".join(f"{p.activation:.3g} (image {p.image}, y={p.y}, x={p.x})" for p in res[:3])
        print(f"channel {c}: strongest {tops}{', ...' if len(res) > 3 else ''}")
        print(f"wrote {path} ({panels} panels)")
    return 0
