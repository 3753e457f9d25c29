"""An exported ensemble is one model folder: its predictions equal the weighted average of its members'
(probabilities for classification) through every reader, and a changed member file is refused."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import automlp
from automlp.cli import app
from automlp.data import as_categories, prepare_data, read_data
from automlp.ensemble import EnsembleMember, blend
from automlp.errors import ExportError
from automlp.export import AutomlpClassifier, AutomlpRegressor
from automlp.export.ensemble import write_ensemble
from automlp.metrics import score_all, softmax
from automlp.model import MLPConfig, build_mlp
from automlp.spec import load_spec
from conftest import EXAMPLE_DATA, REPO, write_spec

SERVE = REPO / "examples" / "serve_torchscript.py"
# a bag of three fold models of trial 3 (0.2 each) and trial 7 alone (0.4)
LAYOUT = [(3, 0, 0.2, (16,)), (3, 1, 0.2, (16,)), (3, 2, 0.2, (16,)), (7, None, 0.4, (8, 8))]


def _classification_csv(path: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 150
    frame = pd.DataFrame({
        "size": np.where(rng.random(n) < 0.1, "?", rng.normal(5, 2, n).round(3).astype(str)),
        "shape": rng.choice(["round", "square", "long"], n),
        "level": rng.choice([1, 2, 3], n),
        "label": rng.choice(["cat", "dog", "eel"], n),
    })
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module", params=["classification", "regression"])
def folder(request, tmp_path_factory):
    """An ensemble folder written from members with seeded random weights, and what is needed to check it."""
    root = tmp_path_factory.mktemp(f"ens_{request.param}")
    if request.param == "classification":
        data_spec = {"path": str(_classification_csv(root / "pets.csv")), "target": "label",
                     "categorical": ["level"]}
    else:
        shutil.copy(EXAMPLE_DATA / "auto_mpg.csv", root / "auto_mpg.csv")
        data_spec = {"path": str(root / "auto_mpg.csv"), "target": "mpg", "drop": ["car_name"],
                     "categorical": ["origin"], "task": "regression"}
    spec = load_spec(write_spec(root / "s.yaml", {"data": data_spec, "study": {"name": "ens"},
                                                  "output": {"dir": str(root / "studies")}}))
    data = prepare_data(spec.data, spec.study.seed)
    members = []
    for i, (trial, fold, weight, widths) in enumerate(LAYOUT):
        torch.manual_seed(i)
        mlp = MLPConfig(data.n_features, data.n_outputs, widths, "tanh")
        members.append(EnsembleMember(build_mlp(mlp).eval(), mlp, weight, trial, fold, {"seed": i}))
    with torch.no_grad():
        test_out = blend([m.model(torch.as_tensor(data.X_test)).numpy() for m in members],
                         [m.weight for m in members], data.task)
    scores = {"test": score_all(data.task, data.y_test, test_out, data.target_mean, data.target_std)}
    path = write_ensemble(root / "model", members, data, spec, kind="ensemble", scores=scores, metric="r2",
                          details={"selection": {"method": "by hand"}})

    def reference(X: np.ndarray) -> np.ndarray:
        """The weighted average of the members' own outputs, by `blend` (numpy), from features."""
        with torch.no_grad():
            return blend([m.model(torch.as_tensor(X, dtype=torch.float32)).numpy() for m in members],
                         [m.weight for m in members], data.task)
    return spec, data, path, reference


def _expected(spec, data, reference, raw_X: pd.DataFrame):
    """Predictions and probabilities (classification) of raw rows through the fitted sklearn pipeline."""
    out = reference(data.preprocessor.transform(as_categories(raw_X, data.categorical_columns)))
    if data.task == "classification":
        p = softmax(out)
        return np.asarray(data.classes)[p.argmax(axis=1)], p
    return out[:, 0] * data.target_std + data.target_mean, None


def test_folder_lists_every_member_with_its_checksum(folder):
    spec, data, path, _ = folder
    meta = json.loads((path / "metadata.json").read_text())
    names = {p.name for p in path.iterdir()}
    members = [f"member_0{i}.pt" for i in range(len(LAYOUT))]
    assert set(members) <= names and "model.pt" not in names
    assert set(meta["files"]) == names - {"metadata.json"}
    for name, digest in meta["files"].items():
        assert hashlib.sha256((path / name).read_bytes()).hexdigest() == digest
    listed = meta["ensemble"]["members"]
    assert [(m["file"], m["trial"], m["fold"], m["seed"]) for m in listed] == \
        [(f, t, fo, i) for i, (f, (t, fo, _, _)) in enumerate(zip(members, LAYOUT))]
    assert [m["weight"] for m in listed] == pytest.approx([w for _, _, w, _ in LAYOUT])
    assert meta["trial"]["numbers"] == [3, 7] and meta["architecture"]["kind"] == "ensemble"
    assert "average" in meta["target"]["outputs"] and meta["ensemble"]["selection"] == {"method": "by hand"}


