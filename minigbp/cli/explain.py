"""``minigbp explain``: saliency pictures of images, from the command line.

For every image: the predicted classes are printed, one PNG per mode is written
(``<stem>_<mode>.png``) and a comparison figure with the input and every
mode side by side (``<stem>_comparison.png``).
"""

import argparse
import os
import sys

import numpy as np

from .. import explain as E
from ..explain import visualize as V
from ..io.image import get_preprocessing
from ..presets import PRESETS, get_preset
from ..targets import parse_targets
from .inputs import count, load_model, output_folder, read_input, unique_stems

EXAMPLES = """examples:
  minigbp explain digits:0 --out out/                  a shipped held-out digit, offline
  minigbp explain digits:0 digits:1 --mode all --out out/
  minigbp explain photo.jpg --model vgg16 --weights vgg16-397923af.pth --out out/
  minigbp explain photo.jpg --model resnet50 --weights resnet50-0676ba61.pth --out out/
  minigbp explain photo.jpg --model densenet121 --weights densenet121-a639ec97.pth --preset captum --out out/
  minigbp explain photo.jpg --model vgg16 --weights vgg16.h5 --preprocess caffe --out out/
  minigbp explain cat.png --model my_model.npz --preprocess imagenet --target top:3 --out out/
  minigbp explain cat.png --model my_cnn.keras --preprocess imagenet --out out/
  minigbp explain digits:7 --target neuron:features.3:5:4:4 --mode deconvnet --out out/
  minigbp explain digits:0 --mode guided --preset torchray --out out/   TorchRay's conventions

targets: top1 (default), top:K, K or class:K, layer:NAME, channel:NAME:C, neuron:NAME:C:Y:X
(NAME is a layer name such as features.28, or a block such as layer4; see --show-model)"""


def add_explain_parser(subparsers):
    p = subparsers.add_parser(
        "explain", help="draw vanilla / deconvnet / guided backprop (and Grad-CAM) maps of images",
        description="Explain images with minigbp: one PNG per image and mode, plus a comparison figure.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files (any format Pillow reads), or digits:N for the N-th shipped held-out digit")
    p.add_argument("--model", default="digits",
                   help="digits (shipped, default), a torchvision architecture (need --weights): "
                        "vgg11..vgg19[_bn], alexnet, resnet18..resnet152, densenet121..densenet201, "
                        "squeezenet1_0/1_1; or the path of a model saved with minigbp.save / minigbp convert, "
                        "or of a Keras .keras model (give --preprocess)")
    p.add_argument("--weights", metavar="FILE",
                   help="weights for a zoo model: .pth/.pt, .safetensors, .npz, or Keras .h5 (VGG16/19)")
    p.add_argument("--mode", default="all", choices=E.MODES + ("all",),
                   help="mode to draw; 'all' draws the five (default)")
    p.add_argument("--target", default="top1", help="what to explain (see below; default top1)")
    p.add_argument("--preprocess", choices=["imagenet", "caffe", "digits"],
                   help="preprocessing (default: digits for the digits model, imagenet otherwise)")
    p.add_argument("--norm", default="minmax", choices=V.NORMALIZATIONS,
                   help="display normalization of the signed maps (default minmax)")
    p.add_argument("--gray", action="store_true", help="draw max |signal| over channels instead of color")
    p.add_argument("--preset", metavar="NAME", choices=sorted(PRESETS),
                   help="reproduce a library's conventions and post-processing (see 'minigbp compat'): "
                        + ", ".join(PRESETS))
    p.add_argument("--smooth", type=count, default=0, metavar="N",
                   help="SmoothGrad: average over N noisy copies (default 0: off)")
    p.add_argument("--gradcam-layer", metavar="NAME",
                   help="layer or block for Grad-CAM (default: the last ReLU before global pooling, e.g. "
                        "features.29 in VGG16, layer4's output in a ResNet)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created if needed)")
    p.add_argument("--show-model", action="store_true", help="print the model's layers first")
    p.set_defaults(run=run_explain)
    return p


class _Progress:
    """A progress bar on stderr, shown only when stderr is a terminal and cleared before
    anything else is printed (logs get no carriage returns)."""

    def __init__(self, n):
        self.n, self.on = n, n > 1 and sys.stderr.isatty()

    def show(self, i, name):
        if self.on:
            done = 30 * i // self.n
            print(f"\r[{'#' * done}{'-' * (30 - done)}] {i}/{self.n} {name[:40]}\033[K", end="",
                  file=sys.stderr, flush=True)

    def clear(self):
        if self.on:
            print("\r\033[K", end="", file=sys.stderr, flush=True)


