"""Loading a model folder: checksums first, then weights (`torch.load(weights_only=True)`), never a pickle.

`load(path)` returns a `Predictor`: raw rows (a DataFrame, or a CSV/Parquet path) in, labels, probabilities
or values out. `Predictor.predict_csv` streams a file in chunks, so memory stays bounded at any size.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import torch

from automlp.errors import ExportError
from automlp.export.preprocess import FeatureTransform, Typed
from automlp.blocks.config import BlockConfig
from automlp.model import MLPConfig, build_mlp

MODEL_FORMAT = "automlp-model"
REQUIRED = ("model.pt", "preprocessing.json")
CHUNK_ROWS = 100_000


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(folder: str | Path) -> dict:
    """metadata.json of a model folder whose listed files are all present and unchanged; else ExportError."""
    folder = Path(folder)
    meta_path = folder / "metadata.json"
    if not folder.is_dir():
        raise ExportError(f"{folder}: no such model folder")
    if not meta_path.is_file():
        raise ExportError(f"{folder}: not an automlp model folder (metadata.json is missing); "
                          "export one with automlp export SPEC")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{meta_path}: not valid JSON ({e}); re-export the model") from None
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT or not isinstance(meta.get("files"), dict):
        raise ExportError(f"{meta_path}: not automlp model metadata (format {MODEL_FORMAT!r} with a 'files' list "
                          "expected); re-export the model")
    files = meta["files"]
    for name in _required(meta, meta_path):
        if name not in files:
            raise ExportError(f"{meta_path}: lists no {name}; re-export the model")
    for name, digest in files.items():
        path = folder / name
        if Path(name).name != name or name.startswith("."):
            raise ExportError(f"{meta_path}: file name {name!r} is not a plain file name; refusing the folder")
        if not path.is_file():
            raise ExportError(f"{folder}: {name} is missing (metadata.json lists it); re-export the model")
        actual = sha256(path)
        if actual != digest:
            raise ExportError(f"{folder}: {name} does not match its SHA-256 in metadata.json (expected "
                              f"{str(digest)[:12]}..., got {actual[:12]}...): it changed after export; "
                              "refusing to load it. Re-export the model")
    return meta


def _required(meta: dict, meta_path: Path) -> list[str]:
    """The files a folder must list: the network (model.pt, or every member of an ensemble) and preprocessing."""
    ensemble = meta.get("ensemble")
    if ensemble is None:
        return list(REQUIRED)
    members = ensemble.get("members") if isinstance(ensemble, dict) else None
    if not members or not all(isinstance(m, dict) and isinstance(m.get("file"), str) for m in members):
        raise ExportError(f"{meta_path}: 'ensemble' lists no member files; re-export the model")
    return [m["file"] for m in members] + ["preprocessing.json"]


@dataclass
class PredictReport:
    """What `predict_csv` saw: rows written, input columns it ignored, categories it had never seen."""

    n_rows: int = 0
    extra_columns: list[str] = field(default_factory=list)
    unseen: dict[str, list] = field(default_factory=dict)  # column -> [count, first example]


class Predictor:
    """A loaded model folder. `predict`/`predict_proba`/`transform` take a DataFrame with the training
    columns (extra columns are ignored) or the path of a CSV/Parquet file."""

    def __init__(self, folder: Path, metadata: dict, transform: FeatureTransform, net: torch.nn.Module,
                 device: torch.device):
        self.path = folder
        self.metadata = metadata
        self.features = transform
        self.net = net
        self.device = device
        target = transform.spec["target"]
        self.task: str = target["task"]
        self.target_name: str = target["name"]
        self.classes_: np.ndarray | None = np.asarray(target["classes"]) if self.task == "classification" \
            else None
        self._mean, self._std = float(target.get("mean", 0.0)), float(target.get("std", 1.0))
        self._na_values = list(transform.spec["csv"]["na_values"])  # the spec's; pandas' defaults apply too

    def __repr__(self) -> str:
        t = self.metadata.get("trial", {})
        return (f"Predictor({str(self.path)!r}, {self.task}, study {self.metadata['study']['name']!r} "
                f"trial {t.get('number')}, {self.metadata['architecture']['describe']})")

    @property
    def input_columns(self) -> list[str]:
        return self.features.input_columns

    # ------------------------------------------------------------------ frames in, arrays out

    def _frames(self, X, chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[pd.DataFrame, int, str]]:
        if isinstance(X, pd.DataFrame):
            self._check_columns(list(X.columns), "X")
            plain = isinstance(X.index, pd.RangeIndex) and X.index.start == 0 and X.index.step == 1
            yield (X if plain else X.reset_index(drop=True)), 0, "X"  # rows are counted by position
        elif isinstance(X, (str, Path)):
            yield from self._read_chunks(Path(X), chunk_rows, report=PredictReport())
        else:
            raise ExportError(f"X: must be a pandas DataFrame or the path of a CSV/Parquet file "
                              f"(got {type(X).__name__})")

    def outputs(self, X) -> np.ndarray:
        """The network's raw outputs (logits, or standardized values) for every row."""
        parts = [self._forward(self.features.coerce(f, src, first)) for f, first, src in self._frames(X)]
        return np.concatenate(parts) if parts else np.zeros((0, self.metadata["architecture"]["n_outputs"]),
                                                            np.float32)

    def transform(self, X, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
        """The preprocessed features (float32) the network takes."""
        parts = [self.features.transform(self.features.coerce(f, src, first))
                 for f, first, src in self._frames(X, chunk_rows)]
        return np.concatenate(parts) if parts else np.zeros((0, self.features.n_features), np.float32)

    def predict(self, X) -> np.ndarray:
        """Class labels (classification) or values in the target's units (regression)."""
        return self._decode(self.outputs(X))

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, columns in the order of `classes_`."""
        if self.task != "classification":
            raise ExportError("predict_proba: this model does regression; use predict")
        return _softmax(self.outputs(X))

    def as_sklearn(self):
        """This model as a scikit-learn estimator (AutomlpClassifier or AutomlpRegressor)."""
        from automlp.export.sklearn import from_predictor

        return from_predictor(self)

    @torch.no_grad()
    def _forward(self, typed: Typed) -> np.ndarray:
        X = torch.from_numpy(self.features.transform(typed)).to(self.device)
        return self.net(X).float().cpu().numpy()

    def _decode(self, out: np.ndarray) -> np.ndarray:
        if self.task == "classification":
            return self.classes_[out.argmax(axis=1)]
        return out.reshape(-1).astype(np.float64) * self._std + self._mean

    # ------------------------------------------------------------------ files

    def _check_columns(self, columns: list, source: str) -> list[str]:
        """The columns the model does not use (missing ones are an error naming the first)."""
        have = set(map(str, columns))
        missing = [c for c in self.input_columns if c not in have]
        if missing:
            more = f" (and {len(missing) - 1} more: {', '.join(missing[1:6])})" if len(missing) > 1 else ""
            raise ExportError(f"{source}: column '{missing[0]}' is missing{more}; the model needs the columns: "
                              f"{', '.join(self.input_columns)}")
        need = set(self.input_columns)
        return [str(c) for c in columns if str(c) not in need]

    def _read_chunks(self, path: Path, chunk_rows: int, report: PredictReport,
                     keep: tuple[str, ...] = ()) -> Iterator[tuple[pd.DataFrame, int, str]]:
        name = path.name
        if not path.is_file():
            raise ExportError(f"{path}: no such file")
        suffixes = [s.lower() for s in path.suffixes]
        if ".parquet" in suffixes or ".pq" in suffixes:
            yield from self._read_parquet(path, chunk_rows, report, keep)
            return
        sep = "\t" if ".tsv" in suffixes else ","
        try:
            header = pd.read_csv(path, sep=sep, nrows=0, skipinitialspace=True, encoding="utf-8").columns
        except pd.errors.EmptyDataError:
            raise ExportError(f"{name}: the file is empty; it needs a header row with the model's columns") from None
        except (UnicodeDecodeError, pd.errors.ParserError, OSError, ValueError) as e:
            raise ExportError(f"{name}: cannot read it as CSV ({str(e).strip().splitlines()[0]})") from None
        report.extra_columns = [c for c in self._check_columns(list(header), name) if c not in keep]
        for k in keep:
            if k not in set(header):
                raise ExportError(f"--id-column: column '{k}' not in {name}; columns are: {', '.join(header)}")
        use = list(dict.fromkeys([*keep, *self.input_columns]))
        # categorical columns and id columns stay text: the exact text is what the one-hot encoder matched
        text = {c.name for c in self.features.columns if c.kind == "categorical"} | set(keep)
        reader = pd.read_csv(path, sep=sep, usecols=use, dtype={c: str for c in text}, na_values=self._na_values,
                             keep_default_na=True, skipinitialspace=True, encoding="utf-8", chunksize=chunk_rows)
        first = 0
        try:
            for chunk in reader:
                chunk.index = pd.RangeIndex(first, first + len(chunk))
                n = len(chunk)
                yield chunk, first, name
                del chunk  # not alive while the next chunk is parsed
                first += n
        except (UnicodeDecodeError, pd.errors.ParserError) as e:
            raise ExportError(f"{name}: cannot read it as CSV past line {first + 1} "
                              f"({str(e).strip().splitlines()[0]})") from None

    def _read_parquet(self, path: Path, chunk_rows: int, report: PredictReport, keep: tuple[str, ...]):
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except (OSError, ValueError) as e:
            raise ExportError(f"{path.name}: cannot read it as Parquet ({e})") from None
        columns = pf.schema_arrow.names
        report.extra_columns = [c for c in self._check_columns(columns, path.name) if c not in keep]
        use = list(dict.fromkeys([*keep, *self.input_columns]))
        first = 0
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=use):
            chunk = batch.to_pandas().replace({v: np.nan for v in self._na_values if v})
            chunk.index = pd.RangeIndex(first, first + len(chunk))
            n = len(chunk)
            yield chunk, first, path.name
            del chunk, batch
            first += n

    def _predict_chunk(self, chunk: pd.DataFrame, first: int, name: str, id_column: str | None,
                       report: PredictReport) -> pd.DataFrame:
        typed = self.features.coerce(chunk, name, first)
        for col, (count, example) in self.features.unseen(typed).items():
            seen = report.unseen.setdefault(col, [0, example])
            seen[0] += count
        out = self._forward(typed)
        del typed
        frame = {id_column: chunk[id_column].to_numpy()} if id_column else \
            {"row": np.arange(first + 1, first + len(chunk) + 1)}
        frame["prediction"] = self._decode(out)
        if self.task == "classification":
            proba = _softmax(out)
            for j, label in enumerate(self.classes_):
                frame[f"proba_{label}"] = proba[:, j]
        return pd.DataFrame(frame)

    def predict_csv(self, src: str | Path, dst, chunk_rows: int = CHUNK_ROWS,
                    id_column: str | None = None) -> PredictReport:
        """Stream `src` (CSV/TSV/Parquet) through the model into `dst` (a text or binary stream) as CSV: an id
        column (`row`: the 1-based data row, or `id_column` copied through), `prediction`, and for
        classification `proba_<class>` per class (float32, the shortest text that reads back the same)."""
        report = PredictReport()
        keep = (id_column,) if id_column else ()
        header = True
        for chunk, first, name in self._read_chunks(Path(src), chunk_rows, report, keep):
            out = self._predict_chunk(chunk, first, name, id_column, report)
            _write(dst, _csv_bytes(out, header))
            header = False
            report.n_rows += len(chunk)
            # drop this chunk before the reader parses the next one: memory holds one chunk, not two
            del chunk, out
        if header:  # no data rows: still write the header
            cols = [id_column or "row", "prediction"] + ([f"proba_{c}" for c in self.classes_]
                                                         if self.task == "classification" else [])
            _write(dst, _csv_bytes(pd.DataFrame({c: pd.Series(dtype=str) for c in cols}), True))
        return report


def _csv_bytes(frame: pd.DataFrame, header: bool) -> bytes:
    """CSV text of a chunk with Arrow's writer (about 7x faster than DataFrame.to_csv here). Arrow quotes all
    text when it quotes any, so text is written bare unless a value holds a comma, quote or line break."""
    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c].dtype)]
    special = any(frame[c].astype(str).str.contains(r'[",\r\n]', regex=True).any() for c in text)
    buf = pa.BufferOutputStream()
    pacsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), buf,
                    pacsv.WriteOptions(include_header=False, quoting_style="needed" if special else "none"))
    head = io.StringIO()
    if header:
        csv.writer(head, lineterminator="\n").writerow(map(str, frame.columns))
    return head.getvalue().encode("utf-8") + buf.getvalue().to_pybytes()


def _write(dst, data: bytes) -> None:
    dst.write(data.decode("utf-8") if isinstance(dst, io.TextIOBase) else data)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def load(path: str | Path, device: str = "cpu") -> Predictor:
    """Load a model folder written by `automlp search` or `automlp export`, after checking every file's
    SHA-256 against metadata.json. Nothing is unpickled: weights load with `torch.load(weights_only=True)`."""
    folder = Path(path)
    meta = verify(folder)
    try:
        state = json.loads((folder / "preprocessing.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{folder / 'preprocessing.json'}: not valid JSON ({e})") from None
    transform = FeatureTransform(state)
    dev = torch.device(device)
    ensemble = meta.get("ensemble")
    if ensemble is None:
        net = _load_net(folder, "model.pt", meta["architecture"], transform.n_features, dev)
    else:
        from automlp.ensemble import EnsembleNet

        members = [_load_net(folder, m["file"], m["architecture"], transform.n_features, dev)
                   for m in ensemble["members"]]
        net = EnsembleNet(members, [m["weight"] for m in ensemble["members"]], transform.spec["target"]["task"])
    net.to(dev).eval()
    return Predictor(folder, meta, transform, net, dev)


def _load_net(folder: Path, name: str, a: dict, n_features: int, dev: torch.device) -> torch.nn.Module:
    """One network from its architecture (metadata.json) and its weights file."""
    blocks = BlockConfig(**a["blocks"]) if a.get("blocks") else None  # embeddings, TabM (automlp.blocks)
    cfg = MLPConfig(n_inputs=a["n_inputs"], n_outputs=a["n_outputs"], widths=tuple(a["widths"]),
                    activation=a["activation"], dropout=a["dropout"], blocks=blocks)
    if cfg.n_inputs != n_features:
        raise ExportError(f"{folder}: the network in {name} takes {cfg.n_inputs} features, preprocessing.json "
                          f"makes {n_features}; re-export the model")
    net = build_mlp(cfg)
    try:
        weights = torch.load(folder / name, map_location=dev, weights_only=True)
        net.load_state_dict(weights)
    except (RuntimeError, ValueError, OSError) as e:
        raise ExportError(f"{folder / name}: cannot load the weights ({str(e).splitlines()[0]})") from None
    return net
