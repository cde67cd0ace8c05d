"""Each preset of :mod:`minigbp.presets` against the real library (or a faithful copy of its recipe).

Random small networks in float64 (conv / relu / maxpool / avgpool / linear); "int" cases use
small integer weights and inputs, so exact zeros at ReLUs and tied maxima in pooling windows
occur and every rule at x == 0 is exercised (float64 integer arithmetic is exact).

Libraries (install: see the README; zennit and torchray with ``pip install --no-deps``):

* captum 0.9.0   -- Saliency(abs=False), Deconvolution, GuidedBackprop
* zennit 1.0.0   -- attribution.Gradient with no composite / DeconvNet / GuidedBackprop composites
* torchray 1.0.0.2 -- attribution.gradient / deconvnet / guided_backprop (+ its max |.| saliency)
* tf-keras-vis 0.8.7 with tensorflow-cpu -- Saliency on a Keras model ending in softmax
  (+ the classic ``tf.custom_gradient`` guidedRelu recipe)
* pytorch-grad-cam, utkuozbulak -- hand-written copies of their recipes (cited below)
* iNNvestigate -- a hand-derived case (it does not import with current TensorFlow)

Tolerance: 1e-10 (relative to the signal's scale) everywhere, float64 end to end.
"""

import os
import warnings

import numpy as np
import pytest

import minigbp as mg

from torch_helpers import to_torch

torch = pytest.importorskip("torch")
TOL = 1e-10


def close(got, want, tol=TOL):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(1.0, float(np.abs(want).max(initial=0)))
    err = float(np.abs(got - want).max(initial=0)) / scale
    assert err <= tol, f"max error {err:.3g} > {tol:g}"
    return err


# --------------------------------------------------------------------------- networks

def set_params(model, rng, kind):
    """Every parameter float64: small integers ("int") or normal ("cont")."""
    for _, layer in model.named_leaves():
        for pname in ("weight", "bias"):
            p = getattr(layer, pname, None)
            if p is not None:
                new = rng.integers(-1, 2, p.shape) if kind == "int" else rng.standard_normal(p.shape)
                setattr(layer, pname, new.astype(np.float64))
    return model


def data(rng, shape, kind):
    a = rng.integers(-2, 3, shape) if kind == "int" else rng.standard_normal(shape)
    return a.astype(np.float64)


def plain_net(rng, kind):
    """conv/relu/maxpool(overlapping)/conv/relu/avgpool/linear/relu/linear, 2x3x8x8 -> 2x5."""
    m = mg.Sequential(mg.Conv2d(3, 4, 3, padding=1), mg.ReLU(), mg.MaxPool2d(3, stride=2, padding=1),
                      mg.Conv2d(4, 4, 3, padding=1), mg.ReLU(), mg.AvgPool2d(2), mg.Flatten(),
                      mg.Linear(4 * 2 * 2, 6), mg.ReLU(), mg.Linear(6, 5))
    return set_params(m, rng, kind), data(rng, (2, 3, 8, 8), kind)


def tv_net(rng, kind):
    """torchvision-VGG-style: features / avgpool / flatten / classifier (with a ReLU), 1x3x8x8 -> 1x5."""
    m = mg.Sequential(
        features=mg.Sequential(mg.Conv2d(3, 4, 3, padding=1), mg.ReLU(), mg.MaxPool2d(2),
                               mg.Conv2d(4, 4, 3, padding=1), mg.ReLU(), mg.MaxPool2d(2)),
        avgpool=mg.AdaptiveAvgPool2d((2, 2)), flatten=mg.Flatten(),
        classifier=mg.Sequential(mg.Linear(16, 6), mg.ReLU(), mg.Dropout(), mg.Linear(6, 5)))
    return set_params(m, rng, kind), data(rng, (1, 3, 8, 8), kind)


CASES = [(seed, kind) for seed in range(3) for kind in ("int", "cont")]


