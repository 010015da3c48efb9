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
    ALIASES,
    Method,
    available_methods,
    available_pruners,
    canonical_pruner,
    get_pruner,
    pruner_names,
    register_method,
)
from keras_prune.methods.calibration import (
    LayerwiseMethod,
    dense_cross_gram,
    input_gram,
    outlier_fractions,
)
from keras_prune.methods.linear import KernelView, kernel_view, linear_parts
from keras_prune.methods.sparsegpt import SparseGPT
from keras_prune.methods.wanda import Wanda

__all__ = [
    "ALIASES",
    "KernelView",
    "LayerwiseMethod",
    "Method",
    "SparseGPT",
    "Wanda",
    "available_methods",
    "available_pruners",
    "canonical_pruner",
    "dense_cross_gram",
    "get_pruner",
    "input_gram",
    "kernel_view",
    "linear_parts",
    "pruner_names",
    "outlier_fractions",
    "register_method",
]
