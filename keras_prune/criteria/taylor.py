"""Taylor criteria: the loss change of removing a weight, estimated from derivatives.

Removing weight ``w_k`` (setting it to 0) changes the loss ``L`` by

    dL_k = L(w - w_k e_k) - L(w) = -g_k w_k + 1/2 h_kk w_k^2 + O(w_k^3)

with ``g`` the gradient and ``h_kk`` the Hessian diagonal of the mean loss over the
scoring batches. `Taylor1` keeps the first-order term (Molchanov et al. 2017, 2019),
`Taylor2` the second-order term (Optimal Brain Damage, LeCun et al. 1990) and
`Taylor12` both. All derivatives come from the backend's autodiff
(`keras_prune.autodiff`: `tf.GradientTape` or `jax.grad`); the Hessian diagonal from
Hutchinson probes (forward-over-backward Hessian-vector products) or a Monte-Carlo
Gauss-Newton estimate (see `hessian_diagonal`).

The model runs with ``training=False`` and every pass sees the same batches, read
once (`objective.fixed_batches`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_prune import autodiff
from keras_prune.criteria.base import Criterion, Scores, register_criterion
from keras_prune.criteria.objective import (
    Batch,
    TaskLoss,
    batch_weights,
    by_layer,
    check_damping,
    check_model,
    damp,
    fixed_batches,
    progress_bar,
    scored_variables,
)
from keras_prune.errors import InputError
from keras_prune.wrapper import PruneWrapper

HESSIAN_ESTIMATES = ("auto", "gauss-newton", "hutchinson", "fisher")
"""The Hessian-diagonal estimates `hessian_diagonal` offers; ``"auto"`` (taylor2's and
taylor12's default) is ``"gauss-newton"`` where the model's loss allows it (one sparse
categorical cross-entropy loss), else ``"hutchinson"``."""


@dataclass
class Derivatives:
    """Derivatives of the mean loss over the scoring batches, per scored variable.

    Attributes:
        gradient: the gradient of the mean loss over all scoring images,
            ``sum_b (n_b / N) g_b``.
        abs_product: ``sum_b (n_b / N) |g_b * w|``: the first-order loss change of
            each batch, in absolute value, averaged over the batches.
        squared_product: ``sum_b (n_b / N) (g_b * w)^2``: its square, averaged over
            the batches (Molchanov et al. 2019, accumulated per batch).
        hessian: the Hessian-diagonal estimate, or None if not asked for.
    """

    gradient: list[np.ndarray]
    abs_product: list[np.ndarray]
    squared_product: list[np.ndarray]
    hessian: list[np.ndarray] | None


def _check_probes(probes: int) -> int:
    if int(probes) != probes or probes < 1:
        raise InputError(f"probes must be a positive integer, got {probes}")
    return int(probes)


def _check_hessian(hessian: str) -> str:
    if hessian not in HESSIAN_ESTIMATES:
        raise InputError(
            f"unknown Hessian estimate '{hessian}'; choose one of: {', '.join(HESSIAN_ESTIMATES)}"
        )
    return hessian


def _probes(variables, masks, seed_pair: np.ndarray) -> list[np.ndarray]:
    """Rademacher probes (entries +-1) on the kept weights, one per variable.

    Drawn by TensorFlow's stateless generator, whatever the backend, so every backend
    estimates with the same probes.
    """
    probes = []
    for i, (v, m) in enumerate(zip(variables, masks)):
        folded = tf.random.experimental.stateless_fold_in(seed_pair, i)
        bits = tf.random.stateless_uniform(v.shape, folded, minval=0, maxval=2, dtype=tf.int32)
        sign = (2 * bits.numpy() - 1).astype(v.dtype)
        probes.append(sign * keras.ops.convert_to_numpy(m.value).astype(v.dtype))
    return probes


def derivatives(
    layers: Sequence[PruneWrapper],
    model: keras.Model,
    batches: Sequence[Batch],
    hessian: str | None = None,
    probes: int = 1,
    seed: int = 0,
    verbose: bool = False,
) -> Derivatives:
    """Gradients (and, if asked, the Hessian diagonal) of the mean loss on `batches`.

    Hessian-diagonal estimates of ``H = sum_b (n_b / N) H_b``:

    - ``"hutchinson"``: ``diag(H) = E[z * Hz]`` for Rademacher ``z`` (entries +-1),
      unbiased for the exact diagonal. Each probe costs one Hessian-vector product,
      computed forward-over-backward (`autodiff.hessian_vector`), about three times
      a gradient. Its error per entry is the
      norm of that row's off-diagonal Hessian entries over sqrt(probes * batches).
    - ``"gauss-newton"``: the Gauss-Newton diagonal, which for softmax
      cross-entropy is the Fisher information. With labels ``y~`` sampled from the
      model's own softmax, per-image gradients have mean zero, so for a batch of
      ``n`` images ``n * (batch-mean gradient)^2`` is an unbiased estimate of the
      batch's mean Gauss-Newton diagonal: one forward and backward pass per draw
      (a gradient's cost), and never negative. Needs a sparse categorical
      cross-entropy loss.
    - ``"fisher"``: the empirical Fisher diagonal ``(1/N) sum_i g_i^2``, from the
      gradient ``g_i`` of each scoring image's loss at its true label, one image at
      a time (one gradient per image, whatever `probes`). ``1/2 F w^2`` is then
      half the squared per-image Taylor term of Molchanov et al. (2019),
      ``(1/N) sum_i (g_i w)^2``: never negative, and it needs no particular loss.

    At a pruned weight (held at zero) the gradient is the loss's slope along that
    zero weight, and the Hutchinson diagonal is 0 (probes are drawn on kept weights
    only); every score multiplies by the weight, so pruned weights score 0.

    Args:
        layers: the wrapped layers whose prunable variables are differentiated.
        model: the model, computing the loss (see `objective.TaskLoss`).
        batches: fixed scoring batches ``(x, y)``.
        hessian: None (gradients only) or one of `HESSIAN_ESTIMATES` (``"auto"``:
            ``"gauss-newton"`` if the loss is one sparse categorical cross-entropy,
            else ``"hutchinson"``).
        probes: Rademacher probes (Hutchinson) or label draws (Gauss-Newton) per batch.
        seed: seed of the probes and draws; the estimate is deterministic given it.
        verbose: show a progress bar.

    Returns:
        The `Derivatives`, each a list aligned with `objective.scored_variables(layers)`.

    Example:

    ```python
    found = derivatives(layers, model, fixed_batches(data, "mine"), "hutchinson", probes=8)
    predicted_change = [-g * w + 0.5 * h * w * w for g, h, w in
                        zip(found.gradient, found.hessian, weights)]
    ```
    """
    probes = _check_probes(probes)
    if hessian is not None:
        _check_hessian(hessian)
    variables = scored_variables(layers)
    masks = [m for layer in layers for m in layer.masks]
    loss = TaskLoss(model)
    if hessian == "auto":
        hessian = "gauss-newton" if loss.samples_labels() else "hutchinson"
    if hessian == "gauss-newton" and not loss.samples_labels():
        raise InputError(loss.sampling_problem())
    weights = [w for layer in layers for w in layer.effective_weights()]
    values = [v.value for v in variables]

    def mean_loss(values, x, y):
        with autodiff.substituted(variables, values):
            return loss.mean(y, model(x, training=False))

    def sampled_loss(values, x, seed_pair):
        with autodiff.substituted(variables, values):
            outputs = model(x, training=False)
        logits = keras.ops.stop_gradient(loss.categorical_logits(outputs))
        return loss.mean(autodiff.sample_categorical(logits, seed_pair), outputs)

    gradient_step = autodiff.gradient(mean_loss)
    hutchinson_step = autodiff.hessian_vector(mean_loss)
    sampled_gradient = autodiff.gradient(sampled_loss)

    gradient = [np.zeros_like(w) for w in weights]
    abs_product = [np.zeros_like(g) for g in gradient]
    squared_product = [np.zeros_like(g) for g in gradient]
    diagonal = [np.zeros_like(g) for g in gradient] if hessian else None
    draws = 1 if hessian == "fisher" else probes
    bar = progress_bar(len(batches) * (draws if hessian else 1), verbose, "step")
    for b, ((x, y), share) in enumerate(zip(batches, batch_weights(batches))):
        grads = None if hessian == "hutchinson" else gradient_step(values, x, y)
        for p in range(draws if hessian else 0):
            seed_pair = np.array([seed, b * probes + p], np.int32)
            if hessian == "fisher":
                estimate = _per_image_squared_gradients(gradient_step, values, x, y)
            elif hessian == "hutchinson":
                # Probes live on the kept weights only: a pruned weight is held at zero,
                # so it is not a direction the Hessian may couple to the kept ones.
                probes_z = _probes(variables, masks, seed_pair)
                probe_grads, products = hutchinson_step(values, probes_z, x, y)
                grads = probe_grads if grads is None else grads
                estimate = [z * np.asarray(hz) for z, hz in zip(probes_z, products)]
            else:
                # n * (batch-mean gradient at sampled labels)^2: see the docstring.
                sampled = sampled_gradient(values, x, seed_pair)
                count = keras.tree.flatten(x)[0].shape[0]
                estimate = [count * np.asarray(g) ** 2 for g in sampled]
            for d, e in zip(diagonal, estimate):
                d += share / draws * e
            if bar is not None:
                bar.add(1)
        if bar is not None and not hessian:
            bar.add(1)
        for total, abs_total, squared_total, g, w in zip(gradient, abs_product, squared_product, grads, weights):
            g = keras.ops.convert_to_numpy(g)
            total += share * g
            abs_total += share * np.abs(g * w)
            squared_total += share * (g * w) ** 2
    return Derivatives(
        gradient=gradient, abs_product=abs_product, squared_product=squared_product, hessian=diagonal
    )


def _per_image_squared_gradients(gradient_step, values, x, y) -> list[np.ndarray]:
    """``(1/n) sum_i g_i^2`` over the `n` images of one batch, ``g_i`` the gradient of
    image ``i``'s loss: the batch's empirical Fisher diagonal."""
    count = keras.tree.flatten(x)[0].shape[0]
    total = None
    for i in range(count):
        one = keras.tree.map_structure(lambda t: t[i : i + 1], (x, y))
        squares = [np.asarray(keras.ops.convert_to_numpy(g), np.float64) ** 2 for g in gradient_step(values, *one)]
        total = squares if total is None else [t + s for t, s in zip(total, squares)]
    return [(t / count).astype(np.asarray(keras.ops.convert_to_numpy(v)).dtype) for t, v in zip(total, values)]


def hessian_diagonal(
    layers: Sequence[PruneWrapper],
    model: keras.Model,
    data: Iterable,
    hessian: str = "hutchinson",
    probes: int = 1,
    seed: int = 0,
) -> dict[PruneWrapper, list[np.ndarray]]:
    """The estimated Hessian diagonal of the mean loss on `data`, per layer.

    Args:
        layers: wrapped layers.
        model: the model.
        data: training batches ``(x, y)``.
        hessian: one of `HESSIAN_ESTIMATES` (see `derivatives`).
        probes: probes or label draws per batch.
        seed: seed of the probes.

    Returns:
        For each layer, one array per prunable variable.

    Example:

    ```python
    diag = hessian_diagonal([model.get_layer("fc3")], model, batches, probes=64)
    ```
    """
    batches = fixed_batches(data, "hessian_diagonal")
    found = derivatives(layers, model, batches, _check_hessian(hessian), probes, seed)
    return by_layer(layers, found.hessian)


class _SecondOrder(Criterion):
    """Shared options of the criteria that need the Hessian diagonal."""

    needs_data = True
    normalization = "none"
    default_damping = 0.0

    def __init__(
        self,
        probes: int = 4,
        hessian: str = "auto",
        seed: int = 0,
        damping: float | None = None,
        verbose: bool = False,
    ):
        self.probes = _check_probes(probes)
        self.hessian = _check_hessian(hessian)
        self.seed = int(seed)
        self.damping = check_damping(self.default_damping if damping is None else damping)
        self.verbose = verbose

    def _derivatives(self, layers, model, data) -> tuple[list[np.ndarray], Derivatives]:
        model = check_model(model, self.name)
        batches = fixed_batches(data, self.name)
        found = derivatives(
            layers, model, batches, self.hessian, self.probes, self.seed, self.verbose
        )
        weights = [w for layer in layers for w in layer.effective_weights()]
        return weights, found


@register_criterion("taylor1")
class Taylor1(Criterion):
    """First-order Taylor: the mean over batches of ``|g_b * w|``.

    ``score_k = sum_b (n_b / N) |g_{b,k} w_k|`` where ``g_b`` is the gradient of
    batch ``b``'s mean loss, ``n_b`` its size and ``N`` the number of scoring images.
    ``-g_b w`` is the first-order loss change of removing ``w`` measured on batch
    ``b``; its absolute value is averaged over the batches, as Molchanov et al. (2017,
    2019) accumulate it. Why not ``|mean_b g_b * w|``, the first-order change on all
    scoring images at once: at a trained model the full gradient is close to zero,
    so that product is mostly noise, while the per-batch magnitudes measure how much
    the loss responds to the weight (their square is the empirical Fisher's
    first-order part). Scores are loss units, comparable across layers.

    The scores are damped (`objective.damp`, power 1): ``|w_k| (E|g_k| + damping *
    g_avg)``. Undamped (``damping=0``), taylor1 prunes the shipped LeNet-5 with its
    conf to 87% test error, one-shot; with the default 10, to 4.8% (magnitude: 5.5%;
    docs/criteria.md).

    ``squared=True`` scores ``sum_b (n_b / N) (g_{b,k} w_k)^2``, the squared Taylor
    term of Molchanov et al. (2019) accumulated per batch, damped with the ``w^2``
    prior (power 2). An option: it ranked worse than the default on the global
    screen (docs/criteria.md).

    Args:
        damping: weight of the ``|w|`` prior (see `objective.damp`), >= 0.
        squared: score the per-batch squared term instead of its absolute value.
        verbose: show a progress bar.

    Example:

    ```python
    keras_prune.prune(model, {"fc1": 0.9}, "taylor1", data=train_batches)
    ```
    """

    needs_data = True
    normalization = "none"

    def __init__(self, damping: float = 10.0, squared: bool = False, verbose: bool = False):
        self.damping = check_damping(damping)
        self.squared = bool(squared)
        self.verbose = verbose

    def score(self, layers, model=None, data=None) -> Scores:
        model = check_model(model, self.name)
        found = derivatives(layers, model, fixed_batches(data, self.name), verbose=self.verbose)
        weights = [w for layer in layers for w in layer.effective_weights()]
        if self.squared:
            return by_layer(layers, damp(found.squared_product, weights, self.damping, 2))
        return by_layer(layers, damp(found.abs_product, weights, self.damping, 1))


@register_criterion("taylor2")
class Taylor2(_SecondOrder):
    """Second-order Taylor, Optimal Brain Damage: ``score = 1/2 * h_kk * w_k^2``.

    ``h_kk`` is the Hessian diagonal of the mean loss over the scoring batches,
    estimated (see `derivatives`) by the Gauss-Newton diagonal (``"gauss-newton"``:
    never negative and far less noisy for large layers, at the price of ignoring the
    loss's curvature through the network's nonlinearities), by Hutchinson probes
    (``"hutchinson"``: unbiased for the exact diagonal, it converges to it as probes
    grow; a negative estimate means removing the weight is predicted to lower the
    loss, so it goes first) or by the empirical Fisher diagonal (``"fisher"``). The
    default, ``"auto"``, is Gauss-Newton where the model's loss is one sparse
    categorical cross-entropy, else Hutchinson.

    The curvature is damped (`objective.damp`): ``1/2 (h_kk + damping * h_avg)
    w_k^2``. Undamped, taylor2 prunes the shipped LeNet-5 with its conf to 11.8%
    test error one-shot (Hutchinson). With the defaults (Gauss-Newton, 100), to 5.3%
    (magnitude: 5.5%), and under global selection it ranks at least as well as
    magnitude within the scoring draw's noise; Hutchinson at 30 lost to magnitude on
    LeNet-300-100 at 20x (docs/criteria.md).

    Args:
        probes: Hutchinson probes (or Gauss-Newton label draws) per scoring batch.
        hessian: ``"auto"``, ``"gauss-newton"``, ``"hutchinson"`` or ``"fisher"``.
        seed: seed of the probes.
        damping: weight of the ``w^2`` prior (default 100), >= 0; 0 is plain OBD.
        verbose: show a progress bar.

    Example:

    ```python
    criterion = keras_prune.criteria.get_criterion("taylor2", probes=8)
    keras_prune.prune(model, {"fc1": 0.9}, criterion, data=train_batches)
    ```
    """

    default_damping = 100.0

    def score(self, layers, model=None, data=None) -> Scores:
        weights, found = self._derivatives(layers, model, data)
        obd = [0.5 * h * w * w for h, w in zip(found.hessian, weights)]
        return by_layer(layers, damp(obd, weights, self.damping, 2))


@register_criterion("taylor12")
class Taylor12(_SecondOrder):
    """Full second-order Taylor: both terms of ``dL = -g*w + 1/2*h*w^2``.

    ``g`` is the gradient and ``h`` the Hessian diagonal (as in `Taylor2`) of the
    mean loss over all scoring images. By default the score is ``|g w| + 1/2 h w^2``
    (damped as in `Taylor2`): the first-order term counts by its size, whatever its
    sign. With ``signed=True`` it is the predicted loss change itself,
    ``-g w + 1/2 h w^2``, under which weights whose removal is predicted to lower
    the loss go first. At a trained model the mean gradient is mostly noise, so the
    signed score sends first the weights whose noise happens to point down: on the
    shipped LeNet-5, signed and undamped, the conf prunes to 89% test error
    one-shot and ``-l 8 -p 0.7`` to 66%; with the defaults (the Hessian estimate as
    in `Taylor2`, damping 30), to 5.8% and 0.60% (magnitude: 5.5% and 0.62%; over three
    scoring draws 5.5% on the conf; docs/criteria.md).

    Args:
        probes: Hutchinson probes (or Gauss-Newton label draws) per scoring batch.
        hessian: ``"auto"``, ``"gauss-newton"``, ``"hutchinson"`` or ``"fisher"``.
        seed: seed of the probes.
        damping: weight of the ``w^2`` prior (default 30), >= 0.
        signed: score the signed predicted change instead of ``|g w| + 1/2 h w^2``.
        verbose: show a progress bar.

    Example:

    ```python
    keras_prune.prune(model, {"fc1": 0.9}, "taylor12", data=train_batches)
    ```
    """

    default_damping = 30.0

    def __init__(
        self,
        probes: int = 4,
        hessian: str = "auto",
        seed: int = 0,
        damping: float | None = None,
        signed: bool = False,
        verbose: bool = False,
    ):
        super().__init__(probes, hessian, seed, damping, verbose)
        self.signed = bool(signed)

    def score(self, layers, model=None, data=None) -> Scores:
        weights, found = self._derivatives(layers, model, data)
        first = [-g * w if self.signed else np.abs(g * w) for g, w in zip(found.gradient, weights)]
        predicted = [f + 0.5 * h * w * w for f, h, w in zip(first, found.hessian, weights)]
        return by_layer(layers, damp(predicted, weights, self.damping, 2))