def zero_case():
    """x == 0 exactly at a ReLU whose arriving signal is positive.

    h = x0 - x1 = 0 at x = (1, 1); out = h + 0 * ... so R = 1 > 0 at h. Rules that block at
    zero (autograd, Captum, zennit, pytorch-grad-cam) give 0 there; TorchRay's guided rule
    (``grad_input[input < 0] = 0``) lets R through: the input signal is (1, -1).
    """
    m = mg.Sequential(mg.Linear(2, 1, bias=False), mg.ReLU(), mg.Linear(1, 2, bias=False))
    m[0].weight = np.array([[1.0, -1.0]])
    m[2].weight = np.array([[1.0], [-1.0]])
    return m, np.array([[1.0, 1.0]])


def test_zero_case_separates_the_rules():
    m, x = zero_case()
    assert np.array_equal(mg.backprop(m, x, 0, "guided", preset="captum"), [[0.0, 0.0]])
    assert np.array_equal(mg.backprop(m, x, 0, "guided", preset="torchray"), [[1.0, -1.0]])


def tx(x):
    return torch.tensor(x, dtype=torch.float64, requires_grad=True)


# ------------------------------------------------------------------------------ Captum

@pytest.mark.parametrize("seed,kind", CASES + [("zero", "int")])
def test_captum(seed, kind):
    from captum.attr import Deconvolution, GuidedBackprop, Saliency

    m, x = zero_case() if seed == "zero" else plain_net(np.random.default_rng(seed), kind)
    t = to_torch(m)
    target = 0 if seed == "zero" else 3
    for mode, attr in (("vanilla", lambda: Saliency(t).attribute(tx(x), target=target, abs=False)),
                       ("deconvnet", lambda: Deconvolution(t).attribute(tx(x), target=target)),
                       ("guided", lambda: GuidedBackprop(t).attribute(tx(x), target=target))):
        close(mg.backprop(m, x, target, mode, preset="captum"), attr().detach().numpy())
    # Saliency's default abs=True is the "abs" post-processing
    if x.ndim == 4:
        close(mg.postprocess(mg.backprop(m, x, target, "vanilla", preset="captum"), "abs"),
              Saliency(t).attribute(tx(x), target=target).detach().numpy())


# ------------------------------------------------------------------------------ zennit

@pytest.fixture(scope="module")
def zennit():
    import zennit  # imports torchvision, made importable by conftest.py
    import zennit.attribution
    import zennit.composites
    return zennit


def _value_one_hot(target):
    """zennit docs (how-to/use-attributors.rst, one_hot_max): ``values[:, None] * eye[indices]``,
    here at a fixed target: the logit's value at the target, 0 elsewhere."""
    def fn(out):
        return out * torch.eye(out.shape[1], dtype=out.dtype)[[target] * out.shape[0]]
    return fn


@pytest.mark.parametrize("seed,kind", CASES + [("zero", "int")])
def test_zennit(zennit, seed, kind):
    from zennit.attribution import Gradient
    from zennit.composites import DeconvNet, GuidedBackprop

    m, x = zero_case() if seed == "zero" else plain_net(np.random.default_rng(seed), kind)
    t = to_torch(m)
    target = 0 if seed == "zero" else 3
    for mode, composite in (("vanilla", None), ("deconvnet", DeconvNet()), ("guided", GuidedBackprop())):
        with Gradient(t, composite) as attributor:
            _, rel = attributor(tx(x), _value_one_hot(target))
        close(mg.backprop(m, x, target, mode, preset="zennit"), rel.detach().numpy())
        # the docs' other seed, torch.eye(n)[[target]]: a one-hot 1
        with Gradient(t, composite) as attributor:
            _, rel = attributor(tx(x), torch.eye(t(tx(x)).shape[1], dtype=torch.float64)[[target] * len(x)])
        close(mg.backprop(m, x, target, mode, preset="zennit", seed="one"), rel.detach().numpy())


# ---------------------------------------------------------------------------- TorchRay

