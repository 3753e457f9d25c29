"""k-fold cross-validation at the data level: seeded folds of train + validation, each with its preprocessing
fitted on its own training rows, and features that line up across folds so the folds can train as one stack.

Rows: train + validation are numbered as `data.refit_preprocessing` numbers them (row i: the i-th training row,
then the validation rows). Folds are seeded: `StratifiedKFold` for classification when every class has at least
`n_folds` rows, else `KFold`; both shuffled with the seed. The test split is never in a fold.

Honesty: a fold's imputation values, scales and one-hot categories are fitted on its training rows alone, and
its training tensors hold only those rows; nothing about a fold's validation rows (features or target) shapes
what its model is trained on. The target keeps the search's scaling (an affine map fitted on the search's
training split, so the same for every fold and invertible; it never changes which model is better).

Alignment: a category seen only in some folds' training rows gives those folds a one-hot column the others
lack, so the folds' own feature lists differ. Every fold's features are placed, by name, in one shared layout:
the ordered union of the folds' feature names (fold 0's names in their order, then each later fold's new names).
A column a fold's pipeline does not have is zero in all of that fold's rows: exactly how that pipeline encodes
a category it never saw (no column set), so each fold's model sees the same information its own pipeline gives,
and the columns it never saw carry nothing (their input is always zero, so their weights get no gradient).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from automlp.data import PreparedData, as_categories, refit_preprocessing
from automlp.errors import DataError

# `study.validation: auto` uses k-fold when train + validation has fewer rows than this: below it a holdout
# validation split is small and noisy enough for the search to select lucky splits (the report's k-fold
# rescoring uses the same bound, report.rescore_max_rows).
KFOLD_AUTO_MAX_ROWS = 5000


def use_kfold(validation: str, n_fit_rows: int) -> bool:
    """Whether `study.validation` (holdout | kfold | auto) means k-fold for `n_fit_rows` train+validation rows."""
    if validation == "auto":
        return n_fit_rows < KFOLD_AUTO_MAX_ROWS
    return validation == "kfold"


def fold_indices(y: np.ndarray, task: str, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training rows, validation rows) of each fold: every row is in exactly one fold's validation rows."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if n_folds < 2 or n_folds > len(y):
        raise DataError(f"study.folds: {n_folds} folds need at least {max(n_folds, 2)} train+validation rows and "
                        f"at least 2 folds; got {len(y)} rows: lower study.folds, or use study.validation: holdout")
    y = np.asarray(y)
    stratify = False
    if task == "classification":
        counts = np.bincount(y)
        stratify = counts[counts > 0].min() >= n_folds
    splitter = (StratifiedKFold if stratify else KFold)(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(np.sort(tr), np.sort(va)) for tr, va in splitter.split(np.zeros((len(y), 1)), y if stratify else None)]


@dataclass
class Fold:
    """One fold: its rows (positions in train + validation), its own fitted pipeline, its data in the shared
    feature layout (`data.X_train` / `X_val` / `X_test`; `data.feature_names` is the shared layout)."""

    index: int
    train_rows: np.ndarray
    val_rows: np.ndarray
    data: PreparedData
    columns: np.ndarray  # where the fold pipeline's columns sit in the shared layout

    def transform(self, raw: pd.DataFrame) -> np.ndarray:
        """Raw rows (the training columns) through this fold's pipeline, in the shared layout."""
        own = self.data.preprocessor.transform(as_categories(raw, self.data.categorical_columns))
        return _place(np.asarray(own, np.float32), self.columns, len(self.data.feature_names))


def _place(X: np.ndarray, columns: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((len(X), width), np.float32)
    out[:, columns] = X
    return out


def shared_layout(names: list[list[str]]) -> list[str]:
    """The ordered union of the folds' feature names."""
    return list(dict.fromkeys(n for fold in names for n in fold))


def prepare_folds(data: PreparedData, n_folds: int, seed: int) -> list[Fold]:
    """Train + validation of `data` cut into `n_folds` seeded folds, each preprocessed on its own training rows
    (see the module docstring) and placed in one feature layout."""
    y = np.concatenate([data.y_train, data.y_val])
    cuts = fold_indices(y, data.task, n_folds, seed)
    parts = [refit_preprocessing(data, tr, va) for tr, va in cuts]
    layout = shared_layout([p.feature_names for p in parts])
    where = {n: i for i, n in enumerate(layout)}
    folds = []
    for k, ((tr, va), part) in enumerate(zip(cuts, parts)):
        cols = np.array([where[n] for n in part.feature_names], dtype=np.int64)
        aligned = replace(part, X_train=_place(part.X_train, cols, len(layout)),
                          X_val=_place(part.X_val, cols, len(layout)), X_test=_place(part.X_test, cols, len(layout)),
                          feature_names=list(layout), notes=[])
        folds.append(Fold(k, tr, va, aligned, cols))
    return folds


def out_of_fold(folds: list[Fold], outputs: list[np.ndarray]) -> np.ndarray:
    """Each fold model's outputs on its validation rows, put back in train + validation row order."""
    n = sum(len(f.val_rows) for f in folds)
    oof = np.zeros((n, outputs[0].shape[1]), np.float32)
    for f, out in zip(folds, outputs):
        oof[f.val_rows] = out
    return oof
