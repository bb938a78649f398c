"""Reader of the IDX format of MNIST and Fashion-MNIST (raw or gzip-compressed).

Layout (torchvision's, so an existing download can be reused)::

    <data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
    <data_dir>/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]

An IDX file is a big-endian magic number ``0x0000 <type> <ndim>`` (type 0x08 = unsigned byte),
``ndim`` big-endian int32 sizes, then the data in C order. Every check failure is a ``ValueError``
that names the file.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np

from tasks._data import first_existing, malformed

MNIST_SOURCE = (
    "The official copy is at http://yann.lecun.com/exdb/mnist/ (mirror used by torchvision: "
    "https://ossci-datasets.s3.amazonaws.com/mnist/); put the files, raw or .gz, in <data_dir>/MNIST/raw/"
)
FASHION_MNIST_SOURCE = (
    "The official copy is at https://github.com/zalandoresearch/fashion-mnist (files: "
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/); put the files, raw or .gz, in "
    "<data_dir>/FashionMNIST/raw/"
)
_UNSIGNED_BYTE = 0x08


def read_idx(path: Path, *, ndim: int) -> np.ndarray:
    """The array of an unsigned-byte IDX file with ``ndim`` dimensions (``.gz`` decompressed)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise malformed(path, f"cannot be read ({error})") from error
    if len(raw) < 4:
        raise malformed(path, f"{len(raw)} bytes, shorter than the 4-byte IDX magic number")
    magic = int.from_bytes(raw[:4], "big")
    expected = (_UNSIGNED_BYTE << 8) | ndim
    if magic != expected:
        raise malformed(
            path, f"IDX magic number 0x{magic:08x}, expected 0x{expected:08x} (unsigned bytes, {ndim}-d)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise malformed(path, f"{len(raw)} bytes, shorter than the {header}-byte IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = math.prod(shape)
    if len(raw) - header != size:
        raise malformed(path, f"{len(raw) - header} data bytes, but the header's shape {shape} needs {size}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def read_images(path: Path, *, rows: int = 28, cols: int = 28) -> np.ndarray:
    """Images ``(N, rows, cols)`` uint8 from an ``idx3-ubyte`` file."""
    images = read_idx(path, ndim=3)
    if images.shape[1:] != (rows, cols):
        raise malformed(path, f"images of size {images.shape[1:]}, expected {(rows, cols)}")
    return images


def read_labels(path: Path, *, num_classes: int = 10) -> np.ndarray:
    """Labels ``(N,)`` int64 from an ``idx1-ubyte`` file, each in ``0 .. num_classes-1``."""
    labels = read_idx(path, ndim=1)
    if labels.size and int(labels.max()) >= num_classes:
        raise malformed(path, f"label {int(labels.max())} outside 0..{num_classes - 1}")
    return labels.astype(np.int64)


def _candidates(directory: Path, stem: str) -> list[Path]:
    return [directory / stem, directory / f"{stem}.gz"]


def load_images(directory: Path, split: str, *, what: str, source: str) -> np.ndarray:
    """The images of ``split`` (``"train"`` or ``"t10k"``) in ``directory``."""
    stem = f"{split}-images-idx3-ubyte"
    path = first_existing(_candidates(directory, stem), what=f"{what} {split} images", source=source)
    return read_images(path)


def load_split(directory: Path, split: str, *, what: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of ``split``; the two files must hold the same number of examples."""
    images = load_images(directory, split, what=what, source=source)
    stem = f"{split}-labels-idx1-ubyte"
    path = first_existing(_candidates(directory, stem), what=f"{what} {split} labels", source=source)
    labels = read_labels(path)
    if len(labels) != len(images):
        raise malformed(path, f"{len(labels)} labels for {len(images)} images")
    return images, labels
