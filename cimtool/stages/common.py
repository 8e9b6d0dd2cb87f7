"""What several stages need: open a model artifact, rebuild its data splits, find models by method."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cimtool import artifacts
from cimtool.errors import CimtoolError

MODEL_KINDS = ("model", "qmodel")
TORCH_DEVICES = ("auto", "cpu", "cuda")
# train samples that set converter ranges and thresholds: enough for the 99.9th percentile of
# millions of activations; calibrating on the whole split moves accuracy by less than the Monte
# Carlo error (docs/scale.md)
CALIBRATION_SAMPLES = 2048


def check_torch_device(name: str) -> None:
    """A one-line error for an unknown --torch-device or for cuda on a machine without CUDA."""
    if name not in TORCH_DEVICES:
        raise CimtoolError(f"unknown --torch-device '{name}' (choose from: {', '.join(TORCH_DEVICES)})")
    if name == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise CimtoolError("--torch-device cuda: no CUDA device is available (use cpu or auto)")


def resolve_device(name: str):
    """--torch-device auto|cpu|cuda → a torch.device (auto: CUDA where available)."""
    import torch

    check_torch_device(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def check_calibration_samples(n: int) -> None:
    if n < 1:
        raise CimtoolError(f"--calibration-samples must be at least 1, got {n}")


def calibration_sample(train, n: int, seed: int):
    """(sample, record): a stratified, seeded sample of ``n`` train items (the whole split when ``n``
    is at least its size) and what the manifest records of it (size and index hash)."""
    import hashlib

    import numpy as np

    from cimtool.data.split import stratified_indices
    from cimtool.train.batching import TensorData

    check_calibration_samples(n)
    if n >= len(train):
        idx = np.arange(len(train))
    else:
        # per-class rounding can give a few more than n: the part comes shuffled, so keep its first n
        idx = np.sort(stratified_indices(train.y.numpy(), [n / len(train)], seed)[0][:n])
    record = {"calibration_samples": int(len(idx)),
              "calibration_indices_sha256": hashlib.sha256(idx.astype(np.int64).tobytes()).hexdigest()}
    return TensorData(train.x[idx], train.y[idx]), record


def open_model(path: Path | str):
    """(artifact, model in eval mode, arch spec) of a verified model or hardware-aware model."""
    from cimtool.models.io import load_model

    artifact = artifacts.load(path)
    if artifact.kind not in MODEL_KINDS:
        raise CimtoolError(f"{path}: expected a model or qmodel artifact, found a '{artifact.kind}' artifact")
    model, spec = load_model(artifact)
    return artifact, model, spec


def model_splits(artifact: artifacts.Artifact, data_dir: str | None = None) -> dict[str, Any]:
    """The train/val/test splits the model was trained on, as TensorData, checked by hash.

    ``data_dir`` overrides the folder recorded at training time (data sets read from disk)."""
    import torch

    from cimtool.data import load_dataset, make_splits
    from cimtool.train.batching import TensorData

    if artifact.kind == "qmodel":  # its data set is that of the model it came from
        source = next((i for i in artifact.manifest.get("inputs", []) if i.get("role") == "model"), None)
        if source is None:
            raise CimtoolError(f"{artifact.path}: the qmodel does not record its source model")
        return model_splits(artifacts.load(source["path"], "model"), data_dir)
    p = artifact.params
    folder = data_dir or p.get("data_dir")
    raw = load_dataset(p["dataset"], Path(folder) if folder else None, bool(p.get("allow_pickle")))
    splits = make_splits(raw.x, raw.y, p["split_seed"], p["val_frac"], p["test_frac"], raw.test)
    recorded = next((i for i in artifact.manifest.get("inputs", []) if i.get("role") == "dataset"), {})
    if recorded and (recorded.get("data_sha256"), recorded.get("split_sha256")) != (
            raw.sha256(), splits.indices_sha256):
        raise CimtoolError(f"{artifact.path}: the data set '{p['dataset']}' differs from the one the "
                           "model was trained on (data or split hash mismatch)")
    return {name: TensorData(torch.from_numpy(getattr(splits, name).x),
                             torch.from_numpy(getattr(splits, name).y))
            for name in ("train", "val", "test")}


def parse_numbers(text: str, option: str, kind: type = int) -> tuple:
    """A comma-separated option value as a tuple of ``kind`` (int or float), duplicates dropped."""
    try:
        values = tuple(kind(s) for s in text.split(",") if s.strip())
    except ValueError:
        noun = "integers" if kind is int else "numbers"
        raise CimtoolError(f"{option}: '{text}' is not a comma-separated list of {noun}") from None
    if not values:
        raise CimtoolError(f"{option} is empty")
    return tuple(dict.fromkeys(values))


def find_model(root: Path, method: str) -> Path:
    """The newest model artifact under ``root`` trained with front-end ``method``."""
    folder = root / artifacts.KIND_DIRS["model"]
    candidates = []
    for manifest_path in folder.glob(f"*/{artifacts.MANIFEST}"):
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            continue  # not readable: not a candidate (it would fail to load anyway)
        params = manifest.get("params") if isinstance(manifest, dict) else None
        if isinstance(params, dict) and params.get("model") == "crossbar" and params.get("method") == method:
            candidates.append((str(manifest.get("created", "")), manifest_path.parent))
    if not candidates:
        raise CimtoolError(f"no model trained with --method {method} under {folder}; "
                           f"run: cimtool train-ann --method {method}"
                           + (f" --artifacts-root {root}" if str(root) != "artifacts" else ""))
    return max(candidates)[1]
