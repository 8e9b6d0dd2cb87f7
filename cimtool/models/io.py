"""Model artifacts on disk: weights in safetensors plus a JSON architecture spec (never pickles).

Also the one place that finds a model artifact (``find_model``, ``resolve_model``), opens it
(``open_model``) and rebuilds the data splits it was trained on (``model_splits``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cimtool import artifacts
from cimtool.artifacts import Artifact
from cimtool.errors import CimtoolError

if TYPE_CHECKING:
    from cimtool.data.tensors import TensorData
    from cimtool.ui import Reporter

WEIGHTS = "weights.safetensors"
# qat --mode onchip: every recorded epoch's crossbar weights after its last update and before it
# (NeuroSim V2.1's weight and weightOld of that epoch), keys "<epoch>/<layer>/weight|old"
ONCHIP_EPOCHS = "onchip_epochs.safetensors"
ARCH = "arch.json"
MODEL_KINDS = ("model", "qmodel")


def save_model(directory: Path, model, spec: dict[str, Any]) -> None:
    save_weights(directory / WEIGHTS, model)
    (directory / ARCH).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")


def save_weights(path: Path, model) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # one metadata key only: safetensors writes a multi-key metadata map in random order,
    # which would break byte-identical artifacts
    save_file(state, str(path), metadata={"format": "pt"})


def load_weights(model, path: Path) -> None:
    """Weights of the same architecture (safetensors) into ``model``; a one-line error if they do not fit."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise CimtoolError(f"{path}: not weights of this model ({str(exc).splitlines()[0]})") from None
    if missing or unexpected:
        raise CimtoolError(f"{path}: not weights of this model (missing {missing[:3]}, unexpected "
                           f"{unexpected[:3]})")


def save_onchip_epochs(directory: Path, epochs: dict[int, dict[str, tuple[Any, Any]]]) -> None:
    """Each recorded epoch's crossbar weights (after, before its last update), by layer name."""
    from safetensors.torch import save_file

    tensors = {f"{epoch}/{name}/{kind}": w.detach().cpu().contiguous()
               for epoch, layers in epochs.items() for name, pair in layers.items()
               for kind, w in zip(("weight", "old"), pair, strict=True)}
    save_file(tensors, str(directory / ONCHIP_EPOCHS), metadata={"format": "pt"})


def onchip_epochs(artifact: Artifact) -> dict[int, dict[str, tuple[Any, Any]]] | None:
    """epoch → layer name → (weight, its weightOld) as numpy, of a ``qat --mode onchip`` qmodel, in
    epoch order; None for any other artifact."""
    from safetensors.numpy import load_file

    if artifact.kind != "qmodel" or ONCHIP_EPOCHS not in artifact.manifest.get("files", {}):
        return None
    path = artifact.file(ONCHIP_EPOCHS)
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 (safetensors raises several types)
        raise CimtoolError(f"{path}: not a readable safetensors file ({exc})") from None
    epochs: dict[int, dict[str, dict[str, Any]]] = {}
    for key, value in tensors.items():
        epoch, name, kind = key.split("/")
        epochs.setdefault(int(epoch), {}).setdefault(name, {})[kind] = value
    return {e: {n: (d["weight"], d["old"]) for n, d in sorted(layers.items())}
            for e, layers in sorted(epochs.items())}


def onchip_scales(artifact: Artifact) -> dict[str, float] | None:
    """Each crossbar layer's digital scale α of a ``qat --mode onchip`` qmodel (its weights are
    α·QW(w), ``w`` the device's state in [−1, 1]); None for any other artifact."""
    scales = artifact.summary.get("onchip_scales") if artifact.kind == "qmodel" else None
    return {str(k): float(v) for k, v in scales.items()} if isinstance(scales, dict) else None


def weights_before_update(artifact: Artifact) -> tuple[dict[str, Any], str] | None:
    """(layer name → weight as numpy, where they come from) of what a qmodel's training updated
    from: the weightOld of its last on-chip update (qat --mode onchip), else its source model's
    (a fine-tuned model); None for a plain model."""
    if artifact.kind != "qmodel":
        return None
    epochs = onchip_epochs(artifact)
    if epochs:
        last = epochs[max(epochs)]
        what = artifact.summary.get("onchip_weight_old", "the weights before the last on-chip update "
                                                          "(qat --mode onchip)")
        return {name: old for name, (_, old) in last.items()}, what
    ref = next((i for i in artifact.manifest.get("inputs", []) if i.get("role") == "model"), None)
    if ref is None:
        return None
    _, model, spec = open_model(ref["path"])
    return ({layer["name"]: model.get_submodule(layer["name"]).weight.detach().numpy()
             for layer in spec["crossbar_layers"]}, f"its source model {ref['path']}")


