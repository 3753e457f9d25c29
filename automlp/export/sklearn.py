"""A loaded model as a scikit-learn estimator, so it drops into existing sklearn code.

The model is already trained: `fit` only loads the folder (and ignores X and y), and `predict` works without
calling it first. `score` is sklearn's (accuracy for the classifier, R^2 for the regressor).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from automlp.errors import ExportError
from automlp.export.load import Predictor, load


class _Prefit(BaseEstimator):
    def __init__(self, model_dir=None, device: str = "cpu"):
        self.model_dir = model_dir
        self.device = device

    def fit(self, X=None, y=None):
        """Load the model folder (a trained model: X and y are not used)."""
        if self.model_dir is None:
            raise ExportError(f"{type(self).__name__}: model_dir is not set; pass the path of a model folder")
        self.predictor_ = load(self.model_dir, self.device)
        self._check_task()
        self.feature_names_in_ = np.asarray(self.predictor_.input_columns, dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True  # trained by automlp; loading happens on first use

    @property
    def _p(self) -> Predictor:
        if not hasattr(self, "predictor_"):
            self.fit()
        return self.predictor_

    def _check_task(self) -> None:
        if self.predictor_.task != self._task:
            other = "AutomlpRegressor" if self._task == "classification" else "AutomlpClassifier"
            raise ExportError(f"{type(self).__name__}: {self.model_dir} holds a {self.predictor_.task} model; "
                              f"use {other}")

    def predict(self, X):
        return self._p.predict(X)


class AutomlpClassifier(ClassifierMixin, _Prefit):
    """An exported classification model with sklearn's predict / predict_proba / classes_ / score."""

    _task = "classification"

    @property
    def classes_(self) -> np.ndarray:
        return self._p.classes_

    def predict_proba(self, X) -> np.ndarray:
        return self._p.predict_proba(X)


class AutomlpRegressor(RegressorMixin, _Prefit):
    """An exported regression model with sklearn's predict / score."""

    _task = "regression"


def from_predictor(p: Predictor) -> AutomlpClassifier | AutomlpRegressor:
    est = (AutomlpClassifier if p.task == "classification" else AutomlpRegressor)(str(p.path), str(p.device))
    est.predictor_ = p
    est.feature_names_in_ = np.asarray(p.input_columns, dtype=object)
    est.n_features_in_ = len(p.input_columns)
    return est
