"""Building blocks beyond the plain MLP: numeric embeddings (periodic, piecewise-linear), per-feature scaling,
TabM-mini and TabM, as stacked modules (see `automlp.blocks.net`); their config is `automlp.blocks.config`."""

from automlp.blocks.config import ARCHS, EMBEDDINGS, BlockConfig

__all__ = ["ARCHS", "EMBEDDINGS", "BlockConfig"]
