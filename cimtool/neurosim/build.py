"""Find DNN+NeuroSim's C++ source, set its Param.cpp from a device card, build it with ``make``.

NeuroSim is CC BY-NC 4.0 research code: cimtool never ships it. It uses, in order, ``--neurosim
DIR|BINARY``, the ``CIMTOOL_NEUROSIM`` environment variable, or the copy inside an installed
``hwcomponents-neurosim`` package (found without importing it). A source directory is copied into
a cache directory, its ``Param.cpp`` edited (the first assignment of each setting, the
constructor's defaults) and built once per (source, settings) hash.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from cimtool.checks import check_choice, check_range
from cimtool.devices.card import DeviceCard
from cimtool.errors import CimtoolError

ENV = "CIMTOOL_NEUROSIM"
CACHE_ENV = "CIMTOOL_CACHE"
BUNDLED = ("DNN_NeuroSim_V1.3", "Inference_pytorch", "NeuroSIM")  # inside hwcomponents_neurosim
HOW_TO_GET = ("install the bundled source with `pip install --no-deps --ignore-requires-python "
              "hwcomponents-neurosim`, or pass --neurosim DIR (your DNN_NeuroSim checkout) or set "
              f"{ENV}")
MEMCELLS = {"sram": 1, "rram": 2, "fefet": 3}  # Param.cpp memcelltype
# technology node (nm) → wire width (nm) of Param.cpp's table (its AR/Rho switch); featuresize follows
WIRE_WIDTH = {130: 175, 90: 110, 65: 105, 45: 80, 32: 56, 22: 40, 14: 25, 10: 18, 7: 18}
BUILD_TIMEOUT_S = 900


@dataclass(frozen=True)
class NeuroSimSettings:
    """The Param.cpp values cimtool sets: the chip the card and options describe."""

    technode: int = 22
    featuresize: float = 40e-9
    wireWidth: int = 40
    memcelltype: int = 2
    cellBit: int = 2
    levelOutput: int = 32  # ADC levels (2^adc_bits)
    numRowSubArray: int = 128
    numColSubArray: int = 128
    resistanceOn: float = 6e3
    resistanceOff: float = 6e3 * 150
    readVoltage: float = 0.5
    readPulseWidth: float = 10e-9

    @classmethod
    def from_card(cls, card: DeviceCard, cell: str, cell_bits: int | None, adc_bits: int | None,
                  subarray: int, technode: int) -> NeuroSimSettings:
        check_choice("--cell", cell, MEMCELLS)
        bits = cell_bits if cell_bits is not None else max(1, int(math.floor(math.log2(card.levels))))
        adc = adc_bits if adc_bits is not None else card.adc_bits
        check_range("--cell-bits", bits, 1, 8)
        check_range("--adc-bits", adc, 1, 12)
        if subarray < 8 or subarray & (subarray - 1):
            raise CimtoolError(f"--subarray must be a power of two >= 8, got {subarray}")
        if technode not in WIRE_WIDTH:
            raise CimtoolError(f"--technode {technode} is not one NeuroSim models "
                               f"({', '.join(map(str, WIRE_WIDTH))} nm)")
        return cls(technode=technode, featuresize=WIRE_WIDTH[technode] * 1e-9, wireWidth=WIRE_WIDTH[technode],
                   memcelltype=MEMCELLS[cell], cellBit=bits, levelOutput=2**adc,
                   numRowSubArray=subarray, numColSubArray=subarray, resistanceOn=1.0 / card.g_max,
                   resistanceOff=1.0 / card.g_min, readVoltage=card.read_voltage)


@dataclass(frozen=True)
class NeuroSim:
    """A NeuroSim to run: a binary, and the source it was built from (None: a given binary)."""

    binary: Path
    source: Path | None
    version: str  # "v13" (V1.3/V1.4 inference argv) or "v21" (V2.1 training argv)
    settings_applied: bool


# --- locate ------------------------------------------------------------------------------------

def _source_dir(path: Path) -> Path | None:
    """The NeuroSIM source folder at or under ``path`` (a checkout root works too)."""
    for candidate in (path, path / "NeuroSIM", path / "Inference_pytorch" / "NeuroSIM",
                      path / "Training_pytorch" / "NeuroSIM", path.joinpath(*BUNDLED)):
        if (candidate / "Param.cpp").is_file() and (candidate / "main.cpp").is_file():
            return candidate
    return None


def bundled_source() -> Path | None:
    spec = importlib.util.find_spec("hwcomponents_neurosim")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        found = _source_dir(Path(location))
        if found:
            return found
    return None


def locate(given: str | None) -> tuple[Path, str]:
    """(path, where it came from): a NeuroSim source directory or binary."""
    for origin, value in (("--neurosim", given), (ENV, os.environ.get(ENV))):
        if value:
            path = Path(value).expanduser().resolve()  # NeuroSim runs in another directory
            if path.is_file():
                if not os.access(path, os.X_OK):
                    raise CimtoolError(f"{origin} {path}: not an executable NeuroSim binary")
                return path, origin
            source = _source_dir(path) if path.is_dir() else None
            if source is None:
                raise CimtoolError(f"{origin} {path}: no NeuroSim source (Param.cpp and main.cpp) or binary "
                                   "there")
            return source, origin
    source = bundled_source()
    if source is None:
        raise CimtoolError(f"no NeuroSim found: {HOW_TO_GET}")
    return source, "hwcomponents-neurosim"


def source_version(source: Path) -> str:
    """v21 for the training version (its main reads the epoch first), else v13."""
    main = (source / "main.cpp").read_text(errors="replace")
    return "v21" if "NeuroSim_Breakdown_Epock" in main or "Training_pytorch" in str(source) else "v13"


# --- Param.cpp ---------------------------------------------------------------------------------

def patch_param(text: str, settings: NeuroSimSettings) -> str:
    """Replace the first assignment of every setting (the constructor's default) in Param.cpp."""
    for name, value in asdict(settings).items():
        pattern = re.compile(rf"^(\s*){name}\s*=\s*[^;]*;", re.MULTILINE)
        if not pattern.search(text):
            raise CimtoolError(f"Param.cpp has no '{name} = …;' assignment: "
                               "not a DNN_NeuroSim V1.3/V1.4/V2.1 "
                               "source?")
        literal = repr(value) if isinstance(value, float) else str(value)
        text = pattern.sub(lambda m, lit=literal, n=name: f"{m.group(1)}{n} = {lit};", text, count=1)
    return text


def _source_hash(source: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(source.iterdir()):
        if path.is_file() and (path.suffix in (".cpp", ".h") or path.name.lower() == "makefile"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def cache_root(given: str | None) -> Path:
    if given:
        root = Path(given).expanduser()
    elif os.environ.get(CACHE_ENV):
        root = Path(os.environ[CACHE_ENV]).expanduser() / "neurosim"
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cimtool" / "neurosim"
    return root.resolve()  # the binary is run from another directory


def build(source: Path, settings: NeuroSimSettings, cache: Path, log=print) -> Path:
    """The built ``main`` for ``source`` with ``settings`` (built once, then reused)."""
    key = hashlib.sha256((_source_hash(source) + json.dumps(asdict(settings), sort_keys=True)).encode())
    target = cache / key.hexdigest()[:20]
    binary = target / "main"
    if binary.is_file():
        return binary
    for tool in ("make", "g++"):
        if shutil.which(tool) is None:
            raise CimtoolError(f"building NeuroSim needs '{tool}' on PATH "
                               "(Debian: apt install build-essential)")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    except OSError as exc:
        raise CimtoolError(f"{cache}: cannot create the NeuroSim build cache ({exc.strerror})") from None
    try:
        for path in source.iterdir():
            if path.is_file() and not path.name.endswith(".o") and path.name != "main":
                shutil.copy2(path, work / path.name)
        param = work / "Param.cpp"
        param.write_text(patch_param(param.read_text(errors="replace"), settings))
        (work / "cimtool-settings.json").write_text(json.dumps(asdict(settings), indent=1, sort_keys=True))
        log(f"building NeuroSim from {source} (once per source and settings) …")
        try:
            proc = subprocess.run(["make", f"-j{os.cpu_count() or 2}"], cwd=work, capture_output=True,
                                  text=True, timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise CimtoolError(f"building NeuroSim took over {BUILD_TIMEOUT_S} s; gave up") from None
        if proc.returncode != 0 or not (work / "main").is_file():
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
            raise CimtoolError(f"building NeuroSim in {work} failed (make exit {proc.returncode}):\n{tail}")
        for obj in work.glob("*.o"):
            obj.unlink()
        try:
            os.replace(work, target)  # atomic: a concurrent build of the same key keeps its own copy
        except OSError:
            if not binary.is_file():
                raise
        return binary
    finally:
        shutil.rmtree(work, ignore_errors=True)
