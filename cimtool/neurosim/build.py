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
from dataclasses import asdict, dataclass, fields
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
# V2.1's Param.cpp has a table of its own (its switch's comments: 22 nm → 32, 32 nm → 40, ...)
WIRE_WIDTH_V21 = {130: 200, 90: 200, 65: 100, 45: 50, 32: 40, 22: 32, 14: 22, 10: 22, 7: 14}
BUILD_TIMEOUT_S = 900
# V2.1's training estimate: its release's batchSize and numIteration (figures per epoch of 50,000
# images). They scale its figures and do not change its run time (about a second for a small CNN).
TRAIN_BATCH = 200
ITERATIONS = 250
WG_ROWS = 128  # V2.1 Param.cpp numRowSubArrayWG: rows of its weight-gradient SRAM subarrays


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
    # V2.1 only (its Param.cpp's on-chip training estimate): what one "epoch" of its figures is
    trainingEstimation: bool = True
    batchSize: int = TRAIN_BATCH
    numIteration: int = ITERATIONS
    # V2.1 only: the weight update's write pulses (its Param.cpp defaults; a card's [update] sets them)
    maxNumLevelLTP: int = 60
    maxNumLevelLTD: int = 60
    writeVoltage: float = 4.0
    writePulseWidth: float = 50e-9

    @classmethod
    def from_card(cls, card: DeviceCard, cell: str, cell_bits: int | None, adc_bits: int | None,
                  subarray: int, technode: int, training: bool = True, train_batch: int | None = None,
                  iterations: int | None = None, wire_width: dict[int, int] = WIRE_WIDTH) -> NeuroSimSettings:
        check_choice("--cell", cell, MEMCELLS)
        train_batch = TRAIN_BATCH if train_batch is None else train_batch
        iterations = ITERATIONS if iterations is None else iterations
        check_range("--train-batch", train_batch, 1, 1 << 20)
        check_range("--iterations", iterations, 1, 1 << 20)
        bits = cell_bits if cell_bits is not None else card.cell_bits
        adc = adc_bits if adc_bits is not None else card.adc_bits
        check_range("--cell-bits", bits, 1, 8)
        check_range("--adc-bits", adc, 1, 12)
        if subarray < 8 or subarray & (subarray - 1):
            raise CimtoolError(f"--subarray must be a power of two >= 8, got {subarray}")
        if technode not in wire_width:
            raise CimtoolError(f"--technode {technode} is not one NeuroSim models "
                               f"({', '.join(map(str, wire_width))} nm)")
        wire = wire_width[technode]
        return cls(technode=technode, featuresize=wire * 1e-9, wireWidth=wire,
                   memcelltype=MEMCELLS[cell], cellBit=bits, levelOutput=2**adc,
                   numRowSubArray=subarray, numColSubArray=subarray, resistanceOn=1.0 / card.g_max,
                   resistanceOff=1.0 / card.g_min, readVoltage=card.read_voltage, trainingEstimation=training,
                   batchSize=train_batch, numIteration=iterations, **write_pulses(card))


def write_pulses(card: DeviceCard) -> dict[str, float]:
    """V2.1's write settings a card gives (pulses from g_min to g_max and back, write voltage and
    pulse width of its [update] section); the release's defaults stand for what it leaves out."""
    given = {"maxNumLevelLTP": card.pulses_ltp, "maxNumLevelLTD": card.pulses_ltd,
             "writeVoltage": card.write_voltage, "writePulseWidth": card.write_pulse_width}
    return {k: v for k, v in given.items() if v is not None}


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


@dataclass(frozen=True)
class Version:
    """What differs between DNN+NeuroSim releases, as cimtool drives them."""

    key: str  # "v13", "v14", "v21": what manifests record
    name: str
    marker: str  # text in main.cpp that only this release has (checked in the order of VERSIONS)
    trace: str  # the trace format it reads (neurosim-trace --format)
    patched: tuple[str, ...]  # the Param.cpp settings it takes from cimtool; it derives the others
    subarray_on_argv: bool  # V1.4+: subArray and parallelRead follow WBITS ABITS on the command line
    wire_width: dict[int, int]  # technode → the wireWidth its Param.cpp's AR/Rho table has


