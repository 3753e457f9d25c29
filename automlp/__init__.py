"""automlp: declarative AutoML for neural networks (MLPs) on tabular data."""

__version__ = "0.1.0"


def load(path, device: str = "cpu"):
    """Load an exported model folder (checksums verified) -> `automlp.export.Predictor`."""
    from automlp.export.load import load as _load

    return _load(path, device)
