"""Which mode do published PyTorch and TensorFlow recipes really compute? minigbp.verify's verdicts.

    python examples/verify_recipes.py            # the verdict table
    python examples/verify_recipes.py --details  # and every full report

Each recipe is an ``attribute_fn(model, x, target) -> tensor`` (the contract of
``minigbp.verify.check``: ``x`` already requires grad, ``target`` is an int64 tensor
(N,), the seed is a one-hot 1 at the target logit). The models: a small VGG-like
network with torchvision's layout (``features`` / ``avgpool`` / ``classifier``,
forward flattening in between), and torchvision's own ResNet-18 and DenseNet-121, all
with seeded random weights (and BatchNorm statistics), checked on small inputs so the
script runs in seconds. The same functions work from the command line::

    minigbp verify examples/verify_recipes.py:make_model examples/verify_recipes.py:hook_recipe --mode guided
    minigbp verify examples/verify_recipes.py:make_densenet121 examples/verify_recipes.py:backward_hook_recipe

The TensorFlow recipes (the ``tf.custom_gradient`` guidedRelu swapped into ``layer.activation``,
on a class score and on ``block5_conv4``'s output; an answer whose "guided" ReLU returns
``dy * (x > 0)``; tf-keras-vis ``Saliency``) run on a Keras model with VGG19's layers and
names, narrow and at 32x32 so that they run in seconds::

    minigbp verify examples/verify_recipes.py:make_keras_vgg19 examples/verify_recipes.py:keras_guided_relu_layer \
        --target layer:block5_conv4

Requires torch, torchvision, captum and zennit, and for the TensorFlow rows tensorflow and
tf-keras-vis (test dependencies of minigbp).
"""

import argparse
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # this folder's torchvision_compat
from torchvision_compat import import_torchvision  # noqa: E402

try:
    import tensorflow as tf
except ImportError:  # the TensorFlow rows are left out
    tf = None

import minigbp as mg
from minigbp.verify import check


class SmallVGG(nn.Module):
    """VGG in miniature: torchvision's module layout, input (N, 3, 16, 16), 10 classes."""

    def __init__(self, inplace=False, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace), nn.MaxPool2d(2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Linear(16 * 2 * 2, 32), nn.ReLU(inplace), nn.Dropout(),
            nn.Linear(32, 32), nn.ReLU(inplace), nn.Dropout(),
            nn.Linear(32, num_classes),
        )

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def make_model():
    """The model every recipe is checked on (ReLUs not in place)."""
    torch.manual_seed(0)
    return SmallVGG().eval()


def make_model_inplace():
    """The same model with ``nn.ReLU(inplace=True)``, as torchvision builds VGG."""
    torch.manual_seed(0)
    return SmallVGG(inplace=True).eval()


def _torchvision(name):
    """torchvision's ``name`` with seeded random weights and BatchNorm statistics away from (0, 1)."""
    torchvision = import_torchvision()
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def make_resnet18():
    """torchvision's ResNet-18: every ReLU an ``nn.ReLU`` module (in place, each called twice per block)."""
    return _torchvision("resnet18")


def make_densenet121():
    """torchvision's DenseNet-121: ``nn.ReLU`` modules, and one ``F.relu`` after ``features.norm5``."""
    return _torchvision("densenet121")


# ------------------------------------------------------------------------- recipes

def captum_guided(model, x, target):
    """Captum's GuidedBackprop."""
    from captum.attr import GuidedBackprop
    return GuidedBackprop(model).attribute(x, target=target)


def captum_deconvolution(model, x, target):
    """Captum's Deconvolution."""
    from captum.attr import Deconvolution
    return Deconvolution(model).attribute(x, target=target)


def captum_saliency(model, x, target):
    """Captum's Saliency without the absolute value: the plain gradient."""
    from captum.attr import Saliency
    return Saliency(model).attribute(x, target=target, abs=False)


def _one_hot_backward(model, x, target):
    out = model(x)
    seed = torch.zeros_like(out)
    seed[torch.arange(len(target)), target] = 1
    out.backward(seed)
    return x.grad


def _clamp_grad_input(module, grad_input, grad_output):
    return (torch.clamp(grad_input[0], min=0.0),)


