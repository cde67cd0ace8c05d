"""The functional core: one module per op, each with a ``*_naive`` loop version
(the equation of its docstring, line by line) and the vectorized version the layers use.

Contract (as in CS231n): ``out, cache = op_forward(x, ...)`` and
``dx[, dw, db] = op_backward(dout, cache)``; ReLU's backward also takes the mode. Ops with several inputs
(addition, concatenation) take them as ``op_forward(*xs)`` and return one signal per input.
Backward functions never write into ``dout`` or the cache.
"""

from .batchnorm import (batchnorm2d_backward, batchnorm2d_backward_data, batchnorm2d_backward_naive,
                        batchnorm2d_forward, batchnorm2d_forward_naive)
from .conv import (conv2d_backward, conv2d_backward_data, conv2d_backward_naive,
                   conv2d_backward_weights, conv2d_forward, conv2d_forward_naive)
from .linear import (linear_backward, linear_backward_data, linear_backward_naive,
                     linear_forward, linear_forward_naive)
from .merge import (add_backward, add_backward_naive, add_forward, add_forward_naive, cat_backward,
                    cat_backward_naive, cat_forward, cat_forward_naive)
from .pad import pad2d_backward, pad2d_backward_naive, pad2d_forward, pad2d_forward_naive
from .pool import (adaptive_avgpool2d_backward, adaptive_avgpool2d_backward_naive,
                   adaptive_avgpool2d_forward, adaptive_avgpool2d_forward_naive,
                   avgpool2d_backward, avgpool2d_backward_naive, avgpool2d_forward,
                   avgpool2d_forward_naive, maxpool2d_backward, maxpool2d_backward_naive,
                   maxpool2d_forward, maxpool2d_forward_naive)
from .reduce import global_max_backward, global_max_backward_naive, global_max_forward, global_max_forward_naive
from .relu import MODES, check_mode, relu_backward, relu_backward_naive, relu_forward
