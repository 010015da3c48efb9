"""keras-prune: prune Keras 3 models by weight importance, retrain, and export them.

Example:

```python
import keras_prune

model = keras_prune.prunable(trained_model)            # wrap every prunable layer
keras_prune.prune(model, {"conv1": 0.5, "fc1": 0.95})  # magnitude, per layer
# ... retrain with model.fit: pruned weights stay exactly zero ...
plain = keras_prune.strip(model)                       # no keras_prune classes left
print(keras_prune.sparsity_report(plain).total_compression)
```

The public API is what `__all__` lists: the functions and classes below, and the
modules listed there (each with its own `__all__`). Names with a leading underscore
are internal. `keras_prune.shrink` is the function; the `shrink` module's public
names (`shrink_with_report`, `ShrinkReport`, `LayerShrink`) are all here too, so
no public name needs the module's path.
"""

from keras_prune import (
    callbacks,
    criteria,
    data,
    export,
    flops,
    graph,
    handlers,
    methods,
    models,
    schedules,
    selection,
    settings,
    storage,
    structured,
    training,
    unfolding,
)
from keras_prune.api import find_layers, prunable, prune, strip, wrapped_layers
from keras_prune.callbacks import IterativePruning
from keras_prune.handlers import LayerHandler, register_handler
from keras_prune.errors import BackendError, DataError, InputError, KerasPruneError, ModelError
from keras_prune.folding import fold_batchnorm
from keras_prune.export import (
    SizeReport,
    export_keras,
    export_model,
    export_savedmodel,
    export_tflite,
    quantize_keras,
    size_report,
)
from keras_prune.settings import PruneOptions
from keras_prune.report import LayerSparsity, SparsityReport, sparsity_report
from keras_prune.shrink import LayerShrink, ShrinkReport, shrink, shrink_with_report
from keras_prune.storage import load_model, save_model
from keras_prune.unfolding import unfold
from keras_prune.wrapper import PruneWrapper

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "DataError",
    "InputError",
    "IterativePruning",
    "KerasPruneError",
    "LayerHandler",
    "LayerShrink",
    "LayerSparsity",
    "ModelError",
    "PruneOptions",
    "PruneWrapper",
    "ShrinkReport",
    "SizeReport",
    "SparsityReport",
    "callbacks",
    "criteria",
    "data",
    "export",
    "export_keras",
    "export_model",
    "export_savedmodel",
    "export_tflite",
    "find_layers",
    "flops",
    "fold_batchnorm",
    "graph",
    "handlers",
    "load_model",
    "methods",
    "models",
    "prunable",
    "prune",
    "quantize_keras",
    "register_handler",
    "save_model",
    "schedules",
    "selection",
    "settings",
    "shrink",
    "shrink_with_report",
    "size_report",
    "sparsity_report",
    "storage",
    "strip",
    "structured",
    "training",
    "unfold",
    "unfolding",
    "wrapped_layers",
]