def load_model(artifact: Artifact):
    """Rebuild the module from arch.json and load its weights, checking names and shapes."""
    import torch
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from cimtool.models.registry import MODELS, build

    arch_path = artifact.file(ARCH)
    try:
        spec = json.loads(arch_path.read_text())
        if spec.get("model") not in MODELS:
            raise CimtoolError(f"{arch_path}: unknown model '{spec.get('model')}'")
        with torch.device("meta"):  # shapes only: a crafted spec must not allocate before it is checked
            expected = {k: v.shape for k, v in build(spec).state_dict().items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CimtoolError(f"{arch_path}: invalid architecture spec ({exc})") from None
    weights_path = artifact.file(WEIGHTS)
    try:
        with safe_open(str(weights_path), framework="pt") as fh:  # the header: shapes without loading
            shapes = {name: torch.Size(fh.get_slice(name).get_shape()) for name in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise CimtoolError(f"{weights_path}: not a readable safetensors file ({exc})") from None
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    if missing or extra:
        raise CimtoolError(f"{weights_path}: tensors do not match {ARCH} "
                           f"(missing {missing[:3]}, unexpected {extra[:3]})")
    for name, shape in shapes.items():
        if shape != expected[name]:
            raise CimtoolError(f"{weights_path}: '{name}' has shape {list(shape)}, "
                               f"{ARCH} implies {list(expected[name])}")
    model = build(spec)
    state = load_file(str(weights_path))
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CimtoolError(f"{weights_path}: '{name}' contains NaN or inf")
    model.load_state_dict(state)
    if spec.get("crossbar_layers") != MODELS[spec["model"]].layers(model, spec):
        raise CimtoolError(f"{arch_path}: 'crossbar_layers' does not match the architecture")
    return model.eval(), spec


def open_model(path: Path | str):
    """(artifact, model in eval mode, arch spec) of a verified model or hardware-aware model."""
    artifact = artifacts.load(path)
    if artifact.kind not in MODEL_KINDS:
        raise CimtoolError(f"{path}: expected a model or qmodel artifact, found a '{artifact.kind}' artifact")
    model, spec = load_model(artifact)
    return artifact, model, spec


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


def resolve_model(model: str | None, method: str, root: Path, reporter: Reporter) -> Path:
    """``--model`` as given, or else the newest model trained with ``--method`` under ``root``."""
    if model is not None:
        return Path(model)
    path = find_model(root, method)
    reporter.log(f"using the newest --method {method} model: {path}")
    return path


def model_splits(artifact: Artifact, data_dir: str | None = None) -> dict[str, TensorData]:
    """The train/val/test splits the model was trained on, as TensorData, checked by hash.

    ``data_dir`` overrides the folder recorded at training time (data sets read from disk)."""
    import torch

    from cimtool.data import make_splits
    from cimtool.data.registry import load_recorded_dataset
    from cimtool.data.tensors import TensorData

    if artifact.kind == "qmodel":  # its data set is that of the model it came from
        source = next((i for i in artifact.manifest.get("inputs", []) if i.get("role") == "model"), None)
        if source is None:
            raise CimtoolError(f"{artifact.path}: the qmodel does not record its source model")
        return model_splits(artifacts.load(source["path"], "model"), data_dir)
    p = artifact.params
    raw = load_recorded_dataset(p, artifact.path, data_dir)
    splits = make_splits(raw.x, raw.y, p["split_seed"], p["val_frac"], p["test_frac"], raw.test)
    recorded = next((i for i in artifact.manifest.get("inputs", []) if i.get("role") == "dataset"), {})
    if recorded and (recorded.get("data_sha256"), recorded.get("split_sha256")) != (
            raw.sha256(), splits.indices_sha256):
        raise CimtoolError(f"{artifact.path}: the data set '{p['dataset']}' differs from the one the "
                           "model was trained on (data or split hash mismatch)")
    return {name: TensorData(torch.from_numpy(getattr(splits, name).x),
                             torch.from_numpy(getattr(splits, name).y))
            for name in ("train", "val", "test")}
