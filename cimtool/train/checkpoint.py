"""Per-epoch training checkpoints: one safetensors file (model, best model, optimizer tensors,
and the training state modules keep outside their state_dict) with the loop's scalar state as
JSON metadata. Written atomically (temp file + rename).

A module takes part in the last by defining ``train_state()`` (name → tensor, e.g. its random
generator's ``get_state()``) and ``load_train_state(state)``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file

from cimtool.errors import CimtoolError


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for pid, entry in state_dict["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"opt.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def train_states(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every module's ``train_state()``, as ``<module name>.<key>``."""
    return {f"{name}.{key}": value for name, module in model.named_modules()
            if callable(getattr(module, "train_state", None)) for key, value in module.train_state().items()}


def load_train_states(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    for name, module in model.named_modules():
        if callable(getattr(module, "load_train_state", None)):
            prefix = f"{name}."
            state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            if not state:
                raise CimtoolError(f"the checkpoint holds no training state of layer {name} (an older "
                                   "cimtool wrote it): run again without --resume")
            module.load_train_state(state)


def save_checkpoint(path: Path, model: torch.nn.Module, best_state: dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer, loop_state: dict[str, Any]) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best_state.items()})
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    tensors.update(opt_tensors)
    tensors.update({f"train.{k}": v.detach().cpu().contiguous() for k, v in train_states(model).items()})
    meta = {"loop": json.dumps(loop_state), "optimizer": json.dumps(opt_meta)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Restore model, optimizer and the modules' training state in place; return (best_state, loop_state)."""
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    opt = {k: v for k, v in tensors.items() if k.startswith("opt.")}
    optimizer.load_state_dict(_unflatten_optimizer(opt, json.loads(meta["optimizer"])))
    load_train_states(model, {k[6:]: v for k, v in tensors.items() if k.startswith("train.")})
    return best, json.loads(meta["loop"])
