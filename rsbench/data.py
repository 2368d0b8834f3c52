"""Datasets as (image, label) pairs with pixels in [0, 1], channels first.

`digits` is bundled with scikit-learn, so rsbench runs with no network and no files;
`rgbdigits` is the same images in colour, for attacks that treat colour channels differently.
`mnist` and `cifar10` are read through torchvision (MNIST also from a folder of idx
files); `imagenet` and `tiny-imagenet` from a local folder of class sub-folders; `tensors` is
the (x, y) pair a running `rsbench.evaluate` was given (`rsbench.in_process`).
Nothing is downloaded unless `download=True` is asked for explicitly.

Where MNIST's training files are missing, its test set is split in two (`TEST_HALVES`):
`test-train` (test images 5000-9999) to train on, `test-eval` (test images 0-4999) to
evaluate on; the MNIST models rsbench ships were trained and are evaluated that way.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from rsbench.errors import RsbenchError
from rsbench.specs import DatasetSpec

DIGITS_TEST_SIZE = 500
"""Digits: 1,797 images; a stratified split with seed 0 keeps 1,297 for training and 500 for testing."""
DIGITS_SPLIT_SEED = 0
RGBDIGITS_SEED = 0
"""Seed of the per-image colours of `rgbdigits`: image i of scikit-learn's order gets the i-th pair drawn."""
RGBDIGITS_CONTRAST = 1.0
"""Least l2 distance between a digit's colour and its background's (in RGB [0, 1]^3), so every digit stays legible."""

TEST_HALVES = {"test-train": (5000, 10_000), "test-eval": (0, 5000)}
"""MNIST splits cut from its 10,000 test images, as [start, stop) of the test set's order: models train on
`test-train` when MNIST's training files are absent, and are evaluated on the other half, `test-eval`."""
SPLIT_NOTES = {
    "test-train": "MNIST test images 5000-9999; MNIST's training files were not used",
    "test-eval": "MNIST test images 0-4999; rsbench's MNIST models were trained on test images 5000-9999",
}
"""What a split cut from a test set holds, for model cards and track pages."""
TRAIN_FALLBACK = {"mnist": "test-train"}
"""Per dataset, the split training uses when the real training files are absent."""
SPLITS = ("train", "test", *TEST_HALVES)

INPUT_SHAPES = {"digits": (1, 8, 8), "rgbdigits": (3, 8, 8), "mnist": (1, 28, 28), "cifar10": (3, 32, 32),
                "imagenet": (3, 224, 224), "tiny-imagenet": (3, 64, 64)}
"""The shape (C, H, W) of every image of each dataset, known without its files."""
NUM_CLASSES = {"digits": 10, "rgbdigits": 10, "mnist": 10, "cifar10": 10, "imagenet": 1000, "tiny-imagenet": 200}


def data_home() -> Path:
    """rsbench's data folder: `$RSBENCH_DATA`, or `~/.cache/rsbench/data` when unset."""
    base = os.environ.get("RSBENCH_DATA")
    return Path(base) if base else Path.home() / ".cache" / "rsbench" / "data"


def default_root(name: str) -> Path:
    """Where a dataset's files are expected: `<data home>/<name>`."""
    return data_home() / name


def _root(name: str, root: str | Path | None) -> Path:
    return Path(root) if root else default_root(name)


def _image_layout(name: str, folder: Path) -> str:
    """Where an image-folder dataset's files go, for error messages."""
    classes = "one folder per wnid, e.g. n01440764/, sorted as torchvision's ImageFolder sorts them" \
        if name == "imagenet" else "one folder per class"
    return f"{folder}/<class>/<image> ({classes})"


def missing_data(dataset: DatasetSpec) -> str | None:
    """What is missing to load a dataset's evaluation split and how to provide it; None when its files are present."""
    return missing_split(dataset.name, dataset.split, dataset.root)


