"""TensorFlow/Keras oracles for the tests: float64 Keras, TensorFlow's own gradient with the
three ReLU rules written as ``tf.custom_gradient`` functions, and BatchNormalization layers
with non-trivial statistics."""

import contextlib
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def import_keras():
    """``(keras, tf)``; the test is skipped when TensorFlow is not installed."""
    tf = pytest.importorskip("tensorflow")
    import keras

    return keras, tf


@contextlib.contextmanager
def float64_keras(keras):
    """Layers (and ``keras.Input``) built inside compute in float64."""
    policy, floatx = keras.config.dtype_policy(), keras.config.floatx()
    keras.config.set_dtype_policy("float64")
    keras.config.set_floatx("float64")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(policy)
        keras.config.set_floatx(floatx)


def tf_relu(tf, mode):
    """A ReLU whose gradient follows ``mode``'s rule, written in TensorFlow: the oracle for
    guided backpropagation and the deconvnet (vanilla is TensorFlow's own ``relu``)."""
    if mode == "vanilla":
        return tf.nn.relu

    @tf.custom_gradient
    def relu(x):
        def grad(dy):
            if mode == "guided":
                return dy * tf.cast(x > 0, dy.dtype) * tf.cast(dy > 0, dy.dtype)
            return tf.nn.relu(dy)  # deconvnet: the forward mask is ignored
        return tf.nn.relu(x), grad

    return relu


def tf_gradient(tf, model, x, targets=None, layer=None):
    """The gradient, at ``x`` (N, H, W, C), of ``sum_i out[i, targets[i]]`` (or of the sum of
    ``layer``'s output), transposed to minigbp's (N, C, H, W)."""
    import keras

    if layer is not None:
        model = keras.Model(model.inputs, model.get_layer(layer).output)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out = model(xt, training=False)
        score = tf.reduce_sum(out) if targets is None else tf.reduce_sum(
            tf.gather(out, np.asarray(targets), axis=1, batch_dims=1))
    return tape.gradient(score, xt).numpy().transpose(0, 3, 1, 2)


def randomize_batchnorm(keras, model, seed=0):
    """Give every BatchNormalization layer statistics far from the identity."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape) if k in (0, 3) else rng.normal(0, 0.2, w.shape)
                               for k, w in enumerate(layer.get_weights())])


def nchw(x):
    return np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2))
