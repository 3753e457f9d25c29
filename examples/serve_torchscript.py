"""Serve an automlp model folder with torch, numpy and the standard library only (no automlp, no pandas).

    python serve_torchscript.py studies/iris/model data.csv > predictions.csv

It reads model.torchscript.pt and preprocessing.json and repeats automlp's preprocessing: numeric columns
imputed (median) and scaled as numeric.method says (standard; robust_clip: robust scaling and smooth clipping;
quantile: to a normal distribution), categorical ones one-hot encoded (missing -> the missing category; an
unseen category -> the infrequent column if there is one, else all zeros), then a 0/1 column per name in
numeric.missing_indicators (1 = the value was missing). Check metadata.json's SHA-256
list first if the folder came over a network.
"""

import csv
import json
import sys

import numpy as np
import torch


def category_text(value: str, dtype: str) -> str:
    """The text the training pipeline used: an integer column's '3.0' is '3', a float column's '3' is '3.0'."""
    if dtype in ("int", "float"):
        try:
            x = float(value)
        except ValueError:
            return value
        if dtype == "int" and x.is_integer():
            return str(int(x))
        if dtype == "float":
            return repr(x)
    if dtype == "bool" and value.lower() in ("true", "false"):
        return value.capitalize()
    return value


def scale(x: np.ndarray, num: dict, j: int) -> np.ndarray:
    """Column j of the imputed numbers, scaled as the training pipeline scaled it."""
    method = num.get("method", "standard")
    if method == "standard":
        return (x - num["mean"][j]) / num["scale"][j]
    if method == "robust_clip":
        z = (x - num["center"][j]) / num["scale"][j]
        return z / np.sqrt(1.0 + (z / num["clip"]) ** 2)
    # quantile: sklearn's QuantileTransformer(output_distribution="normal"), step for step
    q, ref, eps = np.asarray(num["quantiles"][j]), np.asarray(num["references"]), 1e-7
    u = 0.5 * (np.interp(x, q, ref) - np.interp(-x, -q[::-1], -ref[::-1]))
    u[x + eps > q[-1]] = 1.0
    u[x - eps < q[0]] = 0.0
    bound = eps - np.spacing(1)
    lo, hi = torch.special.ndtri(torch.tensor([bound, 1 - bound], dtype=torch.float64)).numpy()
    return np.clip(torch.special.ndtri(torch.from_numpy(u)).numpy(), lo, hi)


def features(rows: list[dict], pre: dict) -> np.ndarray:
    na = set(pre["csv"]["na_values"]) | set(pre["csv"]["default_na_values"])
    num, cat = pre["numeric"], pre["categorical"]
    dtypes = {c["name"]: c["dtype"] for c in pre["columns"]}
    X = np.zeros((len(rows), pre["n_features"]), np.float32)
    numbers = {}
    for j, name in enumerate(num["columns"]):
        numbers[name] = x = np.array([np.nan if r[name].lstrip() in na else float(r[name]) for r in rows], np.float64)
        X[:, j] = scale(np.where(np.isnan(x), num["impute"][j], x), num, j)
    offset = len(num["columns"])
    for c in cat["columns"]:
        for i, r in enumerate(rows):
            raw = r[c["name"]]
            text = cat["missing_category"] if raw.lstrip() in na else category_text(raw.strip(), dtypes[c["name"]])
            pos = c["index"].get(text, c["unknown"])
            if pos is not None:
                X[i, offset + pos] = 1.0
        offset += c["width"]
    for j, name in enumerate(num.get("missing_indicators", [])):
        X[:, offset + j] = np.isnan(numbers[name])
    return X


def main(model_dir: str, data_csv: str) -> None:
    with open(f"{model_dir}/preprocessing.json") as f:
        pre = json.load(f)
    net = torch.jit.load(f"{model_dir}/model.torchscript.pt").eval()
    with open(data_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with torch.no_grad():
        out = net(torch.from_numpy(features(rows, pre))).numpy().astype(np.float64)
    target = pre["target"]
    w = csv.writer(sys.stdout)
    if target["task"] == "classification":
        proba = np.exp(out - out.max(axis=1, keepdims=True))
        proba /= proba.sum(axis=1, keepdims=True)
        w.writerow(["row", "prediction"] + [f"proba_{c}" for c in target["classes"]])
        for i, p in enumerate(proba):
            w.writerow([i + 1, target["classes"][int(p.argmax())], *map(repr, p.tolist())])
    else:
        w.writerow(["row", "prediction"])
        for i, v in enumerate(out[:, 0] * target["std"] + target["mean"]):
            w.writerow([i + 1, repr(float(v))])


if __name__ == "__main__":
    main(*sys.argv[1:3])
