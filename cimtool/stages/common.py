"""What several stages need: the --torch-device check and resolution.

Finding, opening and reading the data of model artifacts lives in :mod:`cimtool.models.io`, the
calibration sample in :mod:`cimtool.data.calibration`; they are re-exported here for callers that
still import them from this module.
"""

from __future__ import annotations

from cimtool.data.calibration import (  # noqa: F401 (re-exported)
    CALIBRATION_SAMPLES,
    calibration_sample,
    check_calibration_samples,
)
from cimtool.errors import CimtoolError
from cimtool.models.io import MODEL_KINDS, find_model, model_splits, open_model  # noqa: F401 (re-exported)

TORCH_DEVICES = ("auto", "cpu", "cuda")


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
