"""``minigbp compat``: the matrix of library presets (see :mod:`minigbp.presets`)."""

from dataclasses import asdict

from ..conventions import DEFAULT
from ..ops.relu import MODES
from ..presets import PRESETS

__all__ = ["add_compat_parser", "compat_table"]


def compat_table(wide=False):
    """The compatibility matrix as text: one row per preset with its modes, the switches it sets
    away from the defaults (a value a library uses in one mode only in parentheses), and its
    post-processing; ``wide`` adds what the test suite checked it against (a long column)."""
    head = ("preset", "modes", "switches (the others at their defaults)", "postprocess") + (
        ("checked against",) if wide else ())
    rows = [head]
    for p in PRESETS.values():
        switches = []
        for name, value in asdict(p.conventions).items():
            extra = [f"{m}: {s[name]}" for m, s in p.by_mode.items() if name in s]
            if value != getattr(DEFAULT, name) or extra:
                switches.append(f"{name}={value}" + (f" ({', '.join(extra)})" if extra else ""))
        modes = "all three" if set(p.modes) == set(MODES) else ",".join(p.modes)
        rows.append((p.name, modes, ", ".join(switches) or "-", p.postprocess)
                    + ((p.checked,) if wide else ()))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(f"{r[i]:{widths[i]}}" for i in range(len(head))).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def add_compat_parser(subparsers):
    """Register ``minigbp compat [--wide]``: print the compatibility matrix."""
    sub = subparsers.add_parser(
        "compat", help="print which conventions each library's preset sets",
        description="The compatibility matrix: one row per preset (mg.backprop(..., preset=NAME)): the "
                    "modes the library has, the switches it sets away from minigbp's defaults (see "
                    "minigbp.conventions) and the post-processing it applies. --wide adds what the test "
                    "suite checked each preset against.")
    sub.add_argument("--wide", action="store_true", help="add the 'checked against' column (long lines)")
    sub.set_defaults(run=lambda args: print(compat_table(args.wide)))
    return sub
