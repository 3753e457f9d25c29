"""The names of the activations, optimizers and lr schedules a spec may choose: torch-free, so the spec can
import them without loading torch.

The implementations register under exactly these names in `automlp.engine` (activations.py, optim.py,
schedules.py); tests/test_engine.py asserts both sides name the same set.
"""

ACTIVATIONS = ("identity", "logistic", "tanh", "relu", "leaky_relu", "gelu", "silu")
ACTIVATION_ALIASES = {"sigmoid": "logistic", "linear": "identity", "swish": "silu"}
OPTIMIZERS = ("adam", "adamw", "sgd", "lbfgs")
OPTIMIZER_ALIASES = {"lbfgs": "lbfgs", "l-bfgs": "lbfgs"}
# optimizers whose update runs over a stack of members; lbfgs (full batch, a line search) trains one net alone
STACKABLE_OPTIMIZERS = ("adam", "adamw", "sgd")
NUMERIC_PREPROCESSING = ("standard", "quantile", "robust_clip")  # automlp.data.preprocessing
EMBEDDINGS = ("none", "periodic", "piecewise_linear")  # automlp.blocks
ARCHS = ("mlp", "tabm_mini", "tabm")  # automlp.blocks
LR_SCHEDULES = ("constant", "invscaling", "adaptive", "cosine", "warmup_cosine", "flat_cosine", "coslog4")
