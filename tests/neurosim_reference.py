"""DNN_NeuroSim V1.3's reference trace functions (hook.py), imported from an installed
``hwcomponents-neurosim`` at test time — never copied into this repository (CC BY-NC)."""

from __future__ import annotations

import sys


def reference_hook():
    """The V1.3 ``utee.hook`` module, or None if hwcomponents-neurosim is not installed.

    Shims for today's libraries: numpy 2 has no ``np.str``; torch has no
    ``torch._jit_internal.weak_script_method`` (imported by the package's quantized modules)."""
    import numpy as np
    import torch._jit_internal as jit_internal

    from cimtool.neurosim.build import bundled_source

    source = bundled_source()
    if source is None:
        return None
    if "str" not in vars(np):
        np.str = str
    if not hasattr(jit_internal, "weak_script_method"):
        jit_internal.weak_script_method = lambda fn: fn
    inference = str(source.parent)  # Inference_pytorch: holds utee/ and modules/
    if inference not in sys.path:
        sys.path.insert(0, inference)
    from utee import hook

    return hook