def run_explain(args):
    """Check everything (output folder, model and weights, targets, every image) before the
    first file is written; then explain image by image."""
    output_folder(args.out)
    model, default_preprocessing = load_model(args.model, args.weights)
    if args.preprocess is None and default_preprocessing is None:
        raise ValueError(f"--model {args.model}: a model file does not record its preprocessing; "
                         f"give --preprocess imagenet, caffe or digits")
    preprocessing = get_preprocessing(args.preprocess or default_preprocessing)
    modes, targets = _modes_and_targets(args)
    if args.gradcam_layer is not None and any(m in ("gradcam", "guided-gradcam") for m in modes):
        try:
            model.resolve(args.gradcam_layer)
        except ValueError as e:
            raise ValueError(f"--gradcam-layer {args.gradcam_layer}: {e}") from None
    inputs = [read_input(spec, preprocessing) for spec in args.images]
    if args.model == "digits":
        _warn_photos(inputs)
    logits = [model(i.x) for i in inputs]
    for i, out in zip(inputs, logits):
        _check_targets(model, i, out, targets, args.target)
    os.makedirs(args.out, exist_ok=True)
    if args.show_model:
        print(model)
    written, progress = [], _Progress(len(inputs))
    for k, (i, stem, out) in enumerate(zip(inputs, unique_stems(inputs), logits)):
        progress.show(k, i.spec)
        for t in targets:
            written += _draw(model, i.x, t, modes, stem, preprocessing, out, args, tagged=len(targets) > 1)
        progress.clear()
        top = np.argsort(-out[0])[:3]
        scores = ", ".join(f"{c} ({out[0, c]:.2f})" for c in top)
        print(f"{i.spec}: predicted {scores}" + (f"  [{i.note}]" if i.note else ""))
    files = sum(os.path.isfile(p) for p in set(written))
    print(f"wrote {files} files to {args.out}")
    return 0


def _warn_photos(inputs):
    for i in inputs:
        if i.colour and max(i.size) > 64:
            print(f"minigbp explain: warning: {i.spec} is a {i.size[1]}x{i.size[0]} colour image, and the "
                  f"digits model (the default --model) reads 8x8 handwritten digits; give --model and "
                  f"--weights to explain a photograph", file=sys.stderr)


def _check_targets(model, i, logits, targets, spec):
    """Every target must exist in this model for this input: classes in range, layers,
    channels and neurons present (the seed is built once, here, to check it)."""
    for t in targets:
        try:
            t.seed(logits if t.layer is None else model.forward(i.x, upto=t.layer)[0])
        except ValueError as e:
            raise ValueError(f"--target {spec}: {e}") from None


def _modes_and_targets(args):
    """The modes to draw (those the preset's library has) and the parsed targets."""
    modes = list(E.MODES) if args.mode == "all" else [args.mode]
    library = get_preset(args.preset) if args.preset else None
    if library is not None:  # only what the library computes (guided Grad-CAM needs its guided mode)
        modes = [m for m in modes if m == "gradcam" or
                 (m == "guided-gradcam" and "guided" in library.modes) or m in library.modes]
        if not modes:
            raise ValueError(f"--preset {library.name} has no {args.mode} mode (it covers "
                             f"{', '.join(library.modes)})")
    targets = parse_targets(args.target)
    if all(m in ("gradcam", "guided-gradcam") for m in modes) and any(t.kind not in ("class", "rank")
                                                                      for t in targets):
        raise ValueError(f"--mode {args.mode} explains class scores; --target {args.target} is not a class")
    return modes, targets


def _draw(model, x, t, modes, stem, preprocessing, logits, args, tagged):
    """One PNG per mode and the comparison figure for one image and one target; the paths written."""
    image = preprocessing.deprocess(x)
    library = get_preset(args.preset) if args.preset else None
    tag = "_" + t.describe().replace(" ", "-").translate(str.maketrans("", "", "(),")) if tagged else ""
    panels, written = [("input", image)], []
    for mode in modes:
        if mode in ("gradcam", "guided-gradcam") and t.kind not in ("class", "rank"):
            continue
        m = E.attribute(model, x, t, mode, gradcam_layer=args.gradcam_layer, smooth=args.smooth, preset=args.preset)
        if library is not None and mode != "gradcam":
            m = V.postprocess(m, library.postprocess)
        m = m[0]
        if mode == "gradcam":
            picture = V.overlay(image, V.normalize(m[0], "minmax"))
        elif library is not None and library.postprocess in ("abs-max-minmax", "sum-abs-p99"):
            picture = m[0]  # already the library's [0, 1] picture: no second normalization
        else:
            picture = V.to_display(m, args.norm, gray=args.gray, channels_bgr=preprocessing.name == "caffe")
        path = os.path.join(args.out, f"{stem}{tag}_{mode}.png")
        V.save_png(picture, path, scale=max(1, 256 // picture.shape[0]))
        written.append(path)
        panels.append((mode, picture))
    cls = t.classes(logits)
    title = f"{stem}: {t.describe()}" + (f" = {cls[0]}" if cls is not None and t.kind == "rank" else "")
    path = os.path.join(args.out, f"{stem}{tag}_comparison.png")
    V.comparison_figure(panels, path, title=title)
    return written + [path]
