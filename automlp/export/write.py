"""Writing a model folder: the network (state_dict, TorchScript, optionally ONNX), the preprocessing as JSON,
and metadata.json with the SHA-256 of every file. Also `export_study`: replay (or refit) a stored trial.

The folder is written next to its destination and swapped in with renames, so a crash never leaves a
half-written model where a good one was.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import sklearn
import torch
from optuna.trial import TrialState

import automlp
from automlp.data import PreparedData, prepare_data, resolve_device, to_tensors
from automlp.errors import ExportError
from automlp.model import MLPConfig
from automlp.search.final import refit_run
from automlp.heldout import rank_trials
from automlp.export.load import sha256
from automlp.export.preprocess import FORMAT, PANDAS_NA_STRINGS, VERSION, FeatureTransform, dtype_kind
from automlp.search.run import set_threads
from automlp.search.space import params_of
from automlp.search.study import CHOICE_ATTR, StudyNotFoundError, load_study, storage_url, study_metric
from automlp.search.trial import TrialRecord, TrialRun, replay, split_scores
from automlp.spec import Spec, dump_spec
from automlp.storage import redact

MODEL_FORMAT = "automlp-model"
MODEL_VERSION = 1
STATE_DICT = "model.pt"
TORCHSCRIPT = "model.torchscript.pt"
ONNX = "model.onnx"
PREPROCESSING = "preprocessing.json"
METADATA = "metadata.json"


# --------------------------------------------------------------------------- preprocessing -> JSON


def architecture(mlp: MLPConfig) -> dict:
    """A network's architecture as metadata.json records it (the loader rebuilds the network from it)."""
    return {"n_inputs": mlp.n_inputs, "n_outputs": mlp.n_outputs, "widths": list(mlp.widths),
            "activation": mlp.activation, "dropout": mlp.dropout, "describe": mlp.describe(),
            "blocks": None if mlp.plain else dataclasses.asdict(mlp.blocks)}


def _numeric_state(data: PreparedData) -> dict:
    """The fitted numeric pipeline as numbers: imputation values, then the scaling of `data.numeric_preprocessing`
    (standard: mean, scale; robust_clip: center, scale, clip; quantile: per column its quantiles, and the
    references they map to), then the columns that get a missing-value indicator."""
    cols, method = data.numeric_columns, data.numeric_preprocessing
    out = {"columns": cols, "method": method, "missing_indicators": list(data.missing_indicators)}
    if not cols:
        return out | {"impute": [], "mean": [], "scale": []} if method == "standard" else out | {"impute": []}
    pipe = data.preprocessor.named_transformers_["num"]
    # keep_empty_features: a column that was all missing in training imputes 0, as sklearn does
    out["impute"] = np.nan_to_num(np.asarray(pipe.named_steps["impute"].statistics_, np.float64), nan=0.0).tolist()
    if method == "quantile":
        q = pipe.named_steps["quantile"]
        return out | {"quantiles": np.asarray(q.quantiles_, np.float64).T.tolist(),
                      "references": np.asarray(q.references_, np.float64).tolist()}
    scaler = pipe.named_steps["scale"]
    if method == "robust_clip":
        from automlp.data.robust import CLIP

        return out | {"center": np.asarray(scaler.center_, np.float64).tolist(),
                      "scale": np.asarray(scaler.scale_, np.float64).tolist(), "clip": CLIP}
    mean = scaler.mean_ if scaler.with_mean else np.zeros(len(cols))
    scale = scaler.scale_ if scaler.with_std else np.ones(len(cols))
    return out | {"mean": np.asarray(mean, np.float64).tolist(), "scale": np.asarray(scale, np.float64).tolist()}