def test_load_and_the_sklearn_wrappers_predict_the_weighted_average(folder):
    spec, data, path, reference = folder
    p = automlp.load(path)
    assert np.allclose(p.outputs(data.raw_test), reference(data.X_test), atol=1e-5)
    labels, proba = _expected(spec, data, reference, data.raw_test)
    if data.task == "classification":
        assert list(p.predict(data.raw_test)) == list(labels)
        assert np.allclose(p.predict_proba(data.raw_test), proba, atol=1e-6)
        est = AutomlpClassifier(str(path))
        assert np.allclose(est.predict_proba(data.raw_test), proba, atol=1e-6)
        assert list(est.predict(data.raw_test)) == list(labels)
    else:
        assert np.allclose(p.predict(data.raw_test), labels, rtol=1e-5)
        assert np.allclose(AutomlpRegressor(str(path)).predict(data.raw_test), labels, rtol=1e-5)


@pytest.mark.slow  # a fresh interpreter imports torch (about 5 s)
def test_predict_cli_and_the_torchscript_only_reader_give_the_weighted_average(folder):
    spec, data, path, reference = folder
    raw = read_data(spec.data)
    labels, proba = _expected(spec, data, reference, raw.X)
    r = CliRunner().invoke(app, ["predict", str(path), str(spec.data.path)])
    assert r.exit_code == 0, r.stderr
    # automlp made unimportable: the example may use torch, numpy and the standard library only
    code = ("import runpy, sys; sys.modules['automlp'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    served = subprocess.run([sys.executable, "-c", code, str(SERVE), str(path), str(spec.data.path)],
                            capture_output=True, text=True, timeout=120)
    assert served.returncode == 0, served.stderr
    for text in (r.stdout, served.stdout):
        out = pd.read_csv(io.StringIO(text))
        assert len(out) == len(raw.X)
        if data.task == "classification":
            assert list(out["prediction"]) == list(labels)
            assert np.allclose(out[[f"proba_{c}" for c in data.classes]].to_numpy(), proba, atol=1e-6)
        else:
            assert np.allclose(out["prediction"], labels, rtol=1e-5)


def test_onnx_file_computes_the_weighted_average(folder):
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    spec, data, path, reference = folder
    model = onnx.load(path / "model.onnx")
    onnx.checker.check_model(model)
    (out,) = ReferenceEvaluator(model).run(None, {"features": data.X_test})
    expected = reference(data.X_test)
    if data.task == "classification":
        assert np.allclose(softmax(out), softmax(expected), atol=1e-6)
    else:
        assert np.allclose(out, expected, atol=1e-5)


def test_a_changed_member_file_is_refused(folder, tmp_path):
    spec, data, path, _ = folder
    tampered = shutil.copytree(path, tmp_path / "tampered")
    member = tampered / "member_02.pt"
    state = torch.load(member, weights_only=True)
    next(iter(state.values()))[0, 0] += 1.0  # a plausible edit: still a valid weights file
    torch.save(state, member)
    with pytest.raises(ExportError, match=r"member_02.pt does not match its SHA-256 in metadata.json"):
        automlp.load(tampered)
    r = CliRunner().invoke(app, ["predict", str(tampered), str(spec.data.path)])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith(f"error: {tampered}: member_02.pt does not match its SHA-256")
    member.unlink()
    with pytest.raises(ExportError) as e:
        automlp.load(tampered)
    assert str(e.value) == f"{tampered}: member_02.pt is missing (metadata.json lists it); re-export the model"


def test_metadata_that_drops_a_member_from_the_file_list_is_refused(folder, tmp_path):
    spec, data, path, _ = folder
    copy = shutil.copytree(path, tmp_path / "unlisted")
    meta = json.loads((copy / "metadata.json").read_text())
    del meta["files"]["member_01.pt"]
    (copy / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ExportError, match=r"metadata.json: lists no member_01.pt; re-export the model"):
        automlp.load(copy)


def test_a_member_behind_another_preprocessing_is_refused(folder, tmp_path):
    spec, data, path, _ = folder
    mlp = MLPConfig(data.n_features + 1, data.n_outputs, (4,))
    with pytest.raises(ExportError, match="ensemble member 0 \\(trial 5\\) takes .* Every member must be trained "
                                          "behind the shared preprocessing"):
        write_ensemble(tmp_path / "m", [EnsembleMember(build_mlp(mlp), mlp, 1.0, 5)], data, spec, kind="bag",
                       scores={}, metric="r2")
    assert not (tmp_path / "m").exists()