TRAINING = ("trainingEstimation", "batchSize", "numIteration")  # V2.1's Param.cpp only
WRITE = ("maxNumLevelLTP", "maxNumLevelLTD", "writeVoltage", "writePulseWidth")  # V2.1's weight update
# the chip settings every release has (V2.1 adds TRAINING and WRITE)
CHIP_SETTINGS = tuple(f.name for f in fields(NeuroSimSettings) if f.name not in TRAINING + WRITE)
# V1.4 derives featuresize and wireWidth from technode, and readVoltage from technode too (Param.cpp)
_V14 = tuple(n for n in CHIP_SETTINGS if n not in ("featuresize", "wireWidth", "readVoltage"))
VERSIONS = (
    Version("v21", "V2.1", "NeuroSim_Breakdown_Epock", "v21", CHIP_SETTINGS + TRAINING + WRITE, False,
            WIRE_WIDTH_V21),
    Version("v14", "V1.4/V1.5", "numRowParallel = atoi(argv[5])", "v13", _V14, True, WIRE_WIDTH),
    Version("v13", "V1.3", "argv[2*i+4]", "v13", CHIP_SETTINGS, False, WIRE_WIDTH),
)
BY_KEY = {v.key: v for v in VERSIONS}


def source_version(source: Path) -> Version:
    """The release a NeuroSim source is, from its main.cpp (each release reads its arguments its own
    way); a one-line error for one cimtool does not know."""
    main = (source / "main.cpp").read_text(errors="replace")
    for version in VERSIONS:
        if version.marker in main:
            return version
    raise CimtoolError(f"{source}: main.cpp is not a DNN+NeuroSim release cimtool knows "
                       f"({', '.join(v.name for v in VERSIONS)})")


# --- Param.cpp ---------------------------------------------------------------------------------

ENV_PREFIX = "CIMTOOL_NS_"  # NeuroSim reads setting ``name`` from CIMTOOL_NS_<name> at start-up
_READER = (
    "#include <cstdlib>  // cimtool: Param.cpp settings read from the environment at start-up\n"
    "static double cimtool_setting(const char *name, double fallback) {\n"
    "    const char *value = std::getenv(name);\n"
    "    return value ? std::atof(value) : fallback;\n"
    "}\n"
)


def patch_param(text: str, names: tuple[str, ...] = CHIP_SETTINGS) -> str:
    """Param.cpp whose first assignment of every setting in ``names`` (the constructor's default)
    reads ``CIMTOOL_NS_<name>`` at start-up, the release's own value where it is unset: one build
    serves every chip cimtool describes (:func:`setting_env`)."""
    for name in names:
        pattern = re.compile(rf"^(\s*){name}\s*=\s*([^;]*);", re.MULTILINE)
        if not pattern.search(text):
            raise CimtoolError(f"Param.cpp has no '{name} = …;' assignment: "
                               f"not a DNN_NeuroSim {', '.join(v.name for v in VERSIONS)} source?")
        text = pattern.sub(lambda m, n=name: f'{m.group(1)}{n} = cimtool_setting("{ENV_PREFIX}{n}", '
                                             f'{m.group(2).strip()});', text, count=1)
    return _READER + text


_ARITHMETIC = re.compile(r"^[0-9eE.+\-*/() ]+$")


def release_values(source: Path, names: tuple[str, ...]) -> dict[str, float | None]:
    """The numbers a release's Param.cpp assigns first to ``names`` (its defaults: ``levelOutput =
    32;``, ``resistanceOff = 100e3*17;``); None where the assignment is not plain arithmetic."""
    text = (source / "Param.cpp").read_text(errors="replace")
    found: dict[str, float | None] = {}
    for name in names:
        match = re.search(rf"^\s*{name}\s*=\s*([^;]*);", text, re.MULTILINE)
        expr = match.group(1).strip() if match else ""
        # only digits, exponents and + − × ÷: safe to evaluate
        found[name] = float(eval(expr, {"__builtins__": {}})) if _ARITHMETIC.match(expr) else None  # noqa: S307
    return found


