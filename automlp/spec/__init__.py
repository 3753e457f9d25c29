"""The spec: Pydantic models of a search spec and `load_spec`, with YAML line numbers in every error.

Every hyperparameter in `space` accepts a fixed value, a list of choices, or a range
`{low, high, log, step}`. They are parsed into `Param` objects here, once; code after `load_spec`
trusts the spec.

- `params`: `Param`, the rules of each hyperparameter, `parse_param`;
- `base`: the section base class, whose cross-field checks run even when other fields failed;
- `sections`: the Pydantic models of the sections and the whole `Spec`;
- `parse`: YAML reading with duplicate keys refused and YAML paths mapped to lines;
- `load`: validation with messages (file:line, YAML path, fix), `load_spec`, overrides, `dump_spec`.
"""

from automlp.spec.load import (
    apply_overrides, check_metric_fits, dump_spec, load_spec, spec_json_schema, validate_spec_dict,
)
from automlp.spec.params import (
    ACTIVATION_ALIASES, ACTIVATIONS, ARCHS, EMBEDDINGS, LABEL_SMOOTHING_METRICS, LR_SCHEDULES, MAX_DEPTH, MAX_WIDTH,
    NUMERIC_PREPROCESSING, OPTIMIZER_ALIASES, OPTIMIZERS, PARAM_RULES, PLAIN_MLP, Param, parse_param,
)
from automlp.spec.sections import (
    CLASSIFICATION_METRICS, FINAL_MODELS, MAX_WEIGHTS, METRIC_DIRECTIONS, REGRESSION_METRICS, SKLEARN_DATASETS, STORAGE_SCHEMES,
    DataSpec, EarlyStoppingSpec, OutputSpec, PrunerSpec, ReportSpec, SamplerSpec, SpaceSpec, Spec, StudySpec,
    TrainingSpec, check_storage_url, climbs_out, storage_file,
)

__all__ = [
    "ACTIVATIONS", "ACTIVATION_ALIASES", "ARCHS", "CLASSIFICATION_METRICS", "EMBEDDINGS", "FINAL_MODELS", "LABEL_SMOOTHING_METRICS",
    "LR_SCHEDULES", "MAX_DEPTH", "MAX_WEIGHTS", "NUMERIC_PREPROCESSING",
    "MAX_WIDTH", "METRIC_DIRECTIONS", "OPTIMIZERS", "OPTIMIZER_ALIASES", "PARAM_RULES", "PLAIN_MLP", "REGRESSION_METRICS",
    "SKLEARN_DATASETS", "STORAGE_SCHEMES", "DataSpec", "EarlyStoppingSpec", "OutputSpec", "Param", "PrunerSpec",
    "ReportSpec", "SamplerSpec", "SpaceSpec", "Spec", "StudySpec", "TrainingSpec", "apply_overrides",
    "check_metric_fits", "check_storage_url", "climbs_out", "dump_spec", "load_spec", "parse_param",
    "spec_json_schema", "storage_file", "validate_spec_dict",
]
