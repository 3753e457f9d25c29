"""automlp: declarative AutoML for neural networks (MLPs) on tabular data.

From Python: `automlp.search(spec, data)` runs a search (-> `Result`); `AutoMLPClassifier` / `AutoMLPRegressor`
search in `fit`; `automlp.load(folder)` loads an exported model. Everything is imported on first use, so
`import automlp` (and the CLI) stays light.
"""

import sys
import types

__version__ = "0.1.0"
__all__ = ["search", "load", "Result", "AutoMLPClassifier", "AutoMLPRegressor", "SpecError", "DataError",
           "AutomlpError", "__version__"]

_LAZY = {"search": "automlp.api", "Result": "automlp.api", "AutoMLPClassifier": "automlp.estimators",
         "AutoMLPRegressor": "automlp.estimators", "AutomlpError": "automlp.errors", "SpecError": "automlp.errors",
         "DataError": "automlp.errors"}


def load(path, device: str = "cpu"):
    """Load an exported model folder (checksums verified) -> `automlp.export.Predictor`."""
    from automlp.export.load import load as _load

    return _load(path, device)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'automlp' has no attribute {name!r}")


class _Package(types.ModuleType):
    """`automlp.search` is the search function, and the engine module of the same name stays importable by its
    full name (`from automlp.search import run_search`). Python's import system binds a submodule as an attribute
    of its package when it is first imported; that one binding is refused here, so `automlp.search` is the
    function whatever was imported before (module attribute lookup then reaches `__getattr__`)."""

    def __setattr__(self, name: str, value) -> None:
        if name == "search" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
