"""Load a script of ``examples/`` as a module, under a name of the test's choosing (each test
module gets its own copy, so it may patch it without touching the others')."""

import importlib.util
import pathlib
import sys

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def load_example(filename, as_name):
    spec = importlib.util.spec_from_file_location(as_name, EXAMPLES / filename)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