def _torchray(method, t, x, target, raw=True):
    kw = {"gradient_to_saliency": lambda v: v.grad.detach().clone()} if raw else {}
    return method(t, tx(x), target, **kw).detach().numpy()


@pytest.mark.parametrize("seed,kind", CASES + [("zero", "int")])
def test_torchray(seed, kind):
    from torchray.attribution.deconvnet import deconvnet
    from torchray.attribution.gradient import gradient
    from torchray.attribution.guided_backprop import guided_backprop

    m, x = zero_case() if seed == "zero" else plain_net(np.random.default_rng(seed), kind)
    t = to_torch(m)
    target = 0 if seed == "zero" else 3
    close(mg.backprop(m, x, target, "guided", preset="torchray"), _torchray(guided_backprop, t, x, target))
    close(mg.backprop(m, x, target, "deconvnet", preset="torchray"), _torchray(deconvnet, t, x, target))
    # torchray's gradient is plain autograd: it blocks at x == 0, unlike its guided rule, so the
    # vanilla mode needs relu_at_zero="block" on top of the preset (one switch serves both modes)
    close(mg.backprop(m, x, target, "vanilla", preset="torchray"),
          _torchray(gradient, t, x, target))
    if x.ndim == 4:  # its default saliency map: max |.| over channels
        for mode, method in (("guided", guided_backprop), ("deconvnet", deconvnet)):
            close(mg.postprocess(mg.backprop(m, x, target, mode, preset="torchray"), "max-abs"),
                  _torchray(method, t, x, target, raw=False))


def test_torchray_and_captum_differ_at_zero_and_each_preset_reproduces_its_library():
    from captum.attr import GuidedBackprop
    from torchray.attribution.guided_backprop import guided_backprop

    m, x = zero_case()
    t = to_torch(m)
    lib_captum = GuidedBackprop(t).attribute(tx(x), target=0).detach().numpy()
    lib_torchray = _torchray(guided_backprop, t, x, 0)
    assert np.array_equal(lib_captum, [[0.0, 0.0]]) and np.array_equal(lib_torchray, [[1.0, -1.0]])
    assert np.array_equal(mg.backprop(m, x, 0, "guided", preset="captum"), lib_captum)
    assert np.array_equal(mg.backprop(m, x, 0, "guided", preset="torchray"), lib_torchray)
    # and on the random integer networks the two libraries do differ somewhere (zeros occur)
    differ = 0
    for seed in range(3):
        m, x = plain_net(np.random.default_rng(seed), "int")
        t = to_torch(m)
        a = GuidedBackprop(t).attribute(tx(x), target=3).detach().numpy()
        b = _torchray(guided_backprop, t, x, 3)
        differ += not np.array_equal(a, b)
    assert differ


# ------------------------------------------------------------------- pytorch-grad-cam
# pytorch_grad_cam/guided_backprop.py (jacobgil/pytorch-grad-cam @084273b): GuidedBackpropReLU
# (lines 7-34; backward l.24-34: grad * [x > 0] * [grad > 0]); GuidedBackpropReLUModel.__call__
# replaces every nn.ReLU recursively (l.75, utils/find_layers.py l.11-15) and seeds
# loss = output[0, target_category]; loss.backward() (l.89-90): a one-hot 1, first sample.

class _GradCamGuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(self, input_img):
        positive_mask = (input_img > 0).type_as(input_img)
        output = torch.addcmul(torch.zeros(input_img.size()).type_as(input_img), input_img, positive_mask)
        self.save_for_backward(input_img, output)
        return output

    @staticmethod
    def backward(self, grad_output):
        input_img, output = self.saved_tensors
        positive_mask_1 = (input_img > 0).type_as(grad_output)
        positive_mask_2 = (grad_output > 0).type_as(grad_output)
        return torch.addcmul(torch.zeros(input_img.size()).type_as(input_img),
                             torch.addcmul(torch.zeros(input_img.size()).type_as(input_img), grad_output,
                                           positive_mask_1), positive_mask_2)


