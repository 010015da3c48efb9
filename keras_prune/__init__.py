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
"""

from keras_prune import callbacks, criteria, data, export, graph, handlers, models, schedules
from keras_prune.api import find_layers, prunable, prune, strip, wrapped_layers
from keras_prune.callbacks import IterativePruning
from keras_prune.handlers import LayerHandler, register_handler
from keras_prune.errors import DataError, InputError, KerasPruneError, ModelError
from keras_prune.export import (
    SizeReport,
    export_keras,
    export_model,
    export_savedmodel,
    export_tflite,
    size_report,
)
from keras_prune.report import LayerSparsity, SparsityReport, sparsity_report
from keras_prune.shrink import ShrinkReport, shrink, shrink_with_report
from keras_prune.storage import load_model, save_model
from keras_prune.wrapper import PruneWrapper

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "InputError",
    "IterativePruning",
    "KerasPruneError",
    "LayerHandler",
    "LayerSparsity",
    "ModelError",
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
    "graph",
    "handlers",
    "load_model",
    "models",
    "prunable",
    "prune",
    "register_handler",
    "save_model",
    "schedules",
    "shrink",
    "shrink_with_report",
    "size_report",
    "sparsity_report",
    "strip",
    "wrapped_layers",
]
