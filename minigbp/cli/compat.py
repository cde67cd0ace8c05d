"""``minigbp compat``: the matrix of library presets (see :mod:`minigbp.presets`)."""

from ..presets import PRESETS

__all__ = ["add_compat_parser", "compat_table"]


def compat_table():
    """The compatibility matrix as text: one row per preset, its switches and how it was checked."""
    head = ("preset", "modes", "relu_at_zero", "relu_scope", "functional_relu", "pool_ties", "seed", "postprocess",
            "checked against")
    rows = [head]
    for p in PRESETS.values():
        c = p.conventions

        def cell(switch, value):  # "pass (vanilla: block)" where a mode differs
            extra = [f"{m}: {s[switch]}" for m, s in p.by_mode.items() if switch in s]
            return f"{value} ({', '.join(extra)})" if extra else value

        rows.append((p.name, ",".join(p.modes), cell("relu_at_zero", c.relu_at_zero), c.relu_scope or "all",
                     c.functional_relu, c.pool_ties, cell("seed", c.seed), p.postprocess, p.checked))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    lines = ["  ".join(f"{r[i]:{widths[i]}}" for i in range(len(head) - 1)) + "  " + r[-1] for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * len(head[-1]))
    return "\n".join(lines)


def add_compat_parser(subparsers):
    """Register ``minigbp compat``: print the compatibility matrix."""
    sub = subparsers.add_parser(
        "compat", help="print which conventions each library's preset sets, and how it was checked",
        description="The compatibility matrix: one row per preset (mg.backprop(..., preset=NAME)), "
                    "its switch values (see minigbp.conventions), the post-processing the library "
                    "applies, and what the test suite checked the preset against.")
    sub.set_defaults(run=lambda args: print(compat_table()))
    return sub