def _categorical_state(data: PreparedData) -> dict:
    cols = data.categorical_columns
    if not cols:
        return {"missing_category": None, "columns": []}
    pipe = data.preprocessor.named_transformers_["cat"]
    encoder = pipe.named_steps["onehot"]
    infrequent_all = getattr(encoder, "infrequent_categories_", [None] * len(cols))
    fill = str(pipe.named_steps["impute"].fill_value)

    def key(c) -> str:
        # a column with no value at all in training: sklearn's imputer leaves it missing (None), and the
        # encoder learns None as its one category; missing values map there
        return fill if c is None or (isinstance(c, float) and np.isnan(c)) else str(c)

    out = []
    for name, categories, infrequent in zip(cols, encoder.categories_, infrequent_all):
        rare = {key(c) for c in infrequent} if infrequent is not None else set()
        frequent = [key(c) for c in categories if key(c) not in rare]
        # OneHotEncoder's block: the frequent categories in categories_ order, then one infrequent column
        unknown = len(frequent) if rare else None
        index = {c: i for i, c in enumerate(frequent)} | {c: unknown for c in sorted(rare)}
        out.append({"name": name, "index": index, "unknown": unknown, "width": len(frequent) + bool(rare),
                    "infrequent": sorted(rare)})
    return {"missing_category": fill, "columns": out}


def preprocessing_state(data: PreparedData, na_values: list[str]) -> dict:
    """The fitted ColumnTransformer of `data` as plain data (see `automlp.export.preprocess`)."""
    kinds = {c: "numeric" for c in data.numeric_columns} | {c: "categorical" for c in data.categorical_columns}
    target = {"name": data.target_name, "task": data.task}
    if data.task == "classification":
        target["classes"] = list(data.classes)
        target["outputs"] = "logits: softmax gives the probability of each class, in the order of classes"
    else:
        target |= {"mean": data.target_mean, "std": data.target_std,
                   "outputs": "standardized: prediction = output * std + mean"}
    return {
        "format": FORMAT, "version": VERSION,
        # how the training data was read: pandas' default NA strings plus the spec's (CSV); only the spec's
        # for Parquet. Leading spaces after a delimiter are skipped; categorical text is also stripped
        "csv": {"na_values": list(na_values), "default_na_values": list(PANDAS_NA_STRINGS),
                "skipinitialspace": True, "encoding": "utf-8"},
        "columns": [{"name": c, "kind": kinds[c], "dtype": dtype_kind(data.input_dtypes.get(c, "object"))}
                    for c in data.input_columns if c in kinds],
        "numeric": _numeric_state(data),
        "categorical": _categorical_state(data),
        "n_features": data.n_features,
        "feature_names": list(data.feature_names),
        "target": target,
    }


def check_preprocessing(state: dict, data: PreparedData) -> FeatureTransform:
    """The JSON re-implementation must give the fitted sklearn pipeline's features on the test split."""
    transform = FeatureTransform(state)
    if data.raw_test is None or not len(data.raw_test):
        return transform
    mine = transform(data.raw_test)
    if mine.shape != data.X_test.shape or not np.allclose(mine, data.X_test, rtol=1e-5, atol=1e-6):
        worst = np.abs(mine - data.X_test).max() if mine.shape == data.X_test.shape else "shape"
        raise ExportError(f"{PREPROCESSING}: the preprocessing written there does not reproduce the fitted "
                          f"scikit-learn pipeline on the test split (largest difference {worst}); this is a bug, "
                          f"please report it with your scikit-learn version ({sklearn.__version__})")
    return transform


# --------------------------------------------------------------------------- the network


