"""Model artifacts on disk: weights in safetensors plus a JSON architecture spec (never pickles)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cimtool.artifacts import Artifact
from cimtool.errors import CimtoolError

WEIGHTS = "weights.safetensors"
ARCH = "arch.json"


def save_model(directory: Path, model, spec: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # one metadata key only: safetensors writes a multi-key metadata map in random order,
    # which would break byte-identical artifacts
    save_file(state, str(directory / WEIGHTS), metadata={"format": "pt"})
    (directory / ARCH).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")


def load_model(artifact: Artifact):
    """Rebuild the module from arch.json and load its weights, checking names and shapes."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from cimtool.models.registry import MODELS, build

    arch_path = artifact.file(ARCH)
    try:
        spec = json.loads(arch_path.read_text())
        if spec.get("model") not in MODELS:
            raise CimtoolError(f"{arch_path}: unknown model '{spec.get('model')}'")
        model = build(spec)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CimtoolError(f"{arch_path}: invalid architecture spec ({exc})") from None
    weights_path = artifact.file(WEIGHTS)
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise CimtoolError(f"{weights_path}: not a readable safetensors file ({exc})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise CimtoolError(f"{weights_path}: tensors do not match {ARCH} "
                           f"(missing {missing[:3]}, unexpected {extra[:3]})")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CimtoolError(f"{weights_path}: '{name}' has shape {list(tensor.shape)}, "
                               f"{ARCH} implies {list(expected[name].shape)}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CimtoolError(f"{weights_path}: '{name}' contains NaN or inf")
    model.load_state_dict(state)
    from cimtool.models.registry import crossbar_layers

    if spec.get("crossbar_layers") != crossbar_layers(model, tuple(spec.get("off_array", ()))):
        raise CimtoolError(f"{arch_path}: 'crossbar_layers' does not match the architecture")
    return model.eval(), spec
