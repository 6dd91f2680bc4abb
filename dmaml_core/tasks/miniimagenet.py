"""miniImageNet (Vinyals et al. 2016) with Ravi & Larochelle's 64 / 16 / 20-class split, N-way
K-shot, 84x84 RGB in [0, 1].

The data set cannot be redistributed and is not in this repository; two common formats are read:

(a) Ravi & Larochelle's CSV split: ``<dir>/images/<filename>`` plus ``train.csv``, ``val.csv``,
    ``test.csv`` with a ``filename,label`` header. Images are converted to RGB and resized to
    ``image_size`` (PIL LANCZOS) when they are not already; the decoded split is cached as an
    ``.npz`` (keyed by the CSV contents, the images' names, sizes and mtimes, and the
    preprocessing), written atomically, so only the first start decodes the JPEGs.
(b) The widely shared pickles of preprocessed arrays: ``mini-imagenet-cache-<split>.pkl``, a dict
    with ``image_data`` [N, 84, 84, 3] uint8 and ``class_dict`` {label: [indices]}. Pickles execute
    code when loaded: only point this at files you trust.

The folder is looked up in: ``data_dir``, ``$DMAML_DATA`` (itself, ``miniimagenet/`` or
``mini-imagenet/``), ``../shared/data/miniimagenet`` next to the repository, and the user cache
(``$XDG_CACHE_HOME/dmaml-bench/miniimagenet``); nothing is downloaded (there is no canonical
public home).

``THESIS_SETTINGS`` holds the thesis' miniImageNet settings (table 5.2); ``MiniImageNet`` with its
defaults is the matching domain (5-way 1-shot, 15 query images per class).
"""

from __future__ import annotations

import csv
import hashlib
import os
import pickle
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, Literal, NamedTuple

import numpy as np

from dmaml_core.files import atomic_write_bytes
from dmaml_core.metrics import CLASSIFICATION, Metric
from dmaml_core.tasks.base import Split, check_few_shot
from dmaml_core.tasks.omniglot import (
    DatasetFormatError,
    DatasetNotFoundError,
    env_data_candidates,
    sample_tasks,
    shared_data_candidates,
    user_cache_dir,
)
from dmaml_core.types import LossKind, Tasks

if TYPE_CHECKING:  # models import TensorFlow: domains stay importable without it
    from dmaml_core.finn_net import FinnConvNet
    from dmaml_core.models import ConvNet

# Thesis table 5.2 (miniImageNet). Keys follow MamlConfig / WorkerConfig / the domain: alpha and
# inner_steps -> MamlConfig, tasks_per_step -> WorkerConfig, k_query -> MiniImageNet, val_steps ->
# adaptation steps at validation. The outer rate beta is not part of table 5.2.
THESIS_SETTINGS: dict[str, Any] = {
    "n_way": 5,
    "k_shot": 1,
    "alpha": 0.4,
    "k_query": 15,
    "tasks_per_step": 4,
    "inner_steps": 5,
    "val_steps": 10,
}

IMAGE_SIZE = 84
PREPROCESS_VERSION = 1
DataSplit = Literal["train", "val", "test"]
PICKLE_NAME = "mini-imagenet-cache-{split}.pkl"


class ImageClasses(NamedTuple):
    """One split: flat images plus, per class, the indices of its images (padded with 0)."""

    images: np.ndarray  # [N, H, W, 3] uint8
    members: np.ndarray  # [classes, max images per class] int64
    counts: np.ndarray  # [classes] images per class
    labels: list[str]  # class names (wnids), sorted


def _expected_text(folder: Path | None = None) -> str:
    where = f" in {folder}" if folder is not None else ""
    return (
        f"either images/ + train.csv, val.csv, test.csv (header filename,label){where}, or "
        f"mini-imagenet-cache-{{train,val,test}}.pkl (dict with 'image_data' [N,84,84,3] uint8 "
        f"and 'class_dict' {{label: [indices]}}){where}"
    )


def _has_split(folder: Path, split: DataSplit) -> bool:
    pickled = (folder / PICKLE_NAME.format(split=split)).is_file()
    return pickled or ((folder / f"{split}.csv").is_file() and (folder / "images").is_dir())