def _torchscript(model: torch.nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        # torch 2.13 deprecates TorchScript in favour of torch.export, but torch.jit.load is still the one way
        # to run a model with nothing but torch (C++ libtorch included)
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit.*")
        torch.jit.script(model).save(str(path))


def _onnx(model: torch.nn.Module, n_features: int, path: Path) -> str | None:
    """Write ONNX when the `onnx` extra is installed; return a note when it is not written."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        return None
    example = torch.zeros(2, n_features)
    try:
        with warnings.catch_warnings():
            # the TorchScript-based exporter needs only `onnx` (the torch.export-based one also needs onnxscript)
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*legacy TorchScript-based")
            # a net of blocks branches on its (fixed) shapes: the trace records the branch its structure takes
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(model, (example,), str(path), input_names=["features"], output_names=["outputs"],
                              dynamic_axes={"features": {0: "rows"}, "outputs": {0: "rows"}}, dynamo=False)
    except (ImportError, RuntimeError, torch.onnx.errors.OnnxExporterError) as e:
        path.unlink(missing_ok=True)
        return f"onnx: not written ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    return None


def versions() -> dict:
    return {"automlp": automlp.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "numpy": np.__version__, "pandas": pd.__version__, "scikit_learn": sklearn.__version__,
            "optuna": optuna.__version__}


def _swap_in(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old)
    else:
        tmp.rename(out_dir)


def write_model(out_dir: Path, run: TrialRun, data: PreparedData, spec: Spec, *, trial: dict, scores: dict,
                metric: str, refit: dict | None = None, notes: list[str] | None = None) -> Path:
    """Write the model folder for a trained `run`. `trial` describes where it came from (number, value,
    params, ...); `scores` are the run's metrics per split (train/val/test)."""
    out_dir = Path(out_dir)
    notes = list(notes or [])
    data = run.data_or(data)  # the preprocessing this model's trial chose
    state = preprocessing_state(data, spec.data.na_values)
    check_preprocessing(state, data)
    with staged_folder(out_dir) as tmp:
        model = copy.deepcopy(run.model).cpu().eval()
        torch.save(model.state_dict(), tmp / STATE_DICT)
        files = write_served(tmp, model, data.n_features, state, notes)
        meta = _metadata(run, data, spec, trial, scores, metric, refit, notes, state, files)
        (tmp / METADATA).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return out_dir


@contextlib.contextmanager
def staged_folder(out_dir: Path) -> Iterator[Path]:
    """A folder written next to `out_dir`, swapped in with renames once the block completes; removed if it fails,
    so a crash never leaves a half-written model where a good one was."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_served(tmp: Path, module: torch.nn.Module, n_features: int, state: dict, notes: list[str]) -> dict:
    """The served module as TorchScript (and ONNX where the extra is installed; else a note) and the
    preprocessing as JSON; returns the SHA-256 of every file now in `tmp`, for metadata.json."""
    _torchscript(module, tmp / TORCHSCRIPT)
    note = _onnx(module, n_features, tmp / ONNX)
    if note:
        notes.append(note)
    (tmp / PREPROCESSING).write_text(json.dumps(state, indent=1) + "\n")
    return {p.name: sha256(p) for p in sorted(tmp.iterdir())}


def _metadata(run, data, spec, trial, scores, metric, refit, notes, state, files) -> dict:
    mlp = run.mlp
    return {
        "format": MODEL_FORMAT, "version": MODEL_VERSION,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "study": {"name": spec.study.name, "storage": redact(storage_url(spec)), "metric": metric,
                  "data": data.source, "rows": refit["split_rows"] if refit else data.sizes()},
        "trial": trial,
        "refit": refit,
        "task": data.task,
        "target": state["target"],
        "architecture": architecture(mlp),
        "metrics": scores,
        "input_schema": state["columns"],
        "notes": notes,
        "spec": dump_spec(spec),
        "files": files,
    }


# --------------------------------------------------------------------------- from a search / a stored study


def trial_info(trial: optuna.trial.FrozenTrial, run: TrialRun) -> dict:
    r = run.result
    return {"number": trial.number, "value": trial.value, "params": trial.params,
            "seed": TrialRecord.read(trial).seed, "best_epoch": r.best_epoch, "n_epochs": r.n_epochs,
            "stop_reason": r.stop_reason}


def spec_from_study_dir(folder: Path, storage: str | None = None) -> Spec:
    """The spec of a study folder, from the metadata of the model its search exported (`storage`: the
    --storage URL, which replaces a stored one whose password metadata.json does not keep)."""
    from automlp.spec import validate_spec_dict

    meta_path = Path(folder) / "model" / METADATA
    if not meta_path.is_file():
        raise ExportError(f"{folder}: has no model/{METADATA} to take the spec from; give the spec file "
                          "(YAML) of the study instead")
    try:
        spec = validate_spec_dict(json.loads(meta_path.read_text(encoding="utf-8"))["spec"], str(meta_path))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ExportError(f"{meta_path}: holds no readable spec ({type(e).__name__}: {e}); give the spec "
                          "file (YAML) of the study instead") from None
    spec.output.dir = Path(folder).parent
    if storage is not None:
        spec.study.set_storage(storage, "--storage")
    elif spec.study.storage is None:
        spec.study.set_storage(f"journal://{(Path(folder) / 'study.journal').resolve()}", str(folder))
    elif "***" in spec.study.storage:
        raise ExportError(f"{folder}: the study's storage needs a password, which metadata.json does not keep; "
                          "pass the storage URL with --storage")
    return spec


def _pick_trial(study: optuna.Study, number: int | None) -> optuna.trial.FrozenTrial:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise ExportError(f"study.name: study '{study.study_name}' has no COMPLETE trial; run automlp search first")
    if number is None:
        # the report's k-fold winner when the spec asked for it (report.use_rescored_choice), else the best
        number = study.user_attrs.get(CHOICE_ATTR)
        if number is None:
            return rank_trials(study)[0]
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    t = trials.get(number)
    if t is None or t.state != TrialState.COMPLETE:
        what = "does not exist" if t is None else f"is {t.state.name}"
        some = ", ".join(str(t.number) for t in complete[:20]) + (" ..." if len(complete) > 20 else "")
        raise ExportError(f"--trial: trial {number} of study '{study.study_name}' {what}; only COMPLETE trials "
                          f"can be exported: {some}")
    return t


def open_finished_study(spec: Spec) -> tuple[optuna.Study, PreparedData, str, torch.device]:
    """The stored study the spec names (an ExportError where there is none), its data and metric, the device."""
    set_threads(spec)
    device = resolve_device(spec.training.device)
    url = storage_url(spec)
    journal = Path(url.removeprefix("journal:").removeprefix("//")) if url.startswith("journal:") else None
    if journal is not None and not journal.is_file():  # opening it would create an empty journal
        raise ExportError(f"{spec.study.storage_where}: no study '{spec.study.name}' in {redact(url)} (no such "
                          "file); run automlp search with this spec first")
    try:
        study = load_study(url, spec.study.name, "study.name", spec.study.storage_where)
    except StudyNotFoundError:
        raise ExportError(f"study.name: no study '{spec.study.name}' in {redact(url)}; run automlp search "
                          "with this spec first") from None
    data = prepare_data(spec.data, spec.study.seed)
    return study, data, study_metric(study, spec, data.task), device


def export_study(spec: Spec, trial_number: int | None = None, refit: bool = False,
                 out_dir: Path | None = None) -> tuple[Path, dict]:
    """Export a trial (default: the best) of the study the spec names, replayed from its seed."""
    study, data, metric, device = open_finished_study(spec)
    trial = _pick_trial(study, trial_number)
    run = replay(trial, spec, data, to_tensors(data, device), metric)
    data = run.data_or(data)
    notes = []
    if not math.isclose(run.result.best_val_score, trial.value, rel_tol=1e-4, abs_tol=1e-6):
        notes.append(f"replayed trial {trial.number} scored {run.result.best_val_score:.6g} on validation, the "
                     f"study recorded {trial.value:.6g} (training is not bit-reproducible on {device.type})")
    info = trial_info(trial, run) | {"replayed": True, "replayed_val_score": run.result.best_val_score}
    refit_info = None
    scores = split_scores(run, data, device)
    if refit:
        val_scores = scores["val"]
        run, data, refit_info = refit_run(run, data, device, TrialRecord.read(trial).best_epoch)
        scores = split_scores(run, data, device) | {"val": val_scores}
    target = out_dir or spec.study_dir / "model"
    path = write_model(target, run, data, spec, trial=info, scores=scores, metric=metric,
                       refit=refit_info, notes=notes)
    return path, {"trial": trial.number, "scores": scores, "refit": refit_info, "notes": notes,
                  "params": params_of(trial)}
