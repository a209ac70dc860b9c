"""``Model.update`` for scikit-learn: ``partial_fit`` on a deep copy, so the original never changes.

Estimators with ``partial_fit`` (``SGDClassifier``/``SGDRegressor``, ``MLPClassifier``,
``MultinomialNB``, ``Perceptron``, ``PassiveAggressive*``, ``MiniBatchKMeans`` ...) are trained
``epochs`` passes over the new rows, one ``partial_fit`` call per pass. Classifiers get
``classes=classes_``, so ``labels`` are class values as in ``fit`` (not ``label`` indices);
labels outside ``classes_`` are refused. Estimators without ``partial_fit``, ``Pipeline``\\ s
included, raise :class:`~aimass.errors.UnsupportedOperation` naming them: refit those instead.

Example:
    >>> m2 = Model.load(SGDClassifier().fit(X, y)).update(X_new, y_new, epochs=1)   # doctest: +SKIP
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from aimass.errors import SchemaError, UnsupportedOperation
from aimass.frameworks.sklearn.backend import SklearnBackend

__all__ = ["train"]


def train(source: Any, inputs: dict[str, np.ndarray], y: np.ndarray, *, epochs: int = 1, **_: Any) -> SklearnBackend:
    """A new backend whose estimator is a copy of ``source``'s trained further with ``partial_fit``."""
    backend = SklearnBackend.of(source)
    estimator = backend.estimator
    if not hasattr(estimator, "partial_fit"):
        what = type(estimator).__name__
        if hasattr(estimator, "steps"):
            what = f"Pipeline (final step {type(estimator.steps[-1][1]).__name__})"
        raise UnsupportedOperation(
            f"update needs an estimator with partial_fit; {what} has none: refit it on all the data instead"
        )
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    trained = copy.deepcopy(estimator)
    x = backend.frame(inputs[backend.schema.input_names[0]])
    extra = {"classes": backend.classes} if backend.is_classifier and backend.classes is not None else {}
    for _epoch in range(epochs):
        try:
            trained.partial_fit(x, y, **extra)
        except ValueError as e:  # unseen labels, wrong label shape
            raise SchemaError(f"{type(estimator).__name__}.partial_fit refused the data: {e}") from e
    return SklearnBackend(trained, backend.schema, backend.n_features)