def missing_split(name: str, split: str, root: str | Path | None = None) -> str | None:
    """`missing_data` of one split of a dataset by name."""
    root = _root(name, root)
    if name == "mnist":
        prefix = "train" if split == "train" else "t10k"
        if _find_idx(root, f"{prefix}-images-idx3-ubyte") and _find_idx(root, f"{prefix}-labels-idx1-ubyte"):
            return None
        return f"MNIST {split} idx files in {root} (run `rsbench data pull mnist`)"
    if name == "cifar10":
        batch = "data_batch_5" if split == "train" else "test_batch"
        present = (root / "cifar-10-batches-py" / batch).is_file()
        return None if present else f"CIFAR-10 in {root} (run `rsbench data pull cifar10`)"
    if name in ("imagenet", "tiny-imagenet"):
        folder = root / ("train" if split == "train" else "val")
        present = folder.is_dir() and any(folder.iterdir())
        return None if present else f"{name} {split} images in {_image_layout(name, folder)}, placed by hand"
    return None  # digits ships with scikit-learn


def pull_dataset(name: str, root: str | Path | None = None) -> Path:
    """Download a dataset's train and test splits through torchvision (which checks their md5); returns the folder."""
    if name in ("imagenet", "tiny-imagenet"):
        folder = _root(name, root) / "val"
        raise RsbenchError(f"rsbench cannot download {name} (it needs a registration): put its images in "
                           f"{_image_layout(name, folder)}")
    if name not in ("mnist", "cifar10"):
        raise RsbenchError(f"{name!r} needs no download" if name == "digits" else f"unknown dataset {name!r}")
    for split in ("train", "test"):
        try:
            load_dataset(name, split, root, download=True)
        except (OSError, RuntimeError) as error:  # offline: urllib's URLError, or torchvision's mirrors all failing
            raise RsbenchError(f"cannot download {name} ({error}); copy its files to {_root(name, root)}") from None
    return _root(name, root)


def training_split(name: str, root: str | Path | None = None) -> str:
    """The split to train on: the real training split when its files are present, else the dataset's fallback
    (`test-train` for MNIST), else `train` (whose loader then says which files are missing)."""
    if name in TRAIN_FALLBACK and missing_split(name, "train", root):
        return TRAIN_FALLBACK[name]
    return "train"


def load_dataset(name: str, split: str = "test", root: str | Path | None = None, *, download: bool = False) -> Dataset:
    """A dataset split by name; each item is `(float tensor C x H x W in [0, 1], int label)`.

    `test-train` and `test-eval` are the halves of MNIST's test set named in `TEST_HALVES`.
    """
    if split not in SPLITS:
        raise RsbenchError(f"expected split 'train', 'test', 'test-train' or 'test-eval', got {split!r}")
    if split in TEST_HALVES:
        if name != "mnist":
            raise RsbenchError(f"split {split!r} halves MNIST's test set; {name!r} has only 'train' and 'test'")
        start, stop = TEST_HALVES[split]
        x, y = load_dataset(name, "test", root, download=download).tensors
        return TensorDataset(x[start:stop], y[start:stop])
    loaders = {
        "digits": lambda: _digits(split),
        "rgbdigits": lambda: _digits(split, rgb=True),
        "mnist": lambda: _mnist(split, _root("mnist", root), download),
        "cifar10": lambda: _cifar10(split, _root("cifar10", root), download),
        "imagenet": lambda: _image_folder("imagenet", _root("imagenet", root), split, 224),
        "tiny-imagenet": lambda: _image_folder("tiny-imagenet", _root("tiny-imagenet", root), split, 64),
        "tensors": _held_tensors,
    }
    if name not in loaders:
        raise RsbenchError(f"unknown dataset {name!r}; known: {', '.join(loaders)}")
    return loaders[name]()


def _held_tensors() -> Dataset:
    from rsbench import in_process

    return in_process.held_tensors()