def setting_env(settings: NeuroSimSettings, names: tuple[str, ...] = CHIP_SETTINGS) -> dict[str, str]:
    """The environment that sets ``names`` of ``settings`` in a binary built by :func:`build`
    (exact: a double's repr round-trips through atof)."""
    def text(value) -> str:
        return str(int(value)) if isinstance(value, bool) else repr(value)
    return {f"{ENV_PREFIX}{k}": text(v) for k, v in asdict(settings).items() if k in names}


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


def first_error(output: str) -> str:
    """The compiler's first error line (``file:line:col: error: …``), else make's last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return next((line for line in lines if ": error:" in line or ": fatal error:" in line),
                lines[-1] if lines else "no output")


def build(source: Path, cache: Path, log=print, names: tuple[str, ...] = CHIP_SETTINGS) -> Path:
    """The built ``main`` for ``source`` whose settings ``names`` come from the environment (built
    once per source, then reused for every chip: run it with :func:`setting_env`)."""
    key = hashlib.sha256((_source_hash(source) + json.dumps([_READER, sorted(names)])).encode())
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
        param.write_text(patch_param(param.read_text(errors="replace"), names))
        (work / "cimtool-settings.json").write_text(json.dumps({"from_environment": sorted(names)}, indent=1))
        log(f"building NeuroSim from {source} (once per source) …")
        try:
            proc = subprocess.run(["make", f"-j{os.cpu_count() or 2}"], cwd=work, capture_output=True,
                                  text=True, timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise CimtoolError(f"building NeuroSim took over {BUILD_TIMEOUT_S} s; gave up") from None
        if proc.returncode != 0 or not (work / "main").is_file():
            log_path = cache / f"build-failed-{_source_hash(source)[:12]}.log"
            log_path.write_text(proc.stdout + proc.stderr)
            raise CimtoolError(f"building NeuroSim from {source} failed (make exit {proc.returncode}): "
                               f"{first_error(proc.stdout + proc.stderr)}; the whole log: {log_path}")
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


def check_v21(network: list[list[float]], training: bool, train_batch: int, cell_bits: int) -> None:
    """Refuse, in one line, what V2.1 (Chip.cpp) cannot compute for this NetWork.csv, before it is
    built and run.

    - A network without a conv layer: V2.1 sizes its activation- and weight-gradient hardware from
      conv output positions. With the training estimate off, it still divides their latencies
      0/0 (NaN latency, TOPS/W and FPS); on, see the next point.
    - Training on: its weight-gradient unit gets ⌊P/128⌋ SRAM subarrays, P = (H−kH+1)(W−kW+1) of
      the first layer with the largest IFM (H·W·Cin); with none, log2(0) sizes an adder tree of
      ~2^31 stages and NeuroSim spins for hours (a network of only fully-connected layers has P = 1).
    - Training on: its weight-gradient buffer holds ⌈log2 batchSize⌉·⌈WBITS/cellBit⌉ columns per
      synapse (it reads the unit's output precision before setting it); under WBITS bits none fits,
      and it divides by zero (NaN, negative areas): ⌈log2 batchSize⌉ must be at least cellBit."""
    if all(r[0] * r[1] * r[3] * r[4] == 1 for r in network):
        raise CimtoolError("NeuroSim V2.1 cannot estimate a network without a conv layer (its gradient "
                           "hardware is sized from conv output positions: training off gives NaN latency "
                           "and TOPS/W, on never finishes); use a V1.3 or V1.4/V1.5 checkout (--format v13 "
                           "trace) for this network")
    if not training:
        return
    sizes = [r[0] * r[1] * r[2] for r in network]
    first = sizes.index(max(sizes))
    h, w, _, kh, kw = network[first][:5]
    positions = int((h - kh + 1) * (w - kw + 1))
    if positions < WG_ROWS:
        raise CimtoolError(f"NeuroSim V2.1's training estimate needs >= {WG_ROWS} output positions (its "
                           f"weight-gradient SRAM rows) in layer {first + 1}, the largest input; it has "
                           f"{positions}, and V2.1 would spin for hours (a conv front-end, or "
                           "--training-estimation off)")
    if math.ceil(math.log2(train_batch)) < cell_bits:
        raise CimtoolError(f"--train-batch {train_batch}: NeuroSim V2.1 needs ⌈log2 batch⌉ >= cellBit "
                           f"({cell_bits}), i.e. --train-batch >= {2**cell_bits}, or it divides by zero "
                           "in its weight-gradient buffer")


def check_v21_precision(settings: NeuroSimSettings, weight_bits: int, given: bool) -> None:
    """Refuse a chip on which V2.1 drops the trained weights: its LoadInWeightData (Chip.cpp) maps a
    weight linearly onto one cell, (w+1)/2·(G_max−G_min)+G_min, only when synapseBit (the trace's
    WBITS) equals cellBit and the cell is not SRAM; otherwise it splits the code into cells taking
    the quotient, not the remainder, and divides integers (cell/(2^cellBit−1)), so that nearly
    every cell sits at G_min whatever the weights (``given``: --cell-bits was given)."""
    if settings.memcelltype == MEMCELLS["sram"] or settings.cellBit == weight_bits:
        return
    what = f"--cell-bits {settings.cellBit}" if given else f"cellBit {settings.cellBit}"
    raise CimtoolError(f"{what} with the trace's {weight_bits}-bit weights: NeuroSim V2.1 maps trained "
                       "weights onto its cells only when cellBit = WBITS (Chip.cpp LoadInWeightData), "
                       f"otherwise every cell sits near G_min; give --cell-bits {weight_bits}, or write the "
                       f"trace with --weight-bits {settings.cellBit}")


# --- subarray size -------------------------------------------------------------------------------

SUBARRAY_SIZES = (128, 64, 32, 16, 8)  # what --subarray auto tries, largest first


def _widest_novel(network: list[list[float]], subarray: int, weight_bits: int, cell_bits: int) -> float:
    """Columns of the widest novel-mapped layer, 2^⌈log2(Cout·⌈WBITS/cellBit⌉)⌉ (0 if none is)."""
    cols_per_synapse = -(-weight_bits // cell_bits)
    kernels = [int(r[3] * r[4]) for r in network]
    counts = {k: kernels.count(k) for k in kernels if k != 1}
    pe = max(counts, key=lambda k: (counts[k], -kernels.index(k))) if counts else kernels[0]
    widest = 0.0
    for row, k in zip(network, kernels, strict=True):
        if k == pe and row[2] * k >= subarray:
            widest = max(widest, 2 ** math.ceil(math.log2(row[5] * cols_per_synapse)))
    return widest


# V2.1 DFF.cpp: a subarray's shift-add flip-flops sit in rows along its width; at 22 nm 16 columns of
# 1T1R cells (4F wide) are narrower than one ("Width of subArray is even smaller than a single DFF")
V21_MIN_COLS = 32


def v21_columns(network: list[list[float]], rows: int, weight_bits: int, cell_bits: int) -> int:
    """Columns of V2.1's subarrays of ``rows`` rows: as many, and at least V21_MIN_COLS. V2.1's
    floorplan sizes its PEs from the rows alone (Chip.cpp ChipFloorPlan: a PE spans two subarray
    rows or more) and fills a PE with ⌈PE/rows⌉·⌈PE/cols⌉ subarrays (Tile.cpp), so wider arrays
    keep the floorplan; the widest novel-mapped layer (the PE) must still hold one array's columns."""
    cols = max(rows, V21_MIN_COLS)
    widest = _widest_novel(network, rows, weight_bits, cell_bits)
    if widest < cols:
        raise CimtoolError(f"NeuroSim V2.1 needs subarrays of >= {V21_MIN_COLS} columns (narrower ones are "
                           "narrower than its flip-flops) inside a PE as wide as the widest novel-mapped "
                           f"layer, 2^⌈log2(Cout·⌈{weight_bits}/{cell_bits}⌉)⌉ = {widest:g} columns here: a "
                           f"network with a conv of >= {cols} outputs")
    return cols


def subarray_fits(network: list[list[float]], subarray: int, weight_bits: int, cell_bits: int) -> bool:
    """Whether NeuroSim's chip floorplan accepts ``subarray`` for this NetWork.csv (rows: IFM H, W,
    Cin, kH, kW, Cout, pool, stride), with novel mapping on, as every release's Param.cpp has it.

    DNN_NeuroSim V1.3 Chip.cpp (ChipDesignInitialize, ChipDesignTile): the novel-mapped layers are
    those whose k·k is the most common among conv layers (1 if there is none) and whose Cin·k·k
    rows fill a subarray; the widest of them, 2^⌈log2(Cout·⌈WBITS/cellBit⌉)⌉ columns, must be at
    least two subarrays wide ("SubArray Size is too large" otherwise)."""
    return _widest_novel(network, subarray, weight_bits, cell_bits) >= 2 * subarray


def auto_subarray(network: list[list[float]], weight_bits: int, cell_bits: int) -> int:
    """The largest of ``SUBARRAY_SIZES`` that :func:`subarray_fits`; a one-line error when none does."""
    for size in SUBARRAY_SIZES:
        if subarray_fits(network, size, weight_bits, cell_bits):
            return size
    raise CimtoolError(f"no --subarray of {', '.join(map(str, SUBARRAY_SIZES))} fits this trace: its widest "
                       f"novel-mapped layer is narrower than two 8-column subarrays at {weight_bits} weight "
                       f"bits and {cell_bits} bits per cell (more --weight-bits in neurosim-trace, or fewer "
                       "--cell-bits)")


def neurosim_geometry(network: list[list[float]], weight_bits: int, cell_bits: int, array_rows: int,
                      array_cols: int) -> tuple[int, str | None]:
    """(subarray, note) for cimtool arrays of ``array_rows`` rows × ``array_cols`` physical columns.

    One NeuroSim subarray is one cimtool array, cell for cell (docs/physics.md#neurosim-settings):
    ``array_rows`` when NeuroSim takes that geometry (note None); otherwise the nearest square
    geometry it takes (fewest doublings or halvings of rows and columns; ties: the larger) and a
    sentence saying why. A one-line error when no subarray fits the network at all."""
    square = array_rows == array_cols
    if square and array_rows >= 8 and not array_rows & (array_rows - 1):
        if subarray_fits(network, array_rows, weight_bits, cell_bits):
            return array_rows, None
        widest = _widest_novel(network, array_rows, weight_bits, cell_bits)
        why = (f"its widest novel-mapped layer, 2^⌈log2(Cout·⌈{weight_bits}/{cell_bits}⌉)⌉ = {widest:g} "
               f"columns, must span two {array_rows}-column subarrays" if widest else
               f"no layer with its processing elements' kernel has Cin·k·k >= {array_rows} rows")
    elif not square:
        why = "cimtool runs NeuroSim on square subarrays: its PEs and tiles are squares of subarray rows"
    else:
        why = "its subarrays are powers of two >= 8: its PEs and tiles double them"
    largest = max(SUBARRAY_SIZES[0], array_rows, array_cols)
    accepted = [2**k for k in range(3, math.ceil(math.log2(largest)) + 1)
                if subarray_fits(network, 2**k, weight_bits, cell_bits)]
    if not accepted:
        auto_subarray(network, weight_bits, cell_bits)  # raises its one-line error

    def distance(size: int) -> tuple[float, int]:
        return abs(math.log2(size / array_rows)) + abs(math.log2(size / array_cols)), -size

    nearest = min(accepted, key=distance)
    return nearest, (f"NeuroSim cannot take {array_rows}x{array_cols} arrays ({why}); the nearest geometry "
                     f"both accept is {nearest}x{nearest}")