class _GradCamGuidedReLUasModule(torch.nn.Module):
    def forward(self, input_img):
        return _GradCamGuidedReLU.apply(input_img)


def _replace_all_layer_type_recursive(model, old_layer_type, new_layer):
    for name, layer in model._modules.items():
        if isinstance(layer, old_layer_type):
            model._modules[name] = new_layer
        _replace_all_layer_type_recursive(layer, old_layer_type, new_layer)


def _gradcam_guided(tmodel, x, target_category):
    _replace_all_layer_type_recursive(tmodel, torch.nn.ReLU, _GradCamGuidedReLUasModule())
    input_img = tx(x)
    output = tmodel(input_img)
    loss = output[0, target_category]
    loss.backward(retain_graph=True)
    return input_img.grad.numpy()


@pytest.mark.parametrize("seed,kind", CASES)
def test_pytorch_grad_cam(seed, kind):
    m, x = tv_net(np.random.default_rng(seed), kind)
    close(mg.backprop(m, x, 2, "guided", preset="pytorch-grad-cam"), _gradcam_guided(to_torch(m), x, 2))
    m, x = zero_case()
    close(mg.backprop(m, x, 0, "guided", preset="pytorch-grad-cam"), _gradcam_guided(to_torch(m), x, 0))


# ------------------------------------------------------------------------ utkuozbulak
# src/guided_backprop.py (utkuozbulak/pytorch-cnn-visualizations @ba22fa0): the backward hook
# of every ReLU that is a direct child of model.features (l.59-62) returns
# [forward output > 0] * clamp(grad_in[0], min=0) (l.41-49); the classifier's ReLUs keep their
# plain gradient. The gradient is read at the first layer of features (grad_in[0], l.28-33);
# the seed is a one-hot 1 (l.70-73; a FloatTensor there, the model's dtype here).
# src/misc_functions.py convert_to_grayscale (l.19-34): sum |.| over channels, then
# clip((g - min) / (p99 - min), 0, 1).

def _utkuozbulak_guided(tmodel, x, target_class):
    gradients, forward_relu_outputs = [], []

    def hook_function(module, grad_in, grad_out):
        gradients.append(grad_in[0])

    def relu_backward_hook_function(module, grad_in, grad_out):
        corresponding_forward_output = forward_relu_outputs[-1]
        corresponding_forward_output[corresponding_forward_output > 0] = 1
        modified_grad_out = corresponding_forward_output * torch.clamp(grad_in[0], min=0.0)
        del forward_relu_outputs[-1]
        return (modified_grad_out,)

    def relu_forward_hook_function(module, ten_in, ten_out):
        forward_relu_outputs.append(ten_out)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # register_backward_hook is deprecated; the recipe uses it
        first_layer = list(tmodel.features._modules.items())[0][1]
        first_layer.register_backward_hook(hook_function)
        for pos, module in tmodel.features._modules.items():
            if isinstance(module, torch.nn.ReLU):
                module.register_backward_hook(relu_backward_hook_function)
                module.register_forward_hook(relu_forward_hook_function)
        model_output = tmodel(tx(x))
        one_hot_output = torch.zeros(1, model_output.size()[-1], dtype=model_output.dtype)
        one_hot_output[0][target_class] = 1
        model_output.backward(gradient=one_hot_output)
    return gradients[-1].numpy()


def _convert_to_grayscale(im_as_arr):
    grayscale_im = np.sum(np.abs(im_as_arr), axis=0)
    im_max = np.percentile(grayscale_im, 99)
    im_min = np.min(grayscale_im)
    grayscale_im = (np.clip((grayscale_im - im_min) / (im_max - im_min), 0, 1))
    return np.expand_dims(grayscale_im, axis=0)