def find_miniimagenet(
    data_dir: str | os.PathLike[str] | None, splits: tuple[DataSplit, ...]
) -> Path:
    """The first candidate folder holding every requested split in either format."""
    if data_dir is not None:
        candidates = [Path(data_dir), Path(data_dir) / "miniimagenet"]
    else:
        candidates = [
            *env_data_candidates("miniimagenet"),
            *env_data_candidates("mini-imagenet")[1:],
            *shared_data_candidates("miniimagenet"),
            user_cache_dir("miniimagenet"),
        ]
    for folder in candidates:
        if all(_has_split(folder, s) for s in splits):
            return folder
    searched = "\n  ".join(str(c) for c in candidates)
    raise DatasetNotFoundError(
        f"miniImageNet ({', '.join(splits)} split) not found. Expected {_expected_text()} in one "
        f"of:\n  {searched}\n(or set DMAML_DATA / pass data_dir). The data set is not "
        "downloaded automatically."
    )


def _group(labels: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Index matrix [classes, max count] (padded with 0), counts, sorted class names."""
    names = sorted(set(labels))
    members: dict[str, list[int]] = {n: [] for n in names}
    for i, label in enumerate(labels):
        members[label].append(i)
    return (
        _index_matrix([members[n] for n in names]),
        np.array([len(members[n]) for n in names]),
        names,
    )


def _index_matrix(rows: list[list[int]]) -> np.ndarray:
    width = max(len(r) for r in rows)
    out = np.zeros((len(rows), width), np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def read_pickle(path: Path, image_size: int = IMAGE_SIZE) -> ImageClasses:
    """Format (b): ``{'image_data': [N, H, W, 3], 'class_dict': {label: [indices]}}``."""
    try:
        with path.open("rb") as handle:
            data = pickle.load(handle)  # trusted files only (module docstring)
        images = np.asarray(data["image_data"])
        class_dict = data["class_dict"]
    except (pickle.UnpicklingError, EOFError, OSError, KeyError, TypeError, ValueError) as err:
        raise DatasetFormatError(
            f"{path}: not a readable miniImageNet pickle ({type(err).__name__}: {err}). Expected "
            "a dict with 'image_data' [N, 84, 84, 3] uint8 and 'class_dict' {label: [indices]}."
        ) from err
    if images.ndim != 4 or images.shape[1:] != (image_size, image_size, 3):
        raise DatasetFormatError(
            f"{path}: image_data has shape {images.shape}, expected [N, {image_size}, "
            f"{image_size}, 3]"
        )
    if images.dtype != np.uint8:  # some copies hold floats: in [0, 1] or in [0, 255]
        scale = 255.0 if float(images.max(initial=0)) <= 1.0 else 1.0
        images = np.clip(np.rint(images * scale), 0, 255).astype(np.uint8)
    names = sorted(class_dict, key=str)
    rows = [[int(i) for i in class_dict[n]] for n in names]
    if any(not r for r in rows) or any(not 0 <= i < len(images) for r in rows for i in r):
        raise DatasetFormatError(f"{path}: class_dict holds empty classes or indices out of range")
    counts = np.array([len(r) for r in rows])
    return ImageClasses(images, _index_matrix(rows), counts, [str(n) for n in names])


def _read_csv(path: Path) -> list[tuple[str, str]]:
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetFormatError(f"{path}: unreadable ({err})") from err
    if not rows or [c.strip().lower() for c in rows[0]] != ["filename", "label"]:
        raise DatasetFormatError(f"{path}: expected a 'filename,label' header, got {rows[:1]}")
    body = [r for r in rows[1:] if r]
    if not body or any(len(r) != 2 for r in body):
        raise DatasetFormatError(f"{path}: expected rows of 'filename,label'")
    return [(r[0], r[1]) for r in body]


def _decode_image(path: Path, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DatasetFormatError(f"{path}: not a readable image ({err})") from err
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), resample=Image.Resampling.LANCZOS)
    return np.asarray(rgb, dtype=np.uint8)


_LOCK = threading.Lock()
_LOADED: dict[tuple[str, str, int], ImageClasses] = {}  # once per process
_FOLDERS: dict[tuple[str | None, DataSplit], Path] = {}


def read_csv_split(
    folder: Path, split: DataSplit, image_size: int, cache_dir: Path | None
) -> ImageClasses:
    """Format (a), through an ``.npz`` cache of the decoded split when ``cache_dir`` is given."""
    rows = _read_csv(folder / f"{split}.csv")
    digest = hashlib.sha256((folder / f"{split}.csv").read_bytes())
    for filename, _ in rows:
        file = folder / "images" / filename
        if not file.is_file():
            raise DatasetFormatError(
                f"{file}: listed in {folder / f'{split}.csv'} but missing (expected "
                f"{_expected_text(folder)})"
            )
        stat = file.stat()
        digest.update(f"{filename}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    digest.update(f"v{PREPROCESS_VERSION}:size={image_size}".encode())
    npz = (
        None
        if cache_dir is None
        else cache_dir / f"miniimagenet-{split}-{digest.hexdigest()[:24]}.npz"
    )
    labels = [label for _, label in rows]
    if npz is not None and npz.is_file():
        try:
            with np.load(npz, allow_pickle=False) as data:
                images = data["images"]
            if images.shape == (len(rows), image_size, image_size, 3):
                return ImageClasses(images, *_group(labels))
        except (OSError, ValueError, KeyError, EOFError):
            pass  # unreadable cache: rebuild it
    images = np.stack([_decode_image(folder / "images" / f, image_size) for f, _ in rows])
    if npz is not None:

        def write(handle: BinaryIO) -> None:
            np.savez(handle, images=images)

        atomic_write_bytes(npz, write)
    return ImageClasses(images, *_group(labels))


def load_split(
    folder: Path, split: DataSplit, image_size: int = IMAGE_SIZE, cache_dir: Path | None = None
) -> ImageClasses:
    """One split in whichever format the folder holds (the pickle first: nothing to decode)."""
    key = (str(folder), split, image_size)
    with _LOCK:
        if key not in _LOADED:
            pickled = folder / PICKLE_NAME.format(split=split)
            if pickled.is_file():
                _LOADED[key] = read_pickle(pickled, image_size)
            else:
                _LOADED[key] = read_csv_split(folder, split, image_size, cache_dir)
        return _LOADED[key]


@dataclass(frozen=True)
class MiniImageNet:
    """miniImageNet N-way K-shot (defaults: the thesis' table 5.2, 5-way 1-shot, 15 query)."""

    n_way: int = 5
    k_shot: int = 1
    k_query: int = 15
    data_dir: str | None = None
    image_size: int = IMAGE_SIZE
    test_split: Literal["val", "test"] = "test"  # what `sample(..., "test")` draws from
    cache_dir: str | None = None  # decoded CSV splits: default the user cache
    # "finn": Finn et al.'s net (conv biases, offset-only batch norm; finn_net)
    network: Literal["ours", "finn"] = "ours"

    name: ClassVar[str] = "miniimagenet"
    loss: ClassVar[LossKind] = "xent"
    metrics: ClassVar[tuple[Metric, ...]] = CLASSIFICATION  # the first is the primary

    def __post_init__(self) -> None:
        check_few_shot(self.n_way, self.k_shot, self.k_query)
        if self.test_split not in ("val", "test"):
            raise ValueError(f"test_split must be 'val' or 'test', got {self.test_split!r}")
        if self.network not in ("ours", "finn"):
            raise ValueError(f"network must be 'ours' or 'finn', got {self.network!r}")

    def model(self) -> ConvNet | FinnConvNet:
        if self.network == "finn":
            from dmaml_core.finn_net import finn_miniimagenet_net

            return finn_miniimagenet_net(self.n_way, self.image_size)
        from dmaml_core.models import ConvNet, miniimagenet_convnet

        net = miniimagenet_convnet(self.n_way)
        if net.image_size == self.image_size:
            return net
        return ConvNet(self.n_way, self.image_size, 3, net.filters, net.stride, net.max_pool)

    def classes(self, split: Split = "train") -> ImageClasses:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        data_split: DataSplit = "train" if split == "train" else self.test_split
        located = (self.data_dir, data_split)
        if located not in _FOLDERS:  # look the folder up once, not on every meta-batch
            _FOLDERS[located] = find_miniimagenet(self.data_dir, (data_split,))
        folder = _FOLDERS[located]
        cache = Path(self.cache_dir) if self.cache_dir else user_cache_dir("miniimagenet")
        return load_split(folder, data_split, self.image_size, cache / "preprocessed")

    def sample(self, rng: np.random.Generator, n_tasks: int, split: Split = "train") -> Tasks:
        data = self.classes(split)
        return sample_tasks(
            rng, data.images, self.n_way, self.k_shot, self.k_query, n_tasks,
            index=data.members, counts=data.counts,
        )  # fmt: skip
