"""Presets: the conventions of each major library, so minigbp reproduces its numbers.

``mg.backprop(model, x, target, mode, preset="torchray")`` sets the switches of
:mod:`minigbp.conventions` as the library does; :func:`minigbp.postprocess` with the
preset's ``postprocess`` then gives what the library shows. Models that end in a softmax
(tf-keras-vis's default, Keras ``include_top=True``) need an explicit
:class:`minigbp.Softmax` layer at the end: the seed goes through it, as in the library.

``checked`` says how the test suite (``tests/test_compat.py``) established the preset:
against the installed library, or against a hand-derived case from its documented rule
where the library does not install here.
"""

from dataclasses import dataclass

from .conventions import Conventions

__all__ = ["Preset", "PRESETS", "get_preset", "compat_table"]


@dataclass(frozen=True)
class Preset:
    name: str
    conventions: Conventions
    postprocess: str
    modes: tuple
    checked: str
    notes: str


PRESETS = {
    "captum": Preset(
        "captum", Conventions(), "raw", ("vanilla", "deconvnet", "guided"),
        "captum 0.9.0: Saliency(abs=False), Deconvolution, GuidedBackprop (tests/test_networks_vs_torch.py)",
        "GuidedBackprop/Deconvolution override every nn.ReLU's gradient "
        "(captum/attr/_core/guided_backprop_deconvnet.py); Saliency takes abs by default"),
    "zennit": Preset(
        "zennit", Conventions(seed="value"), "raw", ("vanilla", "guided"),
        "not checked yet",
        "the GuidedBackprop composite clamps the gradient at every ReLU; the documented "
        "example seeds output * one_hot (the logit's value)"),
    "torchray": Preset(
        "torchray", Conventions(relu_at_zero="pass"), "max-abs", ("vanilla", "deconvnet", "guided"),
        "not checked yet",
        "guided_backprop zeroes grad_input[input < 0] then clamps at 0, so a positive "
        "signal passes where x == 0 (torchray/attribution/guided_backprop.py); saliency "
        "maps are max |.| over channels"),
    "innvestigate": Preset(
        "innvestigate", Conventions(seed="value"), "raw", ("vanilla", "deconvnet", "guided"),
        "not checked yet",
        "analyzers seed with the output neuron's value (identity head) and apply the rule at "
        "every ReLU"),
    "tf-keras-vis": Preset(
        "tf-keras-vis", Conventions(), "abs-max-minmax", ("vanilla",),
        "not checked yet",
        "Saliency differentiates the score through the model's softmax (add mg.Softmax) and "
        "shows max |.| over channels, min-max normalized per sample"),
    "utkuozbulak": Preset(
        "utkuozbulak", Conventions(relu_scope="features.*"), "sum-abs-p99", ("vanilla", "guided"),
        "not checked yet",
        "hooks only the ReLUs that are direct children of model.features; grayscale "
        "images are sum |.| over channels clipped at the 99th percentile"),
    "pytorch-grad-cam": Preset(
        "pytorch-grad-cam", Conventions(), "raw", ("guided",),
        "not checked yet",
        "GuidedBackpropReLUModel replaces every ReLU (recursively) with a guided one: "
        "[x > 0] * [R > 0]; seeded with a one-hot 1"),
}


def get_preset(name):
    """A preset by name; ``ValueError`` listing the known ones otherwise."""
    if isinstance(name, Preset):
        return name
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def compat_table():
    """The compatibility matrix as text: one row per preset, its switches and how it was checked."""
    head = ("preset", "relu_at_zero", "relu_scope", "pool_ties", "seed", "postprocess", "checked against")
    rows = [head]
    for p in PRESETS.values():
        c = p.conventions
        rows.append((p.name, c.relu_at_zero, c.relu_scope or "all", c.pool_ties, c.seed, p.postprocess,
                     p.checked))
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