@pytest.mark.parametrize("seed,kind", CASES)
def test_utkuozbulak(seed, kind):
    m, x = tv_net(np.random.default_rng(seed), kind)
    want = _utkuozbulak_guided(to_torch(m), x, 2)
    got = mg.backprop(m, x, 2, "guided", preset="utkuozbulak")
    close(got, want)
    # the scope matters: guided at every ReLU is a different signal whenever the classifier's ReLU
    # sees a negative signal; the recipe equals guided-in-features + vanilla-in-classifier exactly
    close(got, mg.backprop(m, x, 2, "guided", relu_scope="features.*"))
    # its grayscale image, where the minimum of sum |.| is 0 (then "sum-abs-p99" is the same formula)
    gray = np.abs(want[0]).sum(axis=0)
    if gray.min() == 0 < np.percentile(gray, 99):
        close(mg.postprocess(got, "sum-abs-p99")[0], _convert_to_grayscale(want[0]))


def test_utkuozbulak_scope_is_needed():
    """A case where the classifier's ReLU gets a negative signal: full guided differs from the recipe."""
    for seed in range(20):
        m, x = tv_net(np.random.default_rng(seed), "cont")
        want = _utkuozbulak_guided(to_torch(m), x, 2)
        if not np.allclose(mg.backprop(m, x, 2, "guided"), want, atol=1e-12):
            close(mg.backprop(m, x, 2, "guided", preset="utkuozbulak"), want)
            return
    pytest.fail("no case where the relu_scope matters")


def test_utkuozbulak_grayscale_with_nonzero_minimum():
    s = np.ones((1, 3, 4, 4))
    s[0, 0] += np.arange(16).reshape(4, 4)
    close(mg.postprocess(s, "sum-abs-p99")[0], _convert_to_grayscale(s[0]))


# ------------------------------------------------------------------------ iNNvestigate

def test_innvestigate_hand_derived():
    """iNNvestigate's rules (src/innvestigate/analyzer/gradient_based.py @10e4fc4, and
    reverse_base.py): the reverse pass starts from ``_head_mapping(output)``, which is the output
    itself in ReverseAnalyzerBase (reverse_base.py l.220-228), so Deconvnet and GuidedBackprop seed
    the selected neuron's *value* (neuron_selection_mode picks it, the rest is 0), while Gradient
    overrides it with ones (gradient_based.py l.107-108). At a ReLU, GuidedBackprop applies relu to
    the reversed signal and then the gradient of the layer *with* its relu (l.218-224: [x > 0],
    TensorFlow's ReluGrad); Deconvnet the gradient of the layer *without* its relu (l.171-186).

    Network: h = relu(W1 x), y = W2 h, x = (2, 1, 1):
        W1 = [[1, -1, 0], [0, 1, -1], [-1, 0, 0]]  -> pre-activations (1, 0, -2), h = (1, 0, 0)
        W2 = [[2, -3, 1], [1, 1, 1]]             -> y = (2, 1); neuron 0, value 2
    Seed (2, 0). R at h = W2^T (2, 0) = (4, -6, 2).
      guided:    relu(R) = (4, 0, 2), times [pre > 0] = (1, 0, 0) -> (4, 0, 0); W1^T -> (4, -4, 0)
      deconvnet: relu(R) = (4, 0, 2);                              W1^T -> (2, -4, 0)
      gradient:  seed (1, 0): R = (2, -3, 1) * (1, 0, 0) = (2, 0, 0); W1^T -> (2, -2, 0)
    """
    m = mg.Sequential(mg.Linear(3, 3, bias=False), mg.ReLU(), mg.Linear(3, 2, bias=False))
    m[0].weight = np.array([[1.0, -1, 0], [0, 1, -1], [-1, 0, 0]])
    m[2].weight = np.array([[2.0, -3, 1], [1, 1, 1]])
    x = np.array([[2.0, 1, 1]])
    assert np.array_equal(mg.backprop(m, x, 0, "guided", preset="innvestigate"), [[4.0, -4, 0]])
    assert np.array_equal(mg.backprop(m, x, 0, "deconvnet", preset="innvestigate"), [[2.0, -4, 0]])
    assert np.array_equal(mg.backprop(m, x, 0, "vanilla", preset="innvestigate"), [[2.0, -2, 0]])
    # the pre-activation 0 at h[1] receives relu(R) = 0 here; a positive R at x == 0 is blocked:
    m[2].weight = np.array([[2.0, 3, 1], [1, 1, 1]])  # R at h = (4, 6, 2), y0 = 2
    assert np.array_equal(mg.backprop(m, x, 0, "guided", preset="innvestigate"), [[4.0, -4, 0]])


