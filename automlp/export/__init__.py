"""Self-describing model folders: write (`write`), load and predict (`load`), sklearn wrappers (`sklearn`).

A folder holds model.pt (state_dict), model.torchscript.pt (runs with torch alone), model.onnx (with the
`onnx` extra), preprocessing.json (the fitted preprocessing as data) and metadata.json (versions, spec,
trial, metrics, input schema, SHA-256 of every file). Importing this package does not import the writer
(Optuna, scikit-learn pipelines): serving needs torch, numpy and pandas only.
"""

from automlp.export.load import Predictor, PredictReport, load, verify

__all__ = ["Predictor", "PredictReport", "load", "verify", "AutomlpClassifier", "AutomlpRegressor"]


def __getattr__(name: str):
    if name in ("AutomlpClassifier", "AutomlpRegressor"):
        from automlp.export import sklearn

        return getattr(sklearn, name)
    raise AttributeError(f"module 'automlp.export' has no attribute {name!r}")
