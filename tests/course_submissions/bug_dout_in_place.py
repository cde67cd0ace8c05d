"""relu backward zeroes dout in place and returns it."""
from cs231n_correct import *  # noqa: F401,F403


def relu_backward(dout, cache):
    dout[cache <= 0] = 0
    return dout
