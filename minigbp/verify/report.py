"""What :func:`minigbp.verify.check` finds, as small dataclasses: the :class:`Report` (errors
per mode, verdict) and the per-layer :class:`Probe`. ``str(report)`` is the table the
command line prints; :meth:`Report.to_dict` is JSON-ready."""

from dataclasses import asdict, dataclass, field

import numpy as np

from ..ops.relu import MODES

__all__ = ["Report", "Input", "Error", "ModeErrors", "Probe", "ProbeRow", "Divergence", "PROBE_ROWS"]

#: the probe table shows this many layers below the first divergence at most (big models have hundreds)
PROBE_ROWS = 24


@dataclass
class Input:
    """One batch the function was checked on: its name, shape and what it aims at."""

    name: str
    shape: tuple
    description: str


@dataclass
class Error:
    """The largest error of the function's maps against minigbp's, absolute and relative
    (:func:`minigbp.rel_error`, per sample; the worst sample)."""

    max_abs: float = 0.0
    max_rel: float = 0.0


@dataclass
class ModeErrors(Error):
    """:class:`Error` over every input for one mode, whether it is within tolerance, and per input."""

    match: bool = True
    per_input: dict = field(default_factory=dict)  # input name -> Error

    def add(self, name, error, tol):
        self.per_input[name] = error
        self.max_abs, self.max_rel = max(self.max_abs, error.max_abs), max(self.max_rel, error.max_rel)
        self.match = self.match and error.max_rel <= tol


@dataclass
class Divergence:
    """The first node, walking down from the output, where the function's signals part from a
    mode's (``layer`` None: already at the output, a seed other than a one-hot 1)."""

    layer: str = None
    type: str = None


@dataclass
class ProbeRow:
    """One node of the probe: the error of the signal it sends down against each mode's, and the
    rule it followed (what it did to the signal it received)."""

    layer: str
    type: str
    err: dict
    rule: str = ""


