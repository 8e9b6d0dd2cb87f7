"""docs/figures/optical_accuracy.png: test accuracy vs photons × responsivity on synthetic colour images.

Ten classes, each a colour (its R, G, B drawn once) at a random brightness with a little texture,
written as CIFAR-10 binary files; `cimtool train-ann --model mnist_cnn --front-end optical` at each
photon budget, once with a flat response (1, 1, 1) and once with an organic one (0.2, 1, 0.4); the
figure is the report's (`cimtool report`'s accuracy-vs-photons). About a minute on 2 CPU cores:

    python docs/figures/optical_accuracy.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from cimtool import artifacts
from cimtool.report import content

PHOTONS = (0.03, 0.1, 0.3, 1, 10)
RESPONSIVITIES = {"flat": (1.0, 1.0, 1.0), "organic": (0.2, 1.0, 0.4)}
PRESET = Path(content.__file__).parents[1] / "devices" / "presets" / "organic_ofet.toml"
OUT = Path(__file__).with_suffix(".png")


def write_colour_images(folder: Path, per_batch: int = 120, seed: int = 0) -> None:
    """CIFAR-10 binary batches (label byte, then the R, G and B planes) of ten colour classes."""
    rng = np.random.default_rng(seed)
    colours = rng.uniform(0.15, 0.85, (10, 3))
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, per_batch)
        light = colours[labels][:, :, None] * rng.uniform(0.8, 1.0, (per_batch, 1, 1))
        pixels = np.clip(light + rng.normal(0, 0.05, (per_batch, 3, 1024)), 0, 1)
        records = np.concatenate([labels[:, None], (pixels * 255).round().reshape(per_batch, -1)], axis=1)
        records.astype(np.uint8).tofile(folder / name)


def card(folder: Path, name: str, responsivity: tuple[float, float, float]) -> Path:
    text = PRESET.read_text().replace('name = "organic_ofet"', f'name = "{name}"')
    text = text.replace("responsivity = [0.55, 1.0, 0.40]", f"responsivity = {list(responsivity)}")
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_colour_images(tmp / "data" / "cifar-10-batches-bin")
        arts = []
        for name, resp in RESPONSIVITIES.items():
            device = card(tmp, name, resp)
            for photons in PHOTONS:
                out = tmp / "runs" / f"{name}-{photons:g}"
                done = subprocess.run([sys.executable, "-m", "cimtool", "train-ann", "--dataset", "cifar10",
                                       "--data-dir", str(tmp / "data"), "--model", "mnist_cnn",
                                       "--front-end", "optical", "--device", str(device),
                                       "--max-photons", f"{photons:g}", "--epochs", "8", "--out", str(out),
                                       "--json", "--quiet"], capture_output=True, text=True, check=True)
                s = json.loads(done.stdout)["summary"]
                print(f"{name} {resp} {photons:g} photons: {s['test_accuracy']:.3f} ± "
                      f"{s['test_accuracy_std']:.3f}")
                arts.append(artifacts.load(out))
        section = content.accuracy(content.accuracy_table(arts), arts)
        figure = next(b for b in section.blocks if isinstance(b, content.Figure))
        OUT.write_bytes(figure.png)
        print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
