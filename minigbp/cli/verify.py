"""``minigbp verify MODULE:FACTORY MODULE:FUNCTION``: :func:`minigbp.verify.check` from the command line,
for a PyTorch or a Keras model."""

import importlib
import importlib.util
import json
import os
import sys

from ..ops.relu import MODES
from ..verify.check import check
from ..verify.frameworks import describe as _describe, framework
from .inputs import positive

__all__ = ["add_verify_parser"]


def add_verify_parser(subparsers):
    """Add ``minigbp verify MODULE:FACTORY MODULE:FUNCTION [--mode guided]`` to a CLI."""
    p = subparsers.add_parser(
        "verify",
        help="check a PyTorch or TensorFlow attribution function against minigbp's three modes",
        description="Check a guided-backprop / deconvnet / saliency implementation against minigbp. "
                    "FACTORY() returns the model (a torch.nn.Module or a keras.Model); FUNCTION(model, x, "
                    "target) returns the attribution shaped like x (x: a float tensor in the model's layout, "
                    "NCHW for torch and requiring grad, NHWC for Keras; target: an int tensor (N,); seed: a "
                    "one-hot 1 at the target's output). MODULE is a dotted module name (importable from the "
                    "current directory) or a path to a .py file. Exit status: 0 when the function matches "
                    "--mode, 1 when not, 2 on usage errors.",
    )
    p.add_argument("factory", metavar="MODULE:FACTORY", help="function returning the torch.nn.Module or keras.Model")
    p.add_argument("function", metavar="MODULE:FUNCTION", help="attribute_fn(model, x, target) -> tensor")
    p.add_argument("--mode", choices=MODES, default="guided",
                   help="the mode the function claims to compute (default: guided)")
    p.add_argument("--target", metavar="TARGET", default=None,
                   help="what the function explains when it is not the class it is given: layer:NAME, "
                        "channel:NAME:C or neuron:NAME:C:Y:X (e.g. layer:block5_conv4 for a recipe that "
                        "differentiates that layer's output sum)")
    p.add_argument("--input-shape", type=_shape, default=None, metavar="SHAPE",
                   help="shape of one sample in the model's layout, C,H,W for torch or H,W,C for Keras "
                        "(default: inferred from the model)")
    p.add_argument("--batch", type=positive, default=4, help="samples per generated batch (default: 4)")
    p.add_argument("--random-state", type=int, default=0,
                   help="seed of the generator of the inputs, targets and integer weights (default: 0)")
    p.add_argument("--no-probe", action="store_true", help="skip the per-layer probe")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=_run_verify)
    return p


def _shape(text):
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        import argparse
        raise argparse.ArgumentTypeError(f"expected comma-separated ints such as 3,32,32, got {text!r}")


_loaded = {}


def _load(spec):
    """The object named by ``module:name`` (dotted module or a .py path)."""
    if ":" not in spec:
        raise ValueError(f"expected MODULE:NAME, got {spec!r}")
    where, name = spec.rsplit(":", 1)
    try:
        if where.endswith(".py") or os.sep in where or "/" in where:
            path = os.path.abspath(where)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"no file {where!r}")
            if path not in _loaded:
                modname = "_minigbp_verify_" + os.path.splitext(os.path.basename(path))[0]
                ispec = importlib.util.spec_from_file_location(modname, path)
                mod = importlib.util.module_from_spec(ispec)
                sys.modules[modname] = mod
                ispec.loader.exec_module(mod)
                _loaded[path] = mod
            mod = _loaded[path]
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            mod = importlib.import_module(where)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"cannot import {where!r}: {_describe(e)}") from e
    try:
        return getattr(mod, name)
    except AttributeError:
        raise ValueError(f"{where!r} has no attribute {name!r}") from None


def _run_verify(args):
    factory, fn = _load(args.factory), _load(args.function)
    try:
        model = factory()
    except Exception as e:
        raise ValueError(f"{args.factory}() failed: {_describe(e)}") from e
    try:
        framework(model)
    except ValueError:
        raise ValueError(f"{args.factory}() returned {type(model).__name__}, not a torch.nn.Module or a "
                         f"keras.Model") from None
    report = check(model, fn, target=args.target, mode=args.mode, batch=args.batch, random_state=args.random_state,
                   input_shape=args.input_shape, probe=not args.no_probe)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report)
    return 0 if report.ok else 1
