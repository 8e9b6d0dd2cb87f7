import gzip

import numpy as np
import pytest

from cimtool.data import load_dataset, make_splits
from cimtool.data.idx import IMAGES_MAGIC, read_idx
from cimtool.errors import CimtoolError
from tests.conftest import write_idx


def test_mnist5k_is_the_real_embedded_subset():
    raw = load_dataset("mnist5k")
    assert raw.x.shape == (5000, 1, 28, 28) and raw.x.dtype == np.uint8
    assert np.bincount(raw.y).tolist() == [500] * 10
    assert raw.x.max() == 255 and raw.test is None
    assert 0.1 < raw.x.mean() / 255 < 0.2  # MNIST's ink coverage


def test_digits():
    raw = load_dataset("digits")
    assert raw.x.shape == (1797, 1, 8, 8) and raw.num_classes == 10


def test_split_is_stratified_disjoint_and_seeded():
    raw = load_dataset("mnist5k")
    s = make_splits(raw.x, raw.y, seed=0, val_frac=0.1, test_frac=0.2)
    assert (len(s.train), len(s.val), len(s.test)) == (3500, 500, 1000)
    assert np.bincount(s.test.y).tolist() == [100] * 10
    assert np.bincount(s.val.y).tolist() == [50] * 10
    # the split is shuffled, not sorted by label
    assert (np.diff(s.train.y) != 0).mean() > 0.5
    again = make_splits(raw.x, raw.y, seed=0, val_frac=0.1, test_frac=0.2)
    other = make_splits(raw.x, raw.y, seed=1, val_frac=0.1, test_frac=0.2)
    assert again.indices_sha256 == s.indices_sha256 != other.indices_sha256
    rows = {r.tobytes() for r in s.test.x.reshape(len(s.test), -1)}
    assert not any(r.tobytes() in rows for r in s.train.x.reshape(len(s.train), -1)[:500])


def test_official_test_set_is_kept(mnist_idx_dir):
    raw = load_dataset("mnist", mnist_idx_dir)
    assert raw.x.shape == (4000, 1, 28, 28) and raw.test[0].shape == (1000, 1, 28, 28)
    s = make_splits(raw.x, raw.y, 0, 0.1, 0.2, raw.test)
    assert len(s.test) == 1000 and len(s.train) + len(s.val) == 4000


def test_idx_plain_and_gzip_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        write_idx(tmp_path / name, arr)
        np.testing.assert_array_equal(read_idx(tmp_path / name, IMAGES_MAGIC), arr)


def test_idx_wrong_magic_and_truncation(tmp_path):
    arr = np.zeros((3, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "bad", arr, magic=0x0803 + 0x100)
    with pytest.raises(CimtoolError, match="wrong IDX magic number"):
        read_idx(tmp_path / "bad", IMAGES_MAGIC)
    write_idx(tmp_path / "ok", arr)
    data = (tmp_path / "ok").read_bytes()
    (tmp_path / "cut").write_bytes(data[:-10])
    with pytest.raises(CimtoolError, match="truncated"):
        read_idx(tmp_path / "cut", IMAGES_MAGIC)
    with gzip.open(tmp_path / "cut.gz", "wb") as fh:
        fh.write(data[:100])
    with pytest.raises(CimtoolError, match="truncated"):
        read_idx(tmp_path / "cut.gz", IMAGES_MAGIC)
    (tmp_path / "notgz.gz").write_bytes(b"plain bytes")
    with pytest.raises(CimtoolError, match="cannot read IDX"):
        read_idx(tmp_path / "notgz.gz", IMAGES_MAGIC)


def test_missing_data_dir_says_what_is_expected(tmp_path):
    with pytest.raises(CimtoolError, match="needs --data-dir"):
        load_dataset("mnist")
    with pytest.raises(CimtoolError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", tmp_path)
    with pytest.raises(CimtoolError, match="data_batch_1.bin"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(CimtoolError, match="no such directory"):
        load_dataset("cifar10", tmp_path / "nope")


def _cifar_records(n, rng):
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return np.concatenate([labels[:, None], pixels], axis=1), labels, pixels


def test_cifar10_binary_format(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    expected = []
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records, labels, pixels = _cifar_records(7, rng)
        records.tofile(folder / name)
        expected.append((labels, pixels))
    raw = load_dataset("cifar10", tmp_path)
    assert raw.x.shape == (35, 3, 32, 32)
    np.testing.assert_array_equal(raw.y[:7], expected[0][0])
    # channel-major layout: the first 1024 bytes of a record are the red plane
    np.testing.assert_array_equal(raw.x[0, 0].ravel(), expected[0][1][0, :1024])
    np.testing.assert_array_equal(raw.test[1], expected[5][0])
    (folder / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(CimtoolError, match="whole number"):
        load_dataset("cifar10", tmp_path)


def test_cifar10_pickle_needs_opt_in(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(b"not even a pickle")
    with pytest.raises(CimtoolError, match="--allow-pickle"):
        load_dataset("cifar10", tmp_path)
