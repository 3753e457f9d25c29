"""Reading the data, preprocessing it with scikit-learn, seeded splits, and tensors on the device.

- `readers`: sklearn's bundled sets, CSV (also .csv.gz/.tsv), Parquet and NumPy .npz, with the checks that need
  neither scikit-learn nor torch (they are imported where splits, preprocessing and tensors are made), so bad data
  gets its error in about a second.
- `preprocessing`: the ColumnTransformer fitted on the training split only.
- `splits`: task, target encoding, seeded stratified splits, `prepare_data`, `refit_preprocessing`.
- `tensors`: the device and the tensors resident on it for the whole study.
- `variants`: one prepared data set per numeric preprocessing a study can choose.
"""

from automlp.data.preprocessing import (MISSING_CATEGORY, as_categories, column_kinds, feature_notes, make_preprocessor,
                                       missing_numeric, numeric_steps)
from automlp.data.readers import RawData, read_data, row_label, sniff_sep, text_values
from automlp.data.splits import (MAX_CLASSES_AUTO, PreparedData, check_splits, infer_task, prepare_data,
                                 refit_preprocessing, split_sizes)
from automlp.data.tensors import TrainData, resolve_device, to_tensors
from automlp.data.variants import DataVariants

__all__ = ["MAX_CLASSES_AUTO", "MISSING_CATEGORY", "DataVariants", "PreparedData", "RawData", "TrainData", "as_categories",
           "check_splits", "column_kinds", "feature_notes", "infer_task", "make_preprocessor", "missing_numeric", "numeric_steps", "prepare_data",
           "read_data", "refit_preprocessing", "resolve_device", "row_label", "sniff_sep", "split_sizes", "text_values",
           "to_tensors"]
