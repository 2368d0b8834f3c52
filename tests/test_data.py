import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from rsbench.data import DIGITS_TEST_SIZE, RGBDIGITS_CONTRAST, TEST_HALVES, load_dataset, training_split
from rsbench.errors import RsbenchError

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def test_digits_split_is_fixed_stratified_and_in_range() -> None:
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1797 - DIGITS_TEST_SIZE, DIGITS_TEST_SIZE)
    x, y = test.tensors
    assert x.shape == (DIGITS_TEST_SIZE, 1, 8, 8) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    full = torch.bincount(torch.cat([train.tensors[1], y]))
    expected = full.double() * DIGITS_TEST_SIZE / 1797  # stratified: each class in proportion
    assert (torch.bincount(y) - expected).abs().max() <= 1
    assert torch.equal(load_dataset("digits", "test").tensors[0], x)
    train_rows = {tuple(row) for row in train.tensors[0].flatten(1).tolist()}
    assert sum(tuple(row) in train_rows for row in x.flatten(1).tolist()) < 5  # disjoint up to duplicate images


def test_rgbdigits_are_the_digits_in_two_colours_per_image() -> None:
    grey, labels = load_dataset("digits", "test").tensors
    rgb, rgb_labels = load_dataset("rgbdigits", "test").tensors
    assert rgb.shape == (DIGITS_TEST_SIZE, 3, 8, 8) and rgb.dtype == torch.float32
    assert torch.equal(rgb_labels, labels) and torch.equal(load_dataset("rgbdigits", "train").tensors[1], load_dataset("digits", "train").tensors[1])
    assert torch.equal(load_dataset("rgbdigits", "test").tensors[0], rgb)  # deterministic
    assert 0.0 <= float(rgb.min()) and float(rgb.max()) <= 1.0
    ink = grey[:, 0].flatten(1)  # (N, 64) in [0, 1]
    pixels = rgb.flatten(2)  # (N, 3, 64)
    background = pixels.gather(2, ink.argmin(1)[:, None, None].expand(-1, 3, 1))  # every digit has blank pixels
    full = ink.max(1).values
    colour = background + (pixels.gather(2, ink.argmax(1)[:, None, None].expand(-1, 3, 1)) - background) / full[:, None, None]
    # each pixel blends the two colours by its grey level, and the colours are far apart
    assert torch.allclose(pixels, background + ink[:, None] * (colour - background), atol=1e-5)
    assert float((colour - background).norm(dim=1).min()) >= RGBDIGITS_CONTRAST - 1e-5
    assert len({tuple(c) for c in background[:, :, 0].tolist()}) == DIGITS_TEST_SIZE  # a colour per image


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("layout,compress", [(".", False), ("MNIST/raw", True)])
def test_mnist_reads_idx_files_from_a_folder(tmp_path: Path, layout: str, compress: bool) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28))
    labels = np.array([3, 1, 4, 1, 5])
    folder = tmp_path / layout
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", images, compress)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", labels, compress)
    x, y = load_dataset("mnist", "test", tmp_path).tensors
    assert x.shape == (5, 1, 28, 28)
    assert torch.allclose(x[:, 0], torch.from_numpy(images / 255.0).float())
    assert y.tolist() == labels.tolist()


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="shared MNIST test set not present")
def test_real_mnist_test_set() -> None:
    x, y = load_dataset("mnist", "test", SHARED_MNIST).tensors
    assert x.shape == (10_000, 1, 28, 28) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert torch.bincount(y).tolist()[:2] == [980, 1135]  # the standard class counts of the MNIST test set


@pytest.mark.parametrize("name,message", [("mnist", "put t10k-images"), ("cifar10", "extract cifar-10"), ("imagenet", "one folder per wnid")])
def test_missing_files_say_where_to_put_them(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(RsbenchError, match=message):
        load_dataset(name, "test", tmp_path / "empty")


def test_unknown_dataset_and_split() -> None:
    with pytest.raises(RsbenchError, match="unknown dataset"):
        load_dataset("svhn")
    with pytest.raises(RsbenchError, match="expected split"):
        load_dataset("digits", "validation")


def write_indexed_mnist(folder: Path, count: int = 10_000, *, train: bool = False) -> None:
    """An MNIST-shaped test set (and optionally a training set) whose image i is filled with i % 251 and labelled
    i % 10, so every split's images name their own positions."""
    folder.mkdir(parents=True, exist_ok=True)
    images = np.broadcast_to((np.arange(count) % 251)[:, None, None], (count, 28, 28))
    for prefix in ("t10k", "train") if train else ("t10k",):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, False)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(count) % 10, False)


def test_mnist_test_halves_select_exactly_the_documented_images(tmp_path: Path) -> None:
    write_indexed_mnist(tmp_path)
    for split, (start, stop) in TEST_HALVES.items():
        x, y = load_dataset("mnist", split, tmp_path).tensors
        positions = torch.arange(start, stop)
        assert x.shape == (stop - start, 1, 28, 28)
        assert torch.equal(y, positions % 10)
        assert torch.equal((x[:, 0, 0, 0] * 255).round().long(), positions % 251)
        assert torch.equal(x[:, :, 3, 5], x[:, :, 0, 0])  # whole images, not slices of them
    assert TEST_HALVES == {"test-train": (5000, 10_000), "test-eval": (0, 5000)}


def test_training_split_falls_back_to_test_train_only_without_mnist_training_files(tmp_path: Path) -> None:
    write_indexed_mnist(tmp_path / "test-only", 20)
    write_indexed_mnist(tmp_path / "full", 20, train=True)
    assert training_split("mnist", tmp_path / "test-only") == "test-train"
    assert training_split("mnist", tmp_path / "full") == "train"
    assert training_split("digits") == "train"


def test_test_halves_belong_to_mnist_only() -> None:
    with pytest.raises(RsbenchError, match="halves MNIST's test set"):
        load_dataset("digits", "test-eval")


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="shared MNIST test set not present")
def test_real_mnist_halves_partition_the_test_set() -> None:
    x, y = load_dataset("mnist", "test", SHARED_MNIST).tensors
    evaluation, training = (load_dataset("mnist", split, SHARED_MNIST).tensors for split in ("test-eval", "test-train"))
    assert torch.equal(torch.cat([evaluation[0], training[0]]), x) and torch.equal(torch.cat([evaluation[1], training[1]]), y)
