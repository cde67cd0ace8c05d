"""The ``minigbp`` command: one subcommand per task (``minigbp --help`` lists them)."""

import argparse
import sys

from .. import __version__
from .compat import add_compat_parser
from .convert import add_convert_parser
from .explain import add_explain_parser
from .grade import add_grade_parser
from .projections import add_projections_parser
from .verify import add_verify_parser

__all__ = ["main", "build_parser"]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="minigbp",
        description="A pure-NumPy CNN whose backward pass runs as vanilla gradient, "
                    "deconvnet or guided backpropagation.",
    )
    parser.add_argument("--version", action="version", version=f"minigbp {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_explain_parser(subparsers)
    add_convert_parser(subparsers)
    add_verify_parser(subparsers)
    add_projections_parser(subparsers)
    add_compat_parser(subparsers)
    add_grade_parser(subparsers)
    return parser


def main(argv=None):
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except BrokenPipeError:  # e.g. `minigbp compat | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    except (ValueError, TypeError, KeyError, OSError, ImportError) as e:
        print(f"minigbp {args.command}: error: {_message(e)}", file=sys.stderr)
        return 2


def _message(error):
    """One line for an error: an OS error as ``FILE: what happened`` rather than ``[Errno N] ...``."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        return f"{error.filename}: {error.strerror.lower()}"
    return str(error)


if __name__ == "__main__":
    sys.exit(main())
