"""A model's spiking twin: what converts it (:class:`SnnSpec`) and the model opened with it.

- :class:`SnnSpec`: the neuron settings (:class:`SnnConfig`), one threshold per neuron layer and the
  input range; stored as ``snn.json`` in an ``snn`` artifact (``to_json`` / ``from_json``), with
  how calibrate-threshold chose the thresholds.
- :class:`SpikingModel`: a model or qmodel artifact loaded with its spec: an opened snn artifact
  (:func:`open_snn`), or a plain model with the default thresholds (:func:`default_spec`).
- :class:`Candidate`: a spiking model with the splits its model was trained on and a calibration
  sample (:func:`load_candidate`): the input of sweep and profile.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cimtool import artifacts
from cimtool.data.calibration import CALIBRATION_SAMPLES
from cimtool.errors import CimtoolError
from cimtool.nn.snn import SnnConfig

if TYPE_CHECKING:
    import torch

    from cimtool.data.tensors import TensorData
    from cimtool.nn.snn import SpikingNetwork
    from cimtool.ui import Reporter

KIND = "snn"
SNN_FILE = "snn.json"
# thresholds of a model without an snn artifact: calibrate-threshold's pick on the default model
DEFAULT_PERCENTILE, DEFAULT_RATIO = "99.9", 1.0


def neuron_names(arch: dict[str, Any], n_sites: int) -> list[str]:
    """Neuron layer k follows crossbar layer k in our models; fall back to neuron<k>."""
    names = [layer["name"] for layer in arch.get("crossbar_layers", [])]
    return names if len(names) == n_sites else [f"neuron{k}" for k in range(n_sites)]


@dataclass(frozen=True)
class SnnSpec:
    """What turns an ANN into its spiking network: neurons, thresholds θ, input range.

    ``percentile``, ``ratio``, ``percentile_values`` (P_p of each neuron layer) and ``source_model``
    record how calibrate-threshold chose the thresholds; None when they were not calibrated."""

    config: SnnConfig
    thetas: list[float]  # one per neuron layer, in network order
    input_range: float  # full scale of rate-coded inputs
    layer_names: list[str]  # one per neuron layer (neuron_names)
    percentile: str | None = None
    ratio: float | None = None
    percentile_values: list[float] | None = None
    source_model: str | None = None
    trained: dict[str, Any] | None = None  # the twin's training (--train-epochs): epochs, thresholds before
    weights: str | None = None  # the trained twin's weights, a file of the snn artifact

    def network(self, model: torch.nn.Module, device: torch.device | str = "cpu") -> SpikingNetwork:
        from cimtool.nn.snn import SpikingNetwork

        return SpikingNetwork(model, self.thetas, self.config, self.input_range, device)

    def to_dict(self) -> dict[str, Any]:
        """The ``snn.json`` content (calibration fields only where they are set)."""
        layers: list[dict[str, Any]] = [{"name": n, "theta": t}
                                        for n, t in zip(self.layer_names, self.thetas, strict=True)]
        if self.percentile_values is not None:
            for layer, value in zip(layers, self.percentile_values, strict=True):
                layer["percentile_value"] = value
        info: dict[str, Any] = {"config": asdict(self.config), "input_range": self.input_range,
                                "layers": layers}
        extra = {"percentile": self.percentile, "ratio": self.ratio, "source_model": self.source_model,
                 "trained": self.trained, "weights": self.weights}
        info.update({k: v for k, v in extra.items() if v is not None})
        return info

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, info: dict[str, Any]) -> SnnSpec:
        """Raises KeyError, TypeError or ValueError on a malformed description, CimtoolError on
        invalid neuron settings."""
        config = SnnConfig(**info["config"])
        config.validate()
        layers = info["layers"]
        thetas = [float(layer["theta"]) for layer in layers]
        names = [str(layer["name"]) for layer in layers]
        recorded = layers and all(layer.get("percentile_value") is not None for layer in layers)
        values = [float(layer["percentile_value"]) for layer in layers] if recorded else None

        def optional(key: str, kind: type):
            return None if info.get(key) is None else kind(info[key])

        return cls(config, thetas, float(info["input_range"]), names, optional("percentile", str),
                   optional("ratio", float), values, optional("source_model", str), optional("trained", dict),
                   optional("weights", str))

    @classmethod
    def from_json(cls, text: str, where: Path | str = SNN_FILE) -> SnnSpec:
        """Parse ``snn.json``; a one-line error naming ``where`` if it does not describe an SNN."""
        try:
            return cls.from_dict(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise CimtoolError(f"{where}: invalid SNN description ({exc})") from None


def default_spec(model: torch.nn.Module, arch: dict[str, Any], sample: TensorData) -> SnnSpec:
    """Default spiking settings with θ at DEFAULT_RATIO × P_DEFAULT_PERCENTILE of ``sample``."""
    from cimtool.nn.snn import activation_percentiles, input_range, thresholds

    cfg = SnnConfig()
    stats = activation_percentiles(model, sample, [DEFAULT_PERCENTILE], cfg.bounds)
    return SnnSpec(cfg, thresholds(stats, DEFAULT_PERCENTILE, DEFAULT_RATIO, cfg), input_range(model, sample),
                   neuron_names(arch, len(stats)))


@dataclass
class SpikingModel:
    """A model or qmodel artifact, loaded, with the spec that makes it spike."""

    artifact: artifacts.Artifact  # what was opened: the snn artifact, or the model/qmodel itself
    source: artifacts.Artifact  # the model or qmodel whose weights the network has
    model: torch.nn.Module
    arch: dict[str, Any]  # the model's architecture spec (arch.json)
    snn: SnnSpec

    @property
    def config(self) -> SnnConfig:
        return self.snn.config

    @property
    def thetas(self) -> list[float]:
        return self.snn.thetas

    @property
    def input_range(self) -> float:
        return self.snn.input_range

    @property
    def label(self) -> str:
        """The model's front-end method, or its model name."""
        return self.arch.get("method") or self.arch["model"]

    def network(self, model: torch.nn.Module | None = None,
                device: torch.device | str = "cpu") -> SpikingNetwork:
        """The spiking network of ``model`` (default: this one, e.g. another copy on arrays)."""
        return self.snn.network(self.model if model is None else model, device)