def _digits(split: str, *, rgb: bool = False) -> TensorDataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0  # 4-bit grey levels 0..16 -> [0, 1]
    images = colourize(images, RGBDIGITS_SEED) if rgb else images[:, None]
    train_x, test_x, train_y, test_y = train_test_split(
        images, bunch.target, test_size=DIGITS_TEST_SIZE, stratify=bunch.target, random_state=DIGITS_SPLIT_SEED
    )
    x, y = (train_x, train_y) if split == "train" else (test_x, test_y)
    return TensorDataset(torch.from_numpy(x), torch.from_numpy(y).long())


def colourize(images: np.ndarray, seed: int) -> np.ndarray:
    """Grey images (N, H, W) in [0, 1] -> (N, 3, H, W): ink level g blends a per-image background b
    into a per-image digit colour f as (1 - g) b + g f.

    Colours are uniform in [0, 1]^3, drawn in image order from `seed`; a pair closer than
    RGBDIGITS_CONTRAST is drawn again, so the result depends on the seed alone.
    """
    rng = np.random.default_rng(seed)
    pairs = rng.random((len(images), 2, 3))
    while (close := np.linalg.norm(pairs[:, 0] - pairs[:, 1], axis=1) < RGBDIGITS_CONTRAST).any():
        pairs[close] = rng.random((int(close.sum()), 2, 3))
    ink = images[:, None]
    background, colour = pairs[:, 0, :, None, None], pairs[:, 1, :, None, None]
    return ((1 - ink) * background + ink * colour).astype(np.float32)


def _read_idx(path: Path) -> np.ndarray:
    """Parse an idx file (optionally gzipped): big-endian header, then unsigned bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise RsbenchError(f"{path} is not an idx file of unsigned bytes")
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _find_idx(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "MNIST" / "raw", root / "raw"):
        for suffix in ("", ".gz"):
            if (folder / (stem + suffix)).is_file():
                return folder / (stem + suffix)
    return None


def _mnist(split: str, root: Path, download: bool) -> TensorDataset:
    prefix = "t10k" if split == "test" else "train"
    images = _find_idx(root, f"{prefix}-images-idx3-ubyte")
    labels = _find_idx(root, f"{prefix}-labels-idx1-ubyte")
    if images is None or labels is None:
        if not download:
            raise RsbenchError(
                f"MNIST {split} files not found: put {prefix}-images-idx3-ubyte(.gz) and "
                f"{prefix}-labels-idx1-ubyte(.gz) in {root} (or set RSBENCH_DATA)"
            )
        from torchvision.datasets import MNIST

        MNIST(str(root), train=split == "train", download=True)
        return _mnist(split, root, download=False)
    x = torch.from_numpy(_read_idx(images).astype(np.float32) / 255.0).unsqueeze(1)
    return TensorDataset(x, torch.from_numpy(_read_idx(labels).astype(np.int64)))


def _cifar10(split: str, root: Path, download: bool) -> Dataset:
    from torchvision.datasets import CIFAR10
    from torchvision.transforms import ToTensor

    try:
        return CIFAR10(str(root), train=split == "train", download=download, transform=ToTensor())
    except RuntimeError:
        raise RsbenchError(
            f"CIFAR-10 not found in {root}: run `rsbench data pull cifar10`, or extract cifar-10-python.tar.gz there "
            "(folder cifar-10-batches-py), or set RSBENCH_DATA"
        ) from None


def _image_folder(name: str, root: Path, split: str, size: int) -> Dataset:
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    folder = root / ("val" if split == "test" else "train")
    if not folder.is_dir():
        raise RsbenchError(f"{folder} not found: put the {split} images in {_image_layout(name, folder)}")
    resize = [transforms.Resize(int(size * 256 / 224)), transforms.CenterCrop(size)] if size == 224 else []
    return ImageFolder(str(folder), transform=transforms.Compose([*resize, transforms.ToTensor()]))
