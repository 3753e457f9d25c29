"""RealMLP's robust scaling with smooth clipping (Holzmueller et al. 2024), as scikit-learn transformers.

Imported only where the preprocessing is built: it imports scikit-learn, which the readers' checks avoid.
"""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import RobustScaler

CLIP = 3.0  # x / sqrt(1 + (x / CLIP)^2): about x near 0, tends to +-CLIP far out


def smooth_clip(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(1.0 + (x / CLIP) ** 2)


class RobustRangeScaler(RobustScaler):
    """(x - median) / IQR, as RobustScaler; where the IQR is 0 (a column that is mostly one value, like Adult's
    capital-gain) the scale is half the range instead, as RealMLP does, so the rare values stay apart rather than
    all clipping to +-3. A constant column keeps scale 1 (every value maps to 0)."""

    def fit(self, X, y=None):
        super().fit(X, y)
        X = np.asarray(X, np.float64)
        zero_iqr = (np.nanpercentile(X, 75, axis=0) - np.nanpercentile(X, 25, axis=0)) == 0
        half_range = 0.5 * (np.nanmax(X, axis=0) - np.nanmin(X, axis=0)) if len(X) else np.zeros(X.shape[1])
        fallback = zero_iqr & (half_range > 0)
        self.scale_ = np.where(fallback, half_range, self.scale_)
        return self
