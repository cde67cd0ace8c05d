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

from dataclasses import dataclass, field

from .conventions import Conventions

__all__ = ["Preset", "PRESETS", "get_preset"]


@dataclass(frozen=True)
class Preset:
    """A library's conventions. ``by_mode`` holds switches the library sets differently in
    one mode (e.g. TorchRay's plain gradient is autograd's, blocking at x == 0)."""

    name: str
    conventions: Conventions
    postprocess: str
    modes: tuple
    checked: str
    notes: str
    by_mode: dict = field(default_factory=dict)

    def for_mode(self, mode):
        """The conventions this library uses in ``mode``."""
        extra = self.by_mode.get(mode)
        return self.conventions.updated(**extra) if extra else self.conventions


PRESETS = {
    "captum": Preset(
        "captum", Conventions(functional_relu="vanilla", upsample="nearest"), "raw", ("vanilla", "deconvnet", "guided"),
        "captum 0.9.0: Saliency(abs=False), Deconvolution, GuidedBackprop; float64 random conv nets "
        "(integer data: zeros, ties) and an x == 0 case; max error 4e-16",
        "GuidedBackprop/Deconvolution hook every nn.ReLU module (captum/attr/_core/"
        "guided_backprop_deconvnet.py l.94: isinstance(module, torch.nn.ReLU)), so ReLUs called as "
        "functions (F.relu after DenseNet's norm5) stay plain autograd; _backward_hook "
        "l.98-110 returns F.relu(grad_input) (guided: R * [x > 0] * [R > 0], blocks at x == 0) or "
        "F.relu(grad_output) (deconvnet, use_relu_grad_output=True l.250); target seeds a one-hot 1. "
        "Saliency takes abs by default (captum/attr/_core/saliency.py l.43, l.136-137: postprocess 'abs'). "
        "GuidedGradCam (captum/attr/_core/guided_grad_cam.py) multiplies that guided map by LayerGradCam "
        "with relu_attributions=True upsampled by LayerAttribution.interpolate, whose default "
        "interpolate_mode is 'nearest' (captum/attr/_utils/attribution.py): upsample 'nearest'"),
    "zennit": Preset(
        "zennit", Conventions(seed="value", functional_relu="vanilla"), "raw", ("vanilla", "deconvnet", "guided"),
        "zennit 1.0.0: attribution.Gradient without composite, with DeconvNet and GuidedBackprop "
        "composites, seeded output * one_hot (and torch.eye one-hot with seed='one'); float64 random "
        "conv nets and an x == 0 case; max error 1.1e-15",
        "ReLUGuidedBackprop (src/zennit/rules.py l.449-468) returns grad_input * (grad_output > 0): "
        "R * [x > 0] * [R > 0], blocks at x == 0; ReLUDeconvNet (rules.py l.427-446) grad_output.clamp(min=0); "
        "composites map every torch.nn.ReLU module (composites.py l.503-546), not functional ReLUs. The seed is the caller's "
        "attr_output (attribution.py l.113-122, default identity = the whole output); the docs' "
        "one_hot_max example seeds values * one_hot (docs/source/how-to/use-attributors.rst, "
        "one_hot_max), their first example torch.eye(10)[[0]] (a one-hot 1: seed='one')"),
    "torchray": Preset(
        "torchray", Conventions(relu_at_zero="pass"), "max-abs", ("vanilla", "deconvnet", "guided"),
        "torchray 1.0.0.2: guided_backprop, deconvnet (raw and default max |.| saliency), and gradient "
        "(which blocks at x == 0: by_mode); float64 random conv nets and an x == 0 case where captum and "
        "torchray differ; max error 4e-16",
        "GuidedBackpropReLU.backward (torchray/attribution/guided_backprop.py l.62-69) zeroes "
        "grad_input[input < 0] then clamps at 0, so a positive signal passes where x == 0; "
        "DeConvNetReLU (deconvnet.py l.70-73) grad_output.clamp(min=0); ReLUContext patches torch.relu "
        "(common.py l.99-105), i.e. every ReLU; get_backward_gradient seeds a one-hot 1; "
        "gradient_to_saliency (common.py l.351-371) is max |.| over channels. torchray's plain "
        "'gradient' is autograd, which blocks at x == 0 (by_mode)",
        by_mode={"vanilla": {"relu_at_zero": "block"}}),
    "innvestigate": Preset(
        "innvestigate", Conventions(seed="value"), "raw", ("vanilla", "deconvnet", "guided"),
        "hand-derived case from its source rule (iNNvestigate does not import with current TensorFlow)",
        "ReverseAnalyzerBase._head_mapping keeps the output (src/innvestigate/analyzer/reverse_base.py "
        "l.220-228 @10e4fc4): Deconvnet and GuidedBackprop seed the selected neuron's value; "
        "guided_backprop_reverse_relu_layer (analyzer/gradient_based.py l.218-224) applies relu to the "
        "reversed signal then the gradient of the layer with its relu ([x > 0], blocks at zero); "
        "DeconvnetReverseReLULayer (l.171-186) the gradient of the layer without it; rules at every "
        "layer with a relu activation. Its Gradient analyzer seeds ones (_head_mapping l.107-108; "
        "by_mode)",
        by_mode={"vanilla": {"seed": "one"}}),
    "tf-keras-vis": Preset(
        "tf-keras-vis", Conventions(), "abs-max-minmax", ("vanilla",),
        "tf-keras-vis 0.8.7 on tensorflow-cpu 2.21.0 / keras 3.15.1: Saliency (raw gradient and its "
        "default display) on a float64 Keras model ending in softmax; also the Keras tf.custom_gradient "
        "guidedRelu recipe in guided mode; max error 3e-16",
        "Saliency differentiates the score through the model's softmax (add mg.Softmax) with "
        "tf.GradientTape (tf_keras_vis/saliency.py, _get_gradients), then gradient_modifier abs, max over "
        "channels (keepdims=False) and per-sample min-max; its normalize divides by "
        "max - min + K.epsilon() (tf_keras_vis/utils/__init__.py l.73-86), 'abs-max-minmax' has no epsilon"),
    "utkuozbulak": Preset(
        "utkuozbulak", Conventions(relu_scope="features.*"), "sum-abs-p99", ("guided",),
        "hand-written copy of the recipe (src/guided_backprop.py @ba22fa0) run in torch float64 on a "
        "torchvision-style features/avgpool/classifier net; max error 2e-16",
        "hooks only the ReLUs that are direct children of model.features (src/guided_backprop.py "
        "l.59-62): [forward output > 0] * clamp(grad_in[0], min=0) (l.41-49), blocks at zero; the "
        "classifier's ReLUs stay vanilla; seed a one-hot 1 (l.70-73). convert_to_grayscale "
        "(src/misc_functions.py l.19-34) is clip((g - min) / (p99 - min), 0, 1) of g = sum |.| over "
        "channels, which is what 'sum-abs-p99' computes"),
    "pytorch-grad-cam": Preset(
        "pytorch-grad-cam", Conventions(functional_relu="vanilla"), "raw", ("guided",),
        "hand-written copy of GuidedBackpropReLUModel (pytorch_grad_cam/guided_backprop.py @084273b) "
        "run in torch float64 on a torchvision-style net and an x == 0 case; max error 3e-17",
        "GuidedBackpropReLU.backward (pytorch_grad_cam/guided_backprop.py l.20-34): grad * [x > 0] * "
        "[grad > 0]; __call__ replaces every nn.ReLU module recursively (l.75; utils/find_layers.py l.11-15), "
        "not functional ReLUs, "
        "and seeds loss = output[0, target_category] (l.89-90): a one-hot 1"),
}


def get_preset(name):
    """A preset by name; ``ValueError`` listing the known ones otherwise."""
    if isinstance(name, Preset):
        return name
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]
