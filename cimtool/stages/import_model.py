"""`cimtool import-model`: your own PyTorch network and its trained weights as a model artifact.

The network comes from ``--model FILE.py:FUNCTION`` (``cimtool.models.sources``), the weights from a
.safetensors file or a .pt/.pth state_dict (read with ``weights_only=True``: never unpickled code).
The model is evaluated on the data set's test split, the split train-ann makes with the same
``--split-seed``, and written as a ``model`` artifact like train-ann's, so every later stage
(inspect, map-weights, qat, neurosim-trace, ...) takes it as ``--model``.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from cimtool import artifacts
from cimtool.data import load_dataset, make_splits
from cimtool.data.registry import artifact_stem, check_dataset_options
from cimtool.errors import CimtoolError
from cimtool.models import sources
from cimtool.models.io import save_model
from cimtool.models.registry import MODELS
from cimtool.params import ImportParams  # noqa: F401 (re-exported)
from cimtool.stages.common import StageOutput, resolve_device
from cimtool.train.batching import TensorData
from cimtool.train.loop import evaluate_draws
from cimtool.ui import Reporter

KIND = "model"


def _load_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CimtoolError(f"--weights {path}: not a readable safetensors file ({exc})") from None


def _load_state_dict(path: Path) -> dict[str, Any]:
    import pickle

    try:  # weights_only: tensors and containers only, so loading runs no code from the file
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as exc:
        raise CimtoolError(f"--weights {path}: not a state_dict of tensors (save one with "
                           f"torch.save(model.state_dict(), ...); {str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CimtoolError(f"--weights {path}: holds a {type(state).__name__}, not a state_dict of tensors "
                           "(save one with torch.save(model.state_dict(), ...))")
    return state


# how each weights format is read, by file suffix
WEIGHT_READERS = {".safetensors": _load_safetensors, ".pt": _load_state_dict, ".pth": _load_state_dict}


def read_weights(path: Path) -> dict[str, Any]:
    reader = WEIGHT_READERS.get(path.suffix.lower())
    if reader is None:
        raise CimtoolError(f"--weights {path}: expected a {', '.join(WEIGHT_READERS)} file")
    if not path.is_file():
        raise CimtoolError(f"--weights {path}: no such file")
    return reader(path)


def check_weights(model: torch.nn.Module, state: dict[str, Any], path: Path) -> None:
    """Exactly the model's tensor names and shapes, all finite: else one line naming the first mismatch."""
    expected = model.state_dict()
    for name in expected:
        if name not in state:
            raise CimtoolError(f"--weights {path}: no tensor '{name}', which the model has")
        if tuple(state[name].shape) != tuple(expected[name].shape):
            raise CimtoolError(f"--weights {path}: '{name}' has shape {list(state[name].shape)}, the model's "
                               f"is {list(expected[name].shape)}")
        if state[name].is_floating_point() and not torch.isfinite(state[name]).all():
            raise CimtoolError(f"--weights {path}: '{name}' contains NaN or inf")
    extra = next((name for name in state if name not in expected), None)
    if extra is not None:
        raise CimtoolError(f"--weights {path}: tensor '{extra}' is not in the model")


def validate(p: ImportParams) -> None:
    check_dataset_options(p.dataset, p.data_dir, p.image_size)
    if not (0 < p.val_frac < 1 and 0 < p.test_frac < 1 and p.val_frac + p.test_frac < 1):
        raise CimtoolError(f"--val-frac {p.val_frac} and --test-frac {p.test_frac} must be in (0, 1) "
                           "and sum to less than 1")
    sources.parse_model_args(p.model_arg)
    suffix = Path(p.weights).suffix.lower()
    if suffix not in WEIGHT_READERS:
        raise CimtoolError(f"--weights {p.weights}: expected a {', '.join(WEIGHT_READERS)} file")


def headline(artifact: artifacts.Artifact) -> str:
    s = artifact.summary
    return (f"[green]model[/green] {artifact.path}  imported {artifact.params['source']}  "
            f"test_accuracy {s['test_accuracy']:.4f}  val_accuracy {s['val_accuracy']:.4f}")


def run(p: ImportParams, out: Path | None, root: Path, force: bool, reporter: Reporter) -> artifacts.Artifact:
    validate(p)
    device = resolve_device(p.torch_device)
    weights_path = Path(p.weights)
    args = sources.parse_model_args(p.model_arg)
    source = sources.resolved(p.model)
    sha = sources.file_sha256(source)
    raw = load_dataset(p.dataset, Path(p.data_dir) if p.data_dir else None, image_size=p.image_size)
    splits = make_splits(raw.x, raw.y, p.split_seed, p.val_frac, p.test_frac, raw.test)
    spec: dict[str, Any] = {"model": sources.KIND, "source": source, "source_sha256": sha,
                            "model_args": args, "input_shape": list(raw.x.shape[1:]),
                            "num_classes": raw.num_classes, "off_array": list(p.digital)}
    entry = MODELS[sources.KIND]
    model = entry.build(spec)
    state = read_weights(weights_path)
    check_weights(model, state, weights_path)
    model.load_state_dict(state)
    model.eval()
    spec["crossbar_layers"] = entry.layers(model, spec)
    if not spec["crossbar_layers"]:
        raise CimtoolError(f"--model {p.model}: no Conv2d or Linear layer left for the crossbar arrays "
                           f"(--digital {','.join(p.digital)})")
    spec["bias_note"] = "biases are added digitally after the array readout"
    params = {**asdict(p), "source": source, "source_sha256": sha, "model_args": args,
              "weights_sha256": artifacts.sha256_file(weights_path), "torch_device": device.type}
    name = f"{artifact_stem(p.dataset)}-{sources.function_name(source)}"
    output = StageOutput(KIND, out, root, name, force, inputs=[weights_path])
    reporter.log(f"import-model: {source} with {weights_path} on {raw.name}; "
                 f"test {len(splits.test)} → {output.path}")
    tensors = {k: TensorData(torch.from_numpy(getattr(splits, k).x), torch.from_numpy(getattr(splits, k).y))
               for k in ("val", "test")}
    with output.writer(params) as writer:
        test = evaluate_draws(model.to(device), tensors["test"], device, p.seed)
        val = evaluate_draws(model, tensors["val"], device, p.seed)
        model.cpu()
        save_model(writer.partial, model, spec)
        for table in ("metrics.parquet", "timing.parquet"):  # nothing trained here: no epochs, no timing
            pq.write_table(pa.table({}), writer.path(table))
        summary = {
            "test_accuracy": test["accuracy"],
            **({"test_accuracy_std": test["accuracy_std"], "test_accuracy_draws": test["accuracy_draws"],
                "eval_seed": test["eval_seed"]} if "accuracy_std" in test else {}),
            "val_accuracy": val["accuracy"],
            "n_train": len(splits.train), "n_val": len(splits.val), "n_test": len(splits.test),
            "n_parameters": int(sum(t.numel() for t in model.parameters())),
            "crossbar_layers": [layer["name"] for layer in spec["crossbar_layers"]],
            "torch_device": device.type,
        }
        inputs = [{"role": "dataset", "kind": "dataset", "name": raw.name, "source": raw.source,
                   "data_sha256": raw.sha256(), "split_sha256": splits.indices_sha256},
                  {"role": "weights", "kind": "file", "file": str(weights_path.resolve()),
                   "sha256": params["weights_sha256"]}]
        if sha is not None:
            inputs.append({"role": "model source", "kind": "file", "source": source, "sha256": sha})
        return output.commit(writer, inputs, summary)
