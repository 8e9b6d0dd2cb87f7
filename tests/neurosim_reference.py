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


_SCRIPT = r"""
import sys, numpy as np, torch, torch._jit_internal as jit
np.str = str
if not hasattr(jit, "weak_script_method"):
    jit.weak_script_method = lambda fn: fn
sys.path.insert(0, sys.argv[1])
from utee import hook
from utee.wage_quantizer import Q
cases = np.load(sys.argv[2])
out = sys.argv[3]
for name in cases.files:
    kind, bits, *geometry = name.split("_")
    x = cases[name]
    if kind == "conv":
        kernel, padding, stride = (int(g) for g in geometry)
        hook.write_matrix_activation_conv(hook.stretch_input(x, kernel, (padding, padding), (stride, stride)),
                                          None, int(bits), f"{out}/{name}.csv")
    elif kind == "fc":
        hook.write_matrix_activation_fc(x, None, int(bits), f"{out}/{name}.csv")
    else:
        hook.write_matrix_weight(Q(torch.from_numpy(x), int(bits)).numpy(), f"{out}/{name}.csv")
"""


def reference_files(checkout, cases: dict, workdir) -> dict[str, bytes]:
    """The trace files a release's own ``utee/hook.py`` writes for ``cases`` (name → array; names
    ``conv_<bits>_<kernel>_<padding>_<stride>``, ``fc_<bits>``, ``weight_<bits>_<n>``), computed in a
    subprocess: every release calls its packages ``utee`` and ``modules``, so two cannot share one
    interpreter."""
    import subprocess
    from pathlib import Path

    import numpy as np

    workdir = Path(workdir)
    np.savez(workdir / "cases.npz", **cases)
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(checkout), str(workdir / "cases.npz"),
                           str(workdir)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {name: (workdir / f"{name}.csv").read_bytes() for name in cases}