@dataclass
class Probe:
    """The per-layer probe (see :mod:`minigbp.verify.check`); ``possible`` False with a ``reason``
    when the function's run could not be followed node by node."""

    possible: bool
    reason: str = None
    input: str = None
    focus: str = None
    divergence: dict = field(default_factory=dict)  # mode -> Divergence, or None where none was found
    layers: list = field(default_factory=list)      # ProbeRow, from the output down
    relus: dict = field(default_factory=dict)       # rule label -> ReLU names, in forward order
    skipped: list = field(default_factory=list)     # ReLUs left vanilla where another mode was claimed
    notes: list = field(default_factory=list)

    def lines(self):
        """The probe as text lines (the last part of ``str(report)``)."""
        if not self.possible:
            return [f"per-layer probe: not possible: {self.reason}"]
        lines = [f"per-layer probe on input {self.input!r}, walking down from the output:"]
        d = self.divergence.get(self.focus)
        if d is not None and d.layer is not None:
            rule = next((r.rule for r in self.layers if r.layer == d.layer), "")
            lines.append(f"  against {self.focus}: first diverges at {d.layer} ({d.type}), whose local rule is: {rule}")
        lines += self._divergence_lines() + [""] + self._table_lines()
        if self.relus:
            lines.append("  ReLUs behaving like " + "; like ".join(f"{k}: {_names(v)}" for k, v in self.relus.items()))
        if self.skipped:
            lines.append(f"  ReLUs the recipe skipped (vanilla where {self.focus} was expected): {_names(self.skipped)}")
        return lines + [f"  note: {line}" for line in self.notes]

    def _divergence_lines(self):
        said = {}
        for m in MODES:
            d = self.divergence[m]
            if d is None:
                where = "no divergence found in the layer signals"
            elif d.layer is None:
                where = "already at the output: the seed is not a one-hot 1 at the target logit"
            else:
                where = f"first diverges at {d.layer} ({d.type})"
            said.setdefault(where, []).append(m)
        return [f"  {'all modes' if len(modes) == 3 else ', '.join(modes):<20} {where}" for where, modes in said.items()]

    def _table_lines(self):
        d = self.divergence.get(self.focus)
        at = next((i for i, r in enumerate(self.layers) if d and r.layer == d.layer), 0)
        shown = self.layers if len(self.layers) <= PROBE_ROWS else self.layers[:max(at + PROBE_ROWS // 2, PROBE_ROWS)]
        width = max(len(r.layer) for r in shown) + 2
        lines = [f"  {'layer':<{width}}{'type':<18}{'vanilla':>10}{'deconvnet':>11}{'guided':>10}   local rule"]
        for row in shown:
            errs = "".join(f"{_fmt(row.err[m]):>{w}}" for m, w in zip(MODES, (10, 11, 10)))
            lines.append(f"  {row.layer:<{width}}{row.type:<18}{errs}   {row.rule}")
        if len(shown) < len(self.layers):
            lines.append(f"  ... {len(self.layers) - len(shown)} more layers below (all of them in "
                         "report.probe.layers and --json)")
        return lines + ["  (errors: the signal each layer sends down, against minigbp's in that mode; local "
                        "rule: what the layer did to the signal it received)"]


@dataclass
class Report:
    """The outcome of :func:`minigbp.verify.check`.

    Attributes
    ----------
    module, function : names of the model (a torch module's class, a Keras model's name) and
        of ``attribute_fn``
    mode : the mode claimed by the caller (None if none was claimed)
    inputs : list of :class:`Input`
    target : what the function explains when it is not the class it is given ("layer
        block5_conv4"), else None
    verdict : "vanilla" | "deconvnet" | "guided" | "none" | "error" | "ambiguous"
    matches : tuple of the modes within tolerance (usually zero or one)
    dtype, rtol : the dtype the function ran in, and the tolerance that goes with it
    errors : {mode: :class:`ModeErrors`}, None after an error
    probe : :class:`Probe` or None (run only when no mode matches)
    error : str or None, what went wrong when ``attribute_fn`` raised or returned garbage
    notes, warnings : lists of str
    ok : True when the claimed mode matches (without a claim: when any mode matches)
    """

    module: str
    function: str
    mode: str = None
    inputs: list = field(default_factory=list)
    target: str = None
    verdict: str = "error"
    matches: tuple = ()
    dtype: str = None
    rtol: float = None
    errors: dict = None
    probe: Probe = None
    error: str = None
    notes: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    @property
    def ok(self):
        return self.mode in self.matches if self.mode is not None else bool(self.matches)

    @property
    def closest(self):
        """The mode with the smallest max relative error (None after an error)."""
        if not self.errors:
            return None
        return min(MODES, key=lambda m: (self.errors[m].max_rel, MODES.index(m)))

    def to_dict(self):
        return {**asdict(self), "matches": list(self.matches), "ok": self.ok, "closest": self.closest}

    def __repr__(self):
        return f"<minigbp.verify.Report {self.function} on {self.module}: {self.verdict}>"

    def __str__(self):
        lines = [f"minigbp verify: {self.function} on {self.module}"]
        if self.dtype:
            lines.append(f"  attribute_fn ran in {self.dtype}; a mode matches when, for every sample, "
                         f"max|err| <= {self.rtol:g} * max|minigbp map|")
        if self.inputs:
            lines.append("  inputs: " + "; ".join(f"{i.name} {tuple(i.shape)}" for i in self.inputs))
        if self.target:
            lines.append(f"  explains: {self.target} (minigbp seeds ones there)")
        lines += [f"  note: {note}" for note in self.notes]
        if self.error:
            lines += ["", f"  attribute_fn failed: {self.error}"]
        if self.errors:
            lines += ["", f"  {'mode':<11}{'max abs err':>13}{'max rel err':>13}   matches"]
            for m in MODES:
                e = self.errors[m]
                lines.append(f"  {m:<11}{_fmt(e.max_abs):>13}{_fmt(e.max_rel):>13}   {'yes' if e.match else 'no'}")
        claim = f"  (claimed: {self.mode} -> {'OK' if self.ok else 'MISMATCH'})" if self.mode is not None else ""
        what = f"ambiguous: {' = '.join(self.matches)} on these inputs" if self.verdict == "ambiguous" else self.verdict
        lines += ["", f"  verdict: {what}{claim}"]
        if self.probe is not None:
            lines += [""] + ["  " + line for line in self.probe.lines()]
        return "\n".join(lines)


def _fmt(v):
    if v is None:
        return "-"
    if not np.isfinite(v):
        return str(v)
    return f"{v:.2e}"


def _names(names, most=6):
    """A list of layer names for one line: all of a few, the first and last of many, and the count."""
    if len(names) <= most:
        return ", ".join(names)
    return f"{', '.join(names[:most - 2])}, ..., {', '.join(names[-2:])} ({len(names)} in all)"
