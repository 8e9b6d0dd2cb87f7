"""cimtool import-model: a network trained with plain PyTorch, outside cimtool, as a model artifact."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cimtool import artifacts

# What a user writes: a network, trained with plain torch on digits' train split (cimtool's seeded
# split, so both score the same test samples), saved as a state_dict and as safetensors.
USER_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from torch import nn
    from safetensors.torch import save_file
    from cimtool.data import load_dataset, make_splits

    def net(num_classes, input_shape, width=8):
        c, h, w = input_shape
        return nn.Sequential(nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(width * h * w, num_classes))

    if __name__ == "__main__":
        raw = load_dataset("digits")
        splits = make_splits(raw.x, raw.y, 0, 0.1, 0.2, raw.test)
        x, y = torch.from_numpy(splits.train.x).float() / 255, torch.from_numpy(splits.train.y)
        torch.manual_seed(0)
        model = net(10, (1, 8, 8))
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        for _ in range(30):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        model.eval()
        torch.save(model.state_dict(), sys.argv[1] + ".pth")
        save_file(model.state_dict(), sys.argv[1] + ".safetensors")
        torch.save(model, sys.argv[1] + "-module.pt")  # the whole module, pickled: refused
        with torch.no_grad():
            xt = torch.from_numpy(splits.test.x).float() / 255
            correct = int((model(xt).argmax(1) == torch.from_numpy(splits.test.y)).sum())
        print(correct, len(splits.test))
""")


@pytest.fixture(scope="module")
def user_model(tmp_path_factory) -> tuple[Path, Path, int, int]:
    """(the user's script, the stem of its weight files, its own correct test count, test size)."""
    folder = tmp_path_factory.mktemp("user")
    script = folder / "mynet.py"
    script.write_text(USER_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(folder / "w")], capture_output=True, text=True,
                          check=True, timeout=300)
    correct, n = map(int, done.stdout.split())
    return script, folder / "w", correct, n


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_import_matches_the_scripts_own_accuracy(cli, user_model, tmp_path, suffix):
    script, stem, correct, n = user_model
    out = tmp_path / "m"
    r = cli("import-model", "--model", f"{script}:net", "--weights", f"{stem}{suffix}", "--dataset", "digits",
            "--out", out, "--quiet")
    assert r.code == 0, r.err
    art = artifacts.load(out, "model")
    assert art.summary["n_test"] == n
    assert round(art.summary["test_accuracy"] * n) == correct  # to the sample
    assert art.params["source_sha256"] == artifacts.sha256_file(script)
    assert art.params["weights_sha256"] == artifacts.sha256_file(Path(f"{stem}{suffix}"))
    assert art.summary["crossbar_layers"] == ["0", "3"]
    # same inputs, same payload bytes
    again = tmp_path / "again"
    assert cli("import-model", "--model", f"{script}:net", "--weights", f"{stem}{suffix}", "--dataset",
               "digits", "--out", again, "--quiet").code == 0
    for name in ("weights.safetensors", "arch.json", "metrics.parquet", "timing.parquet"):
        assert (out / name).read_bytes() == (again / name).read_bytes(), name


def test_later_stages_take_the_imported_model(cli, user_model, tmp_path):
    script, stem, _, _ = user_model
    model = tmp_path / "m"
    assert cli("import-model", "--model", f"{script}:net", "--weights", f"{stem}.pth", "--dataset", "digits",
               "--model-arg", "width=8", "--out", model, "--quiet").code == 0
    assert artifacts.load(model).params["model_args"] == {"width": 8}
    r = cli("inspect", model)
    assert r.code == 0, r.err
    r = cli("map-weights", "--model", model, "--evaluate", "--trials", "1", "--out", tmp_path / "c",
            "--quiet")
    assert r.code == 0, r.err
    cmap = artifacts.load(tmp_path / "c", "cmap")
    assert cmap.summary["layers"] == ["0", "3"]
    assert cmap.summary["accuracy_float"] == artifacts.load(model).summary["test_accuracy"]


def test_bad_inputs_are_one_line_and_write_nothing(cli, user_model, tmp_path):
    script, stem, _, _ = user_model
    out = tmp_path / "m"
    cases = {
        f"{stem}-module.pt": ("--weights", "not a state_dict"),
    }
    for weights, words in cases.items():
        r = cli("import-model", "--model", f"{script}:net", "--weights", weights, "--dataset", "digits",
                "--out", out)
        assert r.code == 2 and all(w in r.err for w in words) and len(r.err.splitlines()) == 1, r.err
    r = cli("import-model", "--model", f"{script}:nope", "--weights", f"{stem}.pth", "--dataset", "digits",
            "--out", out)
    assert r.code == 2 and "no function 'nope'" in r.err and len(r.err.splitlines()) == 1, r.err
    r = cli("import-model", "--model", f"{script}:net", "--weights", f"{stem}.pth", "--dataset", "digits",
            "--model-arg", "width=4", "--out", out)
    assert r.code == 2 and "'0.weight' has shape [8, 1, 3, 3]" in r.err, r.err
    r = cli("train-ann", "--model", "user", "--dataset", "digits", "--out", out)
    assert r.code == 2 and "unknown --model 'user'" in r.err, r.err
    assert not out.exists()


def test_a_changed_source_is_refused_by_later_stages(cli, user_model, tmp_path):
    script, stem, _, _ = user_model
    copy = tmp_path / "net_copy.py"
    copy.write_text(script.read_text())
    model = tmp_path / "m"
    assert cli("import-model", "--model", f"{copy}:net", "--weights", f"{stem}.pth", "--dataset", "digits",
               "--out", model, "--quiet").code == 0
    copy.write_text(script.read_text() + "\n# edited\n")
    r = cli("map-weights", "--model", model, "--out", tmp_path / "c")
    assert r.code == 2 and f"model source {copy} has changed" in r.err and len(r.err.splitlines()) == 1, r.err
    copy.unlink()
    r = cli("inspect", model)
    assert r.code == 2 and f"model source {copy} is gone" in r.err, r.err
    assert not (tmp_path / "c").exists()
    assert json.loads((model / "arch.json").read_text())["source"] == f"{copy.resolve()}:net"
