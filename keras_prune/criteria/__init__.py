"""Pruning criteria: how important each weight is (higher = keep).

Seven are registered: ``magnitude``, ``taylor1``, ``taylor2``, ``taylor12``, ``l1``,
``l2`` and ``emp`` (docs/criteria.md compares them). Use `get_criterion(name,
**options)` for a registered criterion, `register_criterion` to add your own,
`available_criteria()` to list them.

Example:

```python
from keras_prune.criteria import get_criterion

criterion = get_criterion("taylor2", probes=8, hessian="gauss-newton")
scores = criterion.score(keras_prune.wrapped_layers(model), model, train_batches)
```
"""

from keras_prune.criteria.base import (
    Criterion,
    Scores,
    available_criteria,
    get_criterion,
    register_criterion,
)
from keras_prune.criteria.magnitude import Magnitude
from keras_prune.criteria.taylor import (
    HESSIAN_ESTIMATES,
    Taylor1,
    Taylor2,
    Taylor12,
    hessian_diagonal,
)
from keras_prune.criteria.gates import L1Gates, L2Gates
from keras_prune.criteria.empirical import Empirical

__all__ = [
    "Criterion",
    "Empirical",
    "HESSIAN_ESTIMATES",
    "L1Gates",
    "L2Gates",
    "Magnitude",
    "Scores",
    "Taylor1",
    "Taylor12",
    "Taylor2",
    "available_criteria",
    "get_criterion",
    "hessian_diagonal",
    "register_criterion",
]