def hook_recipe(model, x, target):
    """The classic recipe: a full backward hook on every nn.ReLU clamps grad_input at 0.

    grad_input is already ``R * [x > 0]``, so clamping it gives guided backprop. Breaks
    with ``nn.ReLU(inplace=True)``: module backward hooks cannot wrap in-place ops.
    """
    handles = [m.register_full_backward_hook(_clamp_grad_input) for m in model.modules()
               if isinstance(m, nn.ReLU)]
    try:
        return _one_hot_backward(model, x, target)
    finally:
        for h in handles:
            h.remove()


def backward_hook_recipe(model, x, target):
    """The best-known PyTorch walkthrough (it explains a DenseNet-201): the older, non-full
    ``register_backward_hook`` on every nn.ReLU module clamps grad_in at 0. It runs with
    in-place ReLUs, and it cannot reach a ReLU that is a function call."""
    handles = [m.register_backward_hook(_clamp_grad_input) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        return _one_hot_backward(model, x, target)
    finally:
        for h in handles:
            h.remove()


def zennit_guided(model, x, target):
    """zennit's GuidedBackprop composite (rules on every nn.ReLU module), seeded with a one-hot 1."""
    from zennit.attribution import Gradient
    from zennit.composites import GuidedBackprop

    with Gradient(model, GuidedBackprop()) as attributor:
        out = model(x.detach())
        one_hot = torch.zeros_like(out)
        one_hot[torch.arange(len(target)), target] = 1
        _, relevance = attributor(x, one_hot)
    return relevance


class _GradCamGuidedReLU(torch.autograd.Function):
    """pytorch-grad-cam's GuidedBackpropReLU (pytorch_grad_cam/guided_backprop.py @084273b, l.7-34)."""

    @staticmethod
    def forward(ctx, x):
        output = x * (x > 0).type_as(x)
        ctx.save_for_backward(x)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * (x > 0).type_as(grad_output) * (grad_output > 0).type_as(grad_output)


class _GradCamGuidedReLUasModule(nn.Module):
    def forward(self, x):
        return _GradCamGuidedReLU.apply(x)


def pytorch_grad_cam_guided(model, x, target):
    """pytorch-grad-cam's GuidedBackpropReLUModel: it replaces every nn.ReLU module (recursively,
    l.75 and utils/find_layers.py l.11-15) by the function above, then backpropagates the target
    logit. Functional ReLUs are not modules, so they stay plain ReLUs."""
    def replace(module):
        for name, child in module._modules.items():
            if isinstance(child, nn.ReLU):
                module._modules[name] = _GradCamGuidedReLUasModule()
            else:
                replace(child)

    replace(model)
    return _one_hot_backward(model, x, target)


def hook_features_only(model, x, target):
    """The same hook, placed only on the ReLUs inside ``model.features``: the classifier's
    ReLUs stay vanilla, so the result is neither guided backprop nor the gradient."""
    handles = [m.register_full_backward_hook(_clamp_grad_input) for m in model.features.modules()
               if isinstance(m, nn.ReLU)]
    try:
        return _one_hot_backward(model, x, target)
    finally:
        for h in handles:
            h.remove()


class ForwardMaskReLU(torch.autograd.Function):
    """A "guided" ReLU as often posted: its backward applies only the forward mask."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return dy * (x > 0)  # R * [x > 0]: the ordinary ReLU gradient


class GuidedReLU(torch.autograd.Function):
    """The guided rule written correctly: both masks."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return dy.clamp(min=0) * (x > 0)  # R * [R > 0] * [x > 0]


def _with_relu_function(function):
    def attribute(model, x, target):
        relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
        for m in relus:
            m.forward = function.apply  # every nn.ReLU module now runs the custom function
        try:
            return _one_hot_backward(model, x, target)
        finally:
            for m in relus:
                del m.forward
    attribute.__name__ = attribute.__qualname__ = f"relu_function_{function.__name__}"
    return attribute


relu_function_forward_mask = _with_relu_function(ForwardMaskReLU)
relu_function_guided = _with_relu_function(GuidedReLU)

#: (recipe, model factory, attribute_fn, the mode it claims, the verdict minigbp gives)
RECIPES = [
    ("Captum GuidedBackprop", make_model, captum_guided, "guided", "guided"),
    ("Captum Deconvolution", make_model, captum_deconvolution, "deconvnet", "deconvnet"),
    ("Captum Saliency(abs=False)", make_model, captum_saliency, "vanilla", "vanilla"),
    ("full backward hook clamping grad_input, every nn.ReLU", make_model, hook_recipe, "guided", "guided"),
    ("custom ReLU Function, backward dy * (x > 0)", make_model, relu_function_forward_mask, "guided", "vanilla"),
    ("custom ReLU Function, backward dy.clamp(min=0) * (x > 0)", make_model, relu_function_guided, "guided",
     "guided"),
    ("the hook on the ReLUs of model.features only", make_model, hook_features_only, "guided", "none"),
    ("the hook recipe on nn.ReLU(inplace=True)", make_model_inplace, hook_recipe, "guided", "error"),
    ("Captum GuidedBackprop on nn.ReLU(inplace=True)", make_model_inplace, captum_guided, "guided", "guided"),
    ("ResNet-18: Captum GuidedBackprop", make_resnet18, captum_guided, "guided", "guided"),
    ("ResNet-18: backward hook on every nn.ReLU (DenseNet walkthrough)", make_resnet18, backward_hook_recipe,
     "guided", "guided"),
    ("ResNet-18: zennit GuidedBackprop composite", make_resnet18, zennit_guided, "guided", "guided"),
    ("ResNet-18: pytorch-grad-cam GuidedBackpropReLUModel", make_resnet18, pytorch_grad_cam_guided, "guided",
     "guided"),
    ("DenseNet-121: Captum GuidedBackprop", make_densenet121, captum_guided, "guided", "none"),
    ("DenseNet-121: backward hook on every nn.ReLU (DenseNet walkthrough)", make_densenet121,
     backward_hook_recipe, "guided", "none"),
]


# ------------------------------------------------------------------ TensorFlow / Keras

def make_keras_vgg19():
    """VGG19's layers and names (block1_conv1 .. block5_conv4, fc1, fc2, a softmax head), narrow,
    for 32x32 inputs and 10 classes; seeded random weights."""
    import keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    inp = keras.Input((32, 32, 3))
    x = inp
    for block, (convs, filters) in enumerate([(2, 8), (2, 8), (4, 16), (4, 16), (4, 16)], start=1):
        for i in range(1, convs + 1):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{block}_conv{i}")(x)
        x = layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(32, activation="relu", name="fc1")(x)
    x = layers.Dense(32, activation="relu", name="fc2")(x)
    return keras.Model(inp, layers.Dense(10, activation="softmax", name="predictions")(x), name="vgg19")


def keras_guided_relu_class(model, x, target):
    """The widely copied Keras recipe: a ``tf.custom_gradient`` guidedRelu swapped into every
    layer whose activation is relu, the gradient of the class score."""
    @tf.custom_gradient
    def guidedRelu(x):
        def grad(dy):
            return tf.cast(dy > 0, "float32") * tf.cast(x > 0, "float32") * dy
        return tf.nn.relu(x), grad

    gb_model = tf.keras.models.Model(inputs=[model.inputs], outputs=[model.output])
    layer_dict = [layer for layer in gb_model.layers[1:] if hasattr(layer, "activation")]
    for layer in layer_dict:
        if layer.activation == tf.keras.activations.relu:
            layer.activation = guidedRelu
    with tf.GradientTape() as tape:
        inputs = tf.cast(x, tf.float32)
        tape.watch(inputs)
        outputs = gb_model(inputs)
        score = tf.gather(outputs, target, batch_dims=1)
    return tape.gradient(score, inputs)


def keras_guided_relu_layer(model, x, target):
    """The same recipe as it is usually written: the gradient of ``block5_conv4``'s output sum."""
    @tf.custom_gradient
    def guidedRelu(x):
        def grad(dy):
            return tf.cast(dy > 0, "float32") * tf.cast(x > 0, "float32") * dy
        return tf.nn.relu(x), grad

    gb_model = tf.keras.models.Model(inputs=[model.inputs], outputs=[model.get_layer("block5_conv4").output])
    layer_dict = [layer for layer in gb_model.layers[1:] if hasattr(layer, "activation")]
    for layer in layer_dict:
        if layer.activation == tf.keras.activations.relu:
            layer.activation = guidedRelu
    with tf.GradientTape() as tape:
        inputs = tf.cast(x, tf.float32)
        tape.watch(inputs)
        outputs = gb_model(inputs)
    return tape.gradient(outputs, inputs)


def keras_forward_mask_relu(model, x, target):
    """A widely read answer's "guided" ReLU, whose gradient is ``dy * (x > 0)``: the plain gradient."""
    @tf.custom_gradient
    def guided_relu(x):
        def grad(dy):
            return dy * tf.cast(x > 0, dy.dtype)
        return tf.nn.relu(x), grad

    for layer in model.layers:
        if getattr(layer, "activation", None) == tf.keras.activations.relu:
            layer.activation = guided_relu
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = tf.gather(model(x), target, batch_dims=1)
    return tape.gradient(score, x)


def tf_keras_vis_saliency(model, x, target):
    """tf-keras-vis ``Saliency``, the raw signed gradient (its default display takes ``abs``)."""
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.utils.scores import CategoricalScore

    saliency = Saliency(model)
    return saliency(CategoricalScore(list(target.numpy())), x, gradient_modifier=None, keepdims=True,
                    normalize_map=False)


#: (recipe, model factory, attribute_fn, the mode it claims, the verdict, what it explains)
TF_RECIPES = [
    ("Keras: custom-gradient guidedRelu in layer.activation, class score", make_keras_vgg19,
     keras_guided_relu_class, "guided", "guided", None),
    ("Keras: the same guidedRelu, sum of block5_conv4's output", make_keras_vgg19, keras_guided_relu_layer,
     "guided", "guided", "layer:block5_conv4"),
    ("Keras: a \"guided\" ReLU whose gradient is dy * (x > 0)", make_keras_vgg19, keras_forward_mask_relu,
     "guided", "vanilla", None),
    ("Keras: tf-keras-vis Saliency (gradient_modifier=None)", make_keras_vgg19, tf_keras_vis_saliency,
     "vanilla", "vanilla", None),
] if tf is not None else []


def where(report):
    """One line on why a recipe fails its claim."""
    if report.error:
        return report.error
    p = report.probe
    if p is None:
        return ""
    if not p.possible:
        return f"probe not possible: {p.reason}"
    d = p.divergence[p.focus]
    if d is None:
        return "the layer signals agree; the difference is in what attribute_fn returns"
    text = f"at {d.layer or 'the output seed'}"
    if p.skipped:
        text += f"; ReLUs left vanilla: {', '.join(p.skipped)}"
    return text


def run(details=False):
    """Check every recipe; print the table; return ``[(recipe, expected, report), ...]``."""
    results = []
    for name, factory, fn, claim, expected in RECIPES:
        results.append((name, expected, check(factory(), fn, mode=claim)))
    for name, factory, fn, claim, expected, target in TF_RECIPES:
        results.append((name, expected, check(factory(), fn, mode=claim, target=target)))
    head = (f"{'recipe':<70}{'claims':<11}{'verdict':<11}{'vanilla':>9}{'deconvnet':>10}{'guided':>9}"
            "   where it diverges from its claim")
    print(head)
    print("-" * len(head))
    for name, expected, report in results:
        errs = ("".join(f"{report.errors[m].max_rel:>{w}.1e}" for m, w in zip(mg.MODES, (9, 10, 9)))
                if report.errors else f"{'-':>9}{'-':>10}{'-':>9}")
        print(f"{name:<70}{report.mode:<11}{report.verdict:<11}{errs}   {where(report)}")
    print("\n(max relative error of each recipe's map against minigbp's map in each mode)")
    if details:
        for name, _, report in results:
            print(f"\n=== {name}\n{report}")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--details", action="store_true", help="print every full report")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the model is tiny: one thread is faster
    try:
        results = run(args.details)
    finally:
        torch.set_num_threads(threads)
    wrong = [name for name, expected, report in results if report.verdict != expected]
    if wrong:
        print(f"\nunexpected verdicts: {', '.join(wrong)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