# ------------------------------------------------------------------------ tf-keras-vis

@pytest.fixture(scope="module")
def keras_tf():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    tf = pytest.importorskip("tensorflow")
    import keras
    if keras.backend.backend() != "tensorflow":
        pytest.skip("keras was already imported with another backend in this test run")
    return tf, keras


def _keras_twin(keras, m, hw):
    """A channels-last Keras model with minigbp model ``m``'s weights (conv HWIO, dense (in, out),
    the first dense permuted for channels-last flatten), ending in a softmax."""
    c1, c2, fc1, fc2 = m[0], m[3], m[7], m[9]
    inp = keras.Input((hw, hw, 3), dtype="float64")
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu", dtype="float64")(inp)
    y = keras.layers.MaxPooling2D(2, dtype="float64")(y)
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu", dtype="float64")(y)
    y = keras.layers.MaxPooling2D(2, dtype="float64")(y)
    y = keras.layers.Flatten(dtype="float64")(y)
    y = keras.layers.Dense(6, activation="relu", dtype="float64")(y)
    y = keras.layers.Dense(5, activation="softmax", dtype="float64")(y)
    km = keras.Model(inp, y)
    convs = [l for l in km.layers if isinstance(l, keras.layers.Conv2D)]
    denses = [l for l in km.layers if isinstance(l, keras.layers.Dense)]
    convs[0].set_weights([c1.weight.transpose(2, 3, 1, 0), c1.bias])
    convs[1].set_weights([c2.weight.transpose(2, 3, 1, 0), c2.bias])
    s = hw // 4
    denses[0].set_weights([fc1.weight.reshape(6, 4, s, s).transpose(2, 3, 1, 0).reshape(s * s * 4, 6), fc1.bias])
    denses[1].set_weights([fc2.weight.T, fc2.bias])
    return km


