"""The assignment's stubs, left unfinished for affine_backward; conv_backward_naive crashes;
max_pool_backward_naive is missing."""
from cs231n_correct import (affine_forward, conv_forward_naive, max_pool_forward_naive,  # noqa: F401
                            relu_backward, relu_forward)


def affine_backward(dout, cache):
    dx, dw, db = None, None, None
    return dx, dw, db


def conv_backward_naive(dout, cache):
    x, w, b, conv_param = cache
    return x[10], w, b
