"""``minigbp verify MODULE:FACTORY MODULE:FUNCTION``: :func:`minigbp.verify.check` from the command line."""

import importlib
import importlib.util
import json
import os
import sys

from ..io.pytorch import _torch
from ..ops.relu import MODES
from ..verify.check import _describe, check
from .inputs import positive

__all__ = ["add_verify_parser"]


def add_verify_parser(subparsers):
    """Add ``minigbp verify MODULE:FACTORY MODULE:FUNCTION [--mode guided]`` to a CLI."""
    p = subparsers.add_parser(
        "verify",
        help="check a PyTorch attribution function against minigbp's three modes",
        description="Check a PyTorch guided-backprop / deconvnet / saliency implementation against "
                    "minigbp. FACTORY() returns the torch model; FUNCTION(model, x, target) returns the "
                    "attribution tensor shaped like x (x: a float tensor that requires grad, target: int64 "
                    "tensor (N,), seed: a one-hot 1 at the target logit). MODULE is a dotted module name "
                    "(importable from the current directory) or a path to a .py file. Exit status: 0 when "
                    "the function matches --mode, 1 when not, 2 on usage errors.",
    )
    p.add_argument("factory", metavar="MODULE:FACTORY", help="function returning the torch.nn.Module")
    p.add_argument("function", metavar="MODULE:FUNCTION", help="attribute_fn(model, x, target) -> tensor")
    p.add_argument("--mode", choices=MODES, default="guided",
                   help="the mode the function claims to compute (default: guided)")
    p.add_argument("--input-shape", type=_shape, default=None, metavar="C,H,W",
                   help="shape of one sample (default: inferred from the model)")
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
    torch = _torch()
    factory, fn = _load(args.factory), _load(args.function)
    try:
        model = factory()
    except Exception as e:
        raise ValueError(f"{args.factory}() failed: {_describe(e)}") from e
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"{args.factory}() returned {type(model).__name__}, not a torch.nn.Module")
    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    report = check(model, fn, mode=args.mode, batch=args.batch, random_state=args.random_state, input_shape=args.input_shape,
                   probe=not args.no_probe)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report)
    return 0 if report.ok else 1
