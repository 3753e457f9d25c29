"""Writing an ensemble (or a bag of fold models) as one model folder that every reader serves unchanged.

The folder is the single-model folder with the network replaced by the blend: model.torchscript.pt (and
model.onnx) is one `EnsembleNet` computing the weighted average of its members behind the one shared
preprocessing.json, so `automlp predict`, `automlp.load`, the sklearn wrappers and
examples/serve_torchscript.py need nothing new. Its outputs are log-probabilities (classification: softmax
gives the averaged probabilities) or the averaged standardized values (regression); see `automlp.ensemble`.

Each member's weights are a file of their own, member_<i>.pt (a plain network's state_dict), and
metadata.json's `ensemble.members` lists, per member, its file, trial number, fold (null unless it is one of a
bag's fold models), weight and architecture. `files` holds the SHA-256 of every file, members included: a
changed member file is refused at load like any other. There is no model.pt (no one network is the model).

One preprocessing for all members: every member must take the features of the shared preprocessing (the
one written to preprocessing.json, fitted on the rows `data` says). Fold models trained in a k-fold search
saw their own fold's preprocessing; a bag meant for export is trained behind the shared preprocessing (see
automlp.folds and the search's final-model step), since a per-fold pipeline cannot be expressed as one.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

import torch

from automlp.data import PreparedData
from automlp.ensemble import EnsembleMember, EnsembleNet
from automlp.errors import ExportError
from automlp.export.write import (
    METADATA, MODEL_FORMAT, architecture, check_preprocessing, preprocessing_state, staged_folder, storage_url,
    versions, write_served,
)
from automlp.spec import Spec, dump_spec
from automlp.storage import redact

ENSEMBLE_VERSION = 2  # model folders without model.pt; readers of version 1 refuse them with "lists no model.pt"
BLEND = {"classification": "log of the weighted average of the members' softmax probabilities (softmax of these "
                           "outputs gives that average)",
         "regression": "weighted average of the members' standardized outputs: prediction = output * std + mean"}


def member_file(i: int) -> str:
    return f"member_{i:02d}.pt"


def _check(members: list[EnsembleMember], data: PreparedData) -> None:
    if not members:
        raise ExportError("export: an ensemble needs at least one member")
    for i, m in enumerate(members):
        if m.mlp.n_inputs != data.n_features or m.mlp.n_outputs != data.n_outputs:
            raise ExportError(f"export: ensemble member {i} (trial {m.trial}) takes {m.mlp.n_inputs} features and "
                              f"gives {m.mlp.n_outputs} outputs; the shared preprocessing makes {data.n_features} "
                              f"and the task needs {data.n_outputs}. Every member must be trained behind the "
                              "shared preprocessing")
        if not m.weight > 0:
            raise ExportError(f"export: ensemble member {i} (trial {m.trial}) has weight {m.weight}; leave members "
                              "with no weight out")


def write_ensemble(out_dir: Path, members: list[EnsembleMember], data: PreparedData, spec: Spec, *, kind: str,
                   scores: dict, metric: str, details: dict | None = None, rows: dict | None = None,
                   notes: list[str] | None = None) -> Path:
    """Write `members` (weights are normalized) as one model folder. `kind` says what was shipped (bag,
    ensemble); `details` how it was built (metadata.json's `ensemble` holds them: selection, folds, note);
    `scores` the blend's metrics per split; `rows` the study's split sizes (default: `data`'s)."""
    out_dir = Path(out_dir)
    _check(members, data)
    total = sum(m.weight for m in members)
    weights = [m.weight / total for m in members]
    state = preprocessing_state(data, spec.data.na_values)
    check_preprocessing(state, data)
    state["target"]["outputs"] = BLEND[data.task]
    nets = [copy.deepcopy(m.model).cpu().eval() for m in members]
    blend = EnsembleNet(nets, weights, data.task).eval()
    notes = list(notes or [])
    with staged_folder(out_dir) as tmp:
        for i, net in enumerate(nets):
            torch.save(net.state_dict(), tmp / member_file(i))
        files = write_served(tmp, blend, data.n_features, state, notes)
        listed = [{"file": member_file(i), "trial": m.trial, "fold": m.fold, "weight": w,
                   "architecture": architecture(m.mlp), **m.info} for i, (m, w) in enumerate(zip(members, weights))]
        meta = _metadata(data, spec, kind, listed, details or {}, scores, metric, rows or data.sizes(), notes,
                         state, files)
        (tmp / METADATA).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return out_dir


def _metadata(data, spec, kind, listed, details, scores, metric, rows, notes, state, files) -> dict:
    trials = sorted({m["trial"] for m in listed})
    describe = f"{kind} of {len(listed)} networks (trial{'s' if len(trials) > 1 else ''} " \
               f"{', '.join(map(str, trials))})"
    return {
        "format": MODEL_FORMAT, "version": ENSEMBLE_VERSION,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "study": {"name": spec.study.name, "storage": redact(storage_url(spec)), "metric": metric,
                  "data": data.source, "rows": rows},
        "trial": {"number": trials[0] if len(trials) == 1 else None, "numbers": trials},
        "refit": None,
        "task": data.task,
        "target": state["target"],
        "architecture": {"kind": kind, "n_inputs": data.n_features, "n_outputs": data.n_outputs,
                         "describe": describe},
        "ensemble": {"kind": kind, "blend": BLEND[data.task], "members": listed, **details},
        "metrics": scores,
        "input_schema": state["columns"],
        "notes": notes,
        "spec": dump_spec(spec),
        "files": files,
    }