def open_snn(path: Path | str) -> SpikingModel:
    """Load an snn artifact and its source model (checked against the recorded manifest hash)."""
    from cimtool.models.io import open_model

    artifact = artifacts.load(path, KIND)
    source_ref = next((i for i in artifact.manifest.get("inputs", []) if i.get("role") == "model"), None)
    if source_ref is None:
        raise CimtoolError(f"{artifact.path}: the SNN does not record its source model")
    source, model, arch = open_model(source_ref["path"])
    if source.manifest_sha256() != source_ref.get("manifest_sha256"):
        raise CimtoolError(f"{artifact.path}: its source model {source.path} changed since calibration")
    spec = SnnSpec.from_json(artifact.file(SNN_FILE).read_text(), artifact.file(SNN_FILE))
    if spec.weights is not None:  # a trained twin: its weights, not the source model's
        from cimtool.models.io import load_weights

        load_weights(model, artifact.file(spec.weights))
    return SpikingModel(artifact, source, model, arch, spec)


@dataclass
class Candidate:
    """A spiking model with the splits its model was trained on: the input of sweep and profile."""

    spiking: SpikingModel
    data: dict[str, TensorData]
    calibration: TensorData  # the train sample that sets converter ranges (and default thresholds)
    calibration_record: dict[str, Any]


def load_candidate(path: Path, data_dir: str | None, reporter: Reporter,
                   calibration_samples: int = CALIBRATION_SAMPLES, seed: int = 0) -> Candidate:
    """A model, qmodel or snn artifact as a spiking network's inputs; a plain model gets default
    thresholds from a calibration sample of ``calibration_samples`` train items."""
    from cimtool.data.calibration import calibration_sample
    from cimtool.models.io import MODEL_KINDS, model_splits, open_model

    kind = artifacts.load(path).kind
    if kind == KIND:
        spiking = open_snn(path)
        data = model_splits(spiking.source, data_dir)
        sample, record = calibration_sample(data["train"], calibration_samples, seed)
        return Candidate(spiking, data, sample, record)
    if kind not in MODEL_KINDS:
        raise CimtoolError(f"{path}: expected a model, qmodel or snn artifact, found a '{kind}' artifact")
    artifact, model, arch = open_model(path)
    data = model_splits(artifact, data_dir)
    sample, record = calibration_sample(data["train"], calibration_samples, seed)
    spec = default_spec(model, arch, sample)
    reporter.log(f"{path}: default spiking settings, thresholds at {DEFAULT_RATIO:g} × P{DEFAULT_PERCENTILE} "
                 "(calibrate-threshold, then --model SNN, for others)")
    return Candidate(SpikingModel(artifact, artifact, model, arch, spec), data, sample, record)