def _softmax_net(rng, kind, hw=8):
    m = mg.Sequential(mg.Conv2d(3, 4, 3, padding=1), mg.ReLU(), mg.MaxPool2d(2),
                      mg.Conv2d(4, 4, 3, padding=1), mg.ReLU(), mg.MaxPool2d(2), mg.Flatten(),
                      mg.Linear(4 * (hw // 4) ** 2, 6), mg.ReLU(), mg.Linear(6, 5), mg.Softmax())
    set_params(m, rng, kind)
    x = data(rng, (2, 3, hw, hw), kind)
    # keep the softmax away from saturation (its gradient would vanish): logits within about +-2
    scale = max(1.0, float(np.abs(m.forward(x, upto="9")[0]).max()) / 2)
    m[9].weight, m[9].bias = m[9].weight / scale, m[9].bias / scale
    return m, x


@pytest.mark.parametrize("seed,kind", [(0, "int"), (1, "cont")])
def test_tf_keras_vis_saliency(keras_tf, seed, kind):
    tf, keras = keras_tf
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.utils.scores import CategoricalScore

    m, x = _softmax_net(np.random.default_rng(seed), kind)
    km = _keras_twin(keras, m, 8)
    xk = x.transpose(0, 2, 3, 1)
    assert np.allclose(km(xk).numpy(), m(x), rtol=0, atol=1e-12)
    sal = Saliency(km, clone=True)
    # raw gradient of the softmax score: float64 throughout
    raw = sal(CategoricalScore([3, 3]), xk, gradient_modifier=None, keepdims=True, normalize_map=False)
    got = mg.backprop(m, x, 3, "vanilla", preset="tf-keras-vis")
    close(got, np.asarray(raw).transpose(0, 3, 1, 2))
    # the default display: abs, max over channels, per-sample min-max. tf-keras-vis's normalize adds
    # K.epsilon() to the denominator (tf_keras_vis/utils/__init__.py l.83-86): (m - lo) / (hi - lo + eps);
    # minigbp's "abs-max-minmax" is (m - lo) / (hi - lo), so rescale by (hi - lo) / (hi - lo + eps)
    shown = sal(CategoricalScore([3, 3]), xk)
    mag = np.abs(got).max(axis=1)
    span = (mag.max(axis=(1, 2)) - mag.min(axis=(1, 2)))[:, None, None]
    close(mg.postprocess(got, "abs-max-minmax")[:, 0] * span / (span + keras.config.epsilon()), shown)


def test_keras_guided_relu_recipe(keras_tf):
    """The classic Keras recipe: a tf.custom_gradient guidedRelu
    (grad = [dy > 0] * [x > 0] * dy) swapped into every layer whose activation is relu, and the
    gradient of the softmax output at the target (VGG19(include_top=True) style)."""
    tf, keras = keras_tf

    @tf.custom_gradient
    def guidedRelu(x):
        def grad(dy):
            return tf.cast(dy > 0, x.dtype) * tf.cast(x > 0, x.dtype) * dy
        return tf.nn.relu(x), grad

    for seed, kind in ((0, "int"), (2, "cont")):
        m, x = _softmax_net(np.random.default_rng(seed), kind)
        km = _keras_twin(keras, m, 8)
        for layer in km.layers:
            if hasattr(layer, "activation") and layer.activation == keras.activations.relu:
                layer.activation = guidedRelu
        xk = tf.constant(x.transpose(0, 2, 3, 1))
        with tf.GradientTape() as tape:
            tape.watch(xk)
            score = km(xk)[:, 1]
        want = tape.gradient(score, xk).numpy().transpose(0, 3, 1, 2)
        close(mg.backprop(m, x, 1, "guided"), want)  # the recipe's rule is the default guided one


# -------------------------------------------------------------- a real DenseNet: F.relu
# torchvision's DenseNet applies F.relu after features.norm5. Libraries that hook or replace
# nn.ReLU modules (Captum, zennit, pytorch-grad-cam) leave it plain autograd; TorchRay patches
# torch.relu, which F.relu calls, so it reaches it. Each preset says so, and matches.

@pytest.fixture(scope="module")
def densenet():
    torchvision = pytest.importorskip("torchvision")
    from torch_helpers import randomize_batchnorm

    torch.manual_seed(0)
    t = randomize_batchnorm(torchvision.models.densenet121(), seed=5).double().eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32))
    with torch.no_grad():
        target = int(t(tx(x)).argmax())
    return t, mg.from_torch(t), x, target


def test_presets_on_densenet_functional_relu(densenet, zennit):
    import copy

    from captum.attr import GuidedBackprop
    from torchray.attribution.guided_backprop import guided_backprop
    from zennit.attribution import Gradient
    from zennit.composites import GuidedBackprop as ZennitGuided

    t, m, x, target = densenet
    guided = {name: mg.backprop(m, x, target, "guided", preset=name)
              for name in ("captum", "zennit", "torchray", "pytorch-grad-cam")}
    close(guided["captum"], GuidedBackprop(t).attribute(tx(x), target=target).detach().numpy())
    with Gradient(t, ZennitGuided()) as attributor:
        _, rel = attributor(tx(x), _value_one_hot(target))
    close(guided["zennit"], rel.detach().numpy())
    close(guided["torchray"], _torchray(guided_backprop, t, x, target))
    close(guided["pytorch-grad-cam"], _gradcam_guided(copy.deepcopy(t), x, target))
    # the hooking libraries agree with each other, TorchRay with minigbp's default
    close(guided["pytorch-grad-cam"], guided["captum"])
    close(guided["torchray"], mg.backprop(m, x, target, "guided"))
    gap = np.abs(guided["torchray"] - guided["captum"]).max() / np.abs(guided["torchray"]).max()
    assert gap > 0.05
