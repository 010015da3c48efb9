"""Pruning methods: masks and weight updates together, layer by layer, on calibration data.

Two are registered: ``sparsegpt`` (`SparseGPT`: Optimal Brain Surgeon updates of
the kept weights) and ``wanda`` (`Wanda`: ``|w| * ||x||`` per output, no update).
They work on Dense, Conv1D/Conv2D, EinsumDense and MultiHeadAttention layers
(`linear.linear_parts`). `get_pruner(name)` returns a method or a criterion.

Example:

```python
model = keras_prune.prunable(trained)
keras_prune.prune(model, {"conv2": 0.7, "fc1": 0.95}, "sparsegpt",
                  data=dataset.train(128, seed=0).take(20))
```
"""

from keras_prune.methods.base import (
    Method,
    available_methods,
    available_pruners,
    get_pruner,
    register_method,
)
from keras_prune.methods.calibration import LayerwiseMethod, input_gram
from keras_prune.methods.linear import KernelView, kernel_view, linear_parts
from keras_prune.methods.sparsegpt import SparseGPT
from keras_prune.methods.wanda import Wanda

__all__ = [
    "KernelView",
    "LayerwiseMethod",
    "Method",
    "SparseGPT",
    "Wanda",
    "available_methods",
    "available_pruners",
    "get_pruner",
    "input_gram",
    "kernel_view",
    "linear_parts",
    "register_method",
]
