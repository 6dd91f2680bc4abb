"""Omniglot (Lake et al. 2015), N-way K-shot, from the standard archives.

Data: ``images_background.zip`` (30 alphabets, 964 characters) and ``images_evaluation.zip`` (20
alphabets, 659 characters), 20 drawings of 105x105 1-bit PNGs per character, either as the zips or
as their unpacked folders. They are looked up, in order, in: the ``data_dir`` field, the
``DMAML_DATA`` environment variable (the folder itself or its ``omniglot/`` sub-folder),
``../shared/data/omniglot`` next to the repository (resolved from this package and from the current
directory), and the user cache (``$XDG_CACHE_HOME/dmaml-bench/omniglot``). If none holds them they
are downloaded from the canonical home, github.com/brendenlake/omniglot, into the cache (or into
``data_dir`` when given), verified, and moved into place atomically.

Preprocessing (as in the thesis and Finn et al. 2017): resize 105 -> 28 with PIL (LANCZOS by
default), invert so strokes are 1, scale to [0, 1]; every character rotated by 90, 180 and 270
degrees is a new class. The result is cached as an ``.npz`` keyed by a hash of the archives'
contents and the preprocessing parameters, so only the first start decodes the 32,460 PNGs; the
arrays live once per process in a module-level cache (the domain object itself stays a few bytes,
because it is pickled to every worker).

Splits:
- ``vinyals``: a seeded shuffle of all 1,623 characters, 1,200 for training and the other 423 for
  testing, x4 rotations = 4,800 / 1,692 classes. This is the protocol of Vinyals et al. 2016 and
  Finn et al. 2017 (MAML, table 1), and the one to compare with the paper's Omniglot numbers
  (thesis tables 5.1 / paper table 2). Which 1,200 characters depends on the shuffle; we use
  ``numpy.random.default_rng(seed)``, not Finn's ``random.seed(1)`` list, so individual characters
  differ but the sizes and the protocol are the same.
- ``lake``: background set for training, evaluation set for testing (Lake et al. 2015's
  alphabet-disjoint split), x4 rotations = 3,856 / 2,636 classes. Harder: test alphabets are unseen.

The thesis reports a 3,760 / 2,732-class split (940 / 683 characters x 4 rotations). Which
characters it used was never published, so it cannot be reproduced exactly; ``vinyals`` is the
closest published protocol (same model, same image size, rotations, a random character split).

Images are held as uint8 (PIL's own output after resizing) and converted to float32 only for the
few images a meta-batch gathers: 4x less memory per worker process, identical values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import threading
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, ClassVar, Literal, NamedTuple

import numpy as np

from dmaml_core.files import atomic_write_bytes
from dmaml_core.metrics import CLASSIFICATION, Metric
from dmaml_core.tasks.base import Split, check_few_shot
from dmaml_core.types import LossKind, Tasks

if TYPE_CHECKING:  # models import TensorFlow: domains stay importable without it
    from dmaml_core.finn_net import FinnConvNet
    from dmaml_core.models import ConvNet

ARCHIVES = ("images_background", "images_evaluation")
URLS = {
    name: f"https://github.com/brendenlake/omniglot/raw/master/python/{name}.zip"
    for name in ARCHIVES
}
# MD5 of upstream's zips (see shared/data/omniglot/README.md); checked after a download only, the
# repacked copies in shared/ differ in zip metadata but hold the same PNGs.
UPSTREAM_MD5 = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}
DRAWINGS = 20  # drawings per character
SOURCE_SIZE = 105
VINYALS_TRAIN_CHARACTERS = 1200
# Bump when the preprocessing code changes meaning: every cached .npz becomes stale.
PREPROCESS_VERSION = 1

OmniglotSplit = Literal["vinyals", "lake"]
Resample = Literal["lanczos", "box"]


class DatasetNotFoundError(FileNotFoundError):
    """The data set is in none of the searched places (and could not be downloaded)."""


class DatasetFormatError(ValueError):
    """A data file exists but is not what it should be (corrupted, truncated, wrong layout)."""


# ---------------------------------------------------------------------------------------------
# Locations, downloads, atomic writes (shared with miniimagenet)


def user_cache_dir(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/dmaml-bench/...`` (``~/.cache`` by default)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(root, "dmaml-bench", *parts)


def shared_data_candidates(name: str) -> list[Path]:
    """``../shared/data/<name>`` relative to the repository root (from this package) and to the
    current directory, without duplicates."""
    repo_root = Path(__file__).resolve().parents[2]
    out: list[Path] = []
    for base in (repo_root, Path.cwd()):
        path = (base / ".." / "shared" / "data" / name).resolve()
        if path not in out:
            out.append(path)
    return out


def env_data_candidates(name: str) -> list[Path]:
    """``$DMAML_DATA`` may point at the data set folder itself or at a root holding ``<name>/``."""
    root = os.environ.get("DMAML_DATA")
    return [Path(root), Path(root) / name] if root else []


def download(url: str, dest: Path, md5: str | None = None, timeout_s: float = 60.0) -> None:
    """Fetch ``url`` into ``dest`` atomically; check the MD5 when known."""

    def write(handle: BinaryIO) -> None:
        digest = hashlib.md5()
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                handle.write(chunk)
        if md5 is not None and digest.hexdigest() != md5:
            raise DatasetFormatError(
                f"downloaded {url} has MD5 {digest.hexdigest()}, expected {md5}; not kept"
            )

    atomic_write_bytes(dest, write)


# ---------------------------------------------------------------------------------------------
# Reading the archives


def _archive_path(folder: Path, name: str) -> Path | None:
    """``<folder>/<name>.zip`` or the unpacked ``<folder>/<name>/`` (which must hold alphabets)."""
    zipped = folder / f"{name}.zip"
    if zipped.is_file():
        return zipped
    unpacked = folder / name
    if unpacked.is_dir():
        # tolerate a doubly nested unpack (images_background/images_background/<Alphabet>)
        nested = unpacked / name
        return nested if nested.is_dir() else unpacked
    return None


def _holds_omniglot(folder: Path) -> bool:
    return all(_archive_path(folder, name) is not None for name in ARCHIVES)


def _expected_files_text() -> str:
    return (
        "images_background.zip and images_evaluation.zip (or their unpacked folders "
        "images_background/<Alphabet>/characterNN/*.png and images_evaluation/...)"
    )


def find_omniglot(
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    allow_download: bool = True,
) -> Path:
    """The folder holding both Omniglot archives; downloads them if they are nowhere."""
    if data_dir is not None:
        candidates = [Path(data_dir), Path(data_dir) / "omniglot"]
        target = Path(data_dir)
    else:
        cache = Path(cache_dir) if cache_dir is not None else user_cache_dir("omniglot")
        candidates = [
            *env_data_candidates("omniglot"),
            *shared_data_candidates("omniglot"),
            cache,
        ]
        target = cache
    for folder in candidates:
        if _holds_omniglot(folder):
            return folder
    searched = "\n  ".join(str(c) for c in candidates)
    where = (
        f"Put {_expected_files_text()} into one of:\n  {searched}\n"
        f"(or set DMAML_DATA / pass data_dir). They are at "
        f"{URLS['images_background']} and {URLS['images_evaluation']}."
    )
    if not allow_download:
        raise DatasetNotFoundError(f"Omniglot not found (download disabled). {where}")
    try:
        for name in ARCHIVES:
            if _archive_path(target, name) is None:
                download(URLS[name], target / f"{name}.zip", UPSTREAM_MD5[name])
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise DatasetNotFoundError(
            f"Omniglot not found and the download into {target} failed ({err}). {where}"
        ) from err
    return target


def _bad_archive(path: Path, what: str) -> DatasetFormatError:
    return DatasetFormatError(
        f"{path}: {what}. Expected the Omniglot archive {path.name} "
        f"(<set>/<Alphabet>/characterNN/<id>_<nn>.png, 20 PNGs per character) from "
        f"{URLS.get(path.name.removesuffix('.zip'), 'github.com/brendenlake/omniglot')}; "
        "delete or replace it."
    )


def _iter_members(path: Path) -> Iterator[tuple[str, bytes]]:
    """(relative path below the set's top folder, PNG bytes), sorted by path."""
    if path.is_dir():
        for file in sorted(path.rglob("*.png")):
            yield file.relative_to(path).as_posix(), file.read_bytes()
        return
    try:
        with zipfile.ZipFile(path) as archive:
            names = sorted(n for n in archive.namelist() if n.lower().endswith(".png"))
            for name in names:
                # drop the top folder (images_background/...)
                yield name.split("/", 1)[1] if "/" in name else name, archive.read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise _bad_archive(path, f"not a readable zip archive ({err})") from err


class RawCharacters(NamedTuple):
    images: np.ndarray  # [characters, 20, size, size] uint8, strokes high
    names: list[str]  # "<set>/<Alphabet>/<characterNN>" per character


def _decode(path: Path, member: str, data: bytes, size: int, resample: Resample) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    method = {"lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX}[resample]
    try:
        with Image.open(io.BytesIO(data)) as image:
            grey = image.convert("L")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise _bad_archive(path, f"{member} is not a readable PNG ({err})") from err
    if grey.size != (SOURCE_SIZE, SOURCE_SIZE):
        raise _bad_archive(path, f"{member} is {grey.size}, not {SOURCE_SIZE}x{SOURCE_SIZE}")
    if size != SOURCE_SIZE:
        grey = grey.resize((size, size), resample=method)
    return 255 - np.asarray(grey, dtype=np.uint8)  # invert: strokes (black in the PNG) -> high


def prepare_images(
    images: Sequence[Path | str | bytes], image_size: int = 28, resample: Resample = "lanczos"
) -> np.ndarray:
    """Omniglot-style PNGs (paths or bytes, 105x105) as the domain's tasks hold them: grey,
    resized with ``resample`` to ``image_size`` as the training cache was, inverted (strokes
    high), float32 in [0, 1], shape [N, image_size, image_size, 1]. Use it to feed outside
    images to weights trained here (``python -m harness export``), with the domain's settings."""
    out = []
    for i, item in enumerate(images):
        data = item if isinstance(item, bytes) else Path(item).read_bytes()
        where = Path(item) if not isinstance(item, bytes) else Path(f"<image {i}>")
        out.append(_decode(where, where.name, data, image_size, resample))
    stacked = np.stack(out) if out else np.zeros((0, image_size, image_size), np.uint8)
    return stacked[..., None].astype(np.float32) * np.float32(1.0 / 255.0)


def read_set(path: Path, size: int, resample: Resample) -> RawCharacters:
    """Decode one archive (zip or folder) into [characters, 20, size, size] uint8."""
    by_character: dict[str, list[np.ndarray]] = {}
    for member, data in _iter_members(path):
        parts = member.split("/")
        if len(parts) != 3:
            raise _bad_archive(path, f"unexpected entry {member!r}")
        character = "/".join([path.name.removesuffix(".zip"), *parts[:2]])
        by_character.setdefault(character, []).append(_decode(path, member, data, size, resample))
    if not by_character:
        raise _bad_archive(path, "holds no PNG files")
    for character, drawings in by_character.items():
        if len(drawings) != DRAWINGS:
            raise _bad_archive(path, f"{character} has {len(drawings)} drawings, not {DRAWINGS}")
    names = sorted(by_character)
    return RawCharacters(np.stack([np.stack(by_character[n]) for n in names]), names)


# ---------------------------------------------------------------------------------------------
# Preprocessed cache


def _source_identity(path: Path) -> str:
    """Content hash of a zip (about 20 ms for both; survives copies and touches); for an unpacked
    folder, the names, sizes and mtimes of its PNGs (hashing 32k small files would be slower)."""
    digest = hashlib.sha256(path.name.encode())
    if path.is_file():
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    else:
        for file in sorted(path.rglob("*.png")):
            stat = file.stat()
            digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


def cache_key(source: Path, image_size: int, resample: Resample) -> str:
    digest = hashlib.sha256()
    for name in ARCHIVES:
        archive = _archive_path(source, name)
        assert archive is not None
        digest.update(_source_identity(archive).encode())
    digest.update(f"v{PREPROCESS_VERSION}:size={image_size}:resample={resample}".encode())
    return digest.hexdigest()[:24]


class Preprocessed(NamedTuple):
    images: np.ndarray  # [1623, 20, size, size] uint8, background characters first
    names: np.ndarray  # [1623] "<set>/<Alphabet>/<characterNN>"
    n_background: int
    path: Path  # the .npz it was read from or written to
    seconds: float  # time to build or load it
    built: bool  # True when this call decoded the PNGs


_LOCK = threading.Lock()
_PREPROCESSED: dict[str, Preprocessed] = {}  # cache key -> arrays, once per process


def load_preprocessed(
    source: Path, cache_dir: Path, image_size: int = 28, resample: Resample = "lanczos"
) -> Preprocessed:
    """The preprocessed characters, from memory, from the ``.npz`` cache, or built from the PNGs."""
    start = time.perf_counter()
    key = cache_key(source, image_size, resample)
    with _LOCK:
        if key in _PREPROCESSED:
            return _PREPROCESSED[key]
        npz = cache_dir / f"omniglot-{key}.npz"
        loaded = _read_npz(npz, image_size)
        if loaded is None:
            sets = []
            for name in ARCHIVES:
                archive = _archive_path(source, name)
                assert archive is not None
                sets.append(read_set(archive, image_size, resample))
            images = np.concatenate([s.images for s in sets])
            names = np.array([n for s in sets for n in s.names])
            n_background = len(sets[0].names)

            def write(handle: BinaryIO) -> None:
                np.savez(handle, images=images, names=names, n_background=n_background)

            atomic_write_bytes(npz, write)
            built = True
        else:
            images, names, n_background = loaded
            built = False
        result = Preprocessed(images, names, n_background, npz, time.perf_counter() - start, built)
        _PREPROCESSED[key] = result
        return result


def _read_npz(path: Path, image_size: int) -> tuple[np.ndarray, np.ndarray, int] | None:
    """A valid cache file's arrays, or None (missing or unreadable: it is simply rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            images, names = data["images"], data["names"]
            n_background = int(data["n_background"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None
    if images.ndim != 4 or images.shape[1:] != (DRAWINGS, image_size, image_size):
        return None
    return images, names, n_background


# ---------------------------------------------------------------------------------------------
# Splits and the sampler


class ClassSplit(NamedTuple):
    """One side of a split: ``images[class, drawing]`` and which character each class comes from."""

    images: np.ndarray  # [classes, 20, size, size, 1] uint8
    characters: np.ndarray  # [classes] index into Preprocessed.names
    rotations: np.ndarray  # [classes] quarter turns (counter-clockwise) applied to the character


def character_split(
    split: OmniglotSplit, n_characters: int, n_background: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Character indices for (train, test)."""
    if split == "lake":
        return np.arange(n_background), np.arange(n_background, n_characters)
    if split == "vinyals":
        if n_characters <= VINYALS_TRAIN_CHARACTERS:
            raise ValueError(
                f"the vinyals split needs more than {VINYALS_TRAIN_CHARACTERS} characters, "
                f"the data has {n_characters}"
            )
        order = np.random.default_rng(seed).permutation(n_characters)
        return np.sort(order[:VINYALS_TRAIN_CHARACTERS]), np.sort(order[VINYALS_TRAIN_CHARACTERS:])
    raise ValueError(f"split must be 'vinyals' or 'lake', got {split!r}")


def build_classes(images: np.ndarray, characters: np.ndarray, rotations: bool) -> ClassSplit:
    """Classes for the given characters; with rotations each one appears as 4 consecutive classes
    (0, 90, 180, 270 degrees)."""
    base = images[characters]  # [C, 20, H, W]
    turns = (0, 1, 2, 3) if rotations else (0,)
    stacked = np.stack([np.rot90(base, k, axes=(2, 3)) for k in turns], axis=1)
    return ClassSplit(
        np.ascontiguousarray(stacked.reshape(-1, *base.shape[1:]))[..., None],
        np.repeat(characters, len(turns)),
        np.tile(np.array(turns), len(characters)),
    )


def distinct_rows(rng: np.random.Generator, n_rows: int, k: int, n: int) -> np.ndarray:
    """[n_rows, k] draws from range(n), distinct within a row, each row a uniformly random ordered
    k-subset. Rejection on whole rows when collisions are rare (k^2 << n: a handful of redraws at
    most), random sort keys otherwise; both are vectorised over rows."""
    if k > n:
        raise ValueError(f"cannot draw {k} distinct items from {n}")
    if k * k > n:
        return np.argsort(rng.random((n_rows, n)), axis=1)[:, :k]
    rows = rng.integers(n, size=(n_rows, k))
    while True:
        ordered = np.sort(rows, axis=1)
        bad = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
        if bad.size == 0:
            return rows
        rows[bad] = rng.integers(n, size=(bad.size, k))


def sample_tasks(
    rng: np.random.Generator,
    images: np.ndarray,
    n_way: int,
    k_shot: int,
    k_query: int,
    n_tasks: int,
    index: np.ndarray | None = None,
    counts: np.ndarray | None = None,
) -> Tasks:
    """A meta-batch of N-way K-shot tasks from ``images[class, item, H, W, C]`` (uint8 or float),
    or, with ``index`` [classes, items], from flat ``images[index[class, item]]`` (no copy of a
    large data set into a dense class array).

    Per task: ``n_way`` distinct classes, ``k_shot + k_query`` distinct items of each (so no image
    is in both support and query), labels 0..n_way-1 assigned to the classes in random order, and
    support and query each shuffled. ``counts[class]`` limits the items of classes that have fewer
    than ``max items`` (padded rows). Everything is numpy indexing over the whole meta-batch.
    """
    n_classes, max_items = (images if index is None else index).shape[:2]
    k = k_shot + k_query
    available = int(max_items if counts is None else counts.min())
    if k > available:
        raise ValueError(f"k_shot + k_query = {k} but a class has only {available} images")
    classes = distinct_rows(rng, n_tasks, n_way, n_classes)  # [T, N]
    keys = rng.random((n_tasks, n_way, max_items))
    if counts is not None:
        keys[np.arange(max_items) >= counts[classes][..., None]] = np.inf  # never pick padding
    items = np.argsort(keys, axis=-1)[..., :k]  # [T, N, K+Q], a random ordered subset
    labels = np.argsort(rng.random((n_tasks, n_way)), axis=1).astype(np.int32)  # class -> label

    def part(items_part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Shuffle the (class, item, label) index triples first, then gather the images once.
        per_class = items_part.shape[-1]
        order = np.argsort(rng.random((n_tasks, n_way * per_class)), axis=1)
        cls = np.take_along_axis(np.repeat(classes, per_class, axis=1), order, axis=1)
        itm = np.take_along_axis(items_part.reshape(n_tasks, -1), order, axis=1)
        y = np.take_along_axis(np.repeat(labels, per_class, axis=1), order, axis=1)
        x = images[cls, itm] if index is None else images[index[cls, itm]]  # [T, N*P, H, W, C]
        if x.dtype == np.uint8:
            return x.astype(np.float32) * np.float32(1.0 / 255.0), y
        return x.astype(np.float32, copy=False), y

    support_x, support_y = part(items[..., :k_shot])
    query_x, query_y = part(items[..., k_shot:])
    return Tasks(support_x, support_y, query_x, query_y)


_SPLITS: dict[tuple[str, OmniglotSplit, bool, int], tuple[ClassSplit, ClassSplit]] = {}
_RESOLVED: dict[tuple[object, ...], Preprocessed] = {}  # domain data fields -> arrays


@dataclass(frozen=True)
class Omniglot:
    """Omniglot N-way K-shot classification (a few bytes; arrays are loaded lazily per process)."""

    n_way: int = 5
    k_shot: int = 1
    k_query: int = 1
    split: OmniglotSplit = "vinyals"
    data_dir: str | None = None
    image_size: int = 28
    rotations: bool = True
    seed: int = 0  # character shuffle of the vinyals split (not the task stream: that is `rng`)
    resample: Resample = "lanczos"
    cache_dir: str | None = None  # preprocessed .npz (and downloads): default the user cache
    download: bool = True
    # "finn": Finn et al.'s net (conv biases, offset-only batch norm, spatial mean; finn_net)
    network: Literal["ours", "finn"] = "ours"

    name: ClassVar[str] = "omniglot"
    loss: ClassVar[LossKind] = "xent"
    metrics: ClassVar[tuple[Metric, ...]] = CLASSIFICATION  # the first is the primary

    def __post_init__(self) -> None:
        check_few_shot(self.n_way, self.k_shot, self.k_query)
        if self.k_shot + self.k_query > DRAWINGS:
            raise ValueError(f"k_shot + k_query must be <= {DRAWINGS} (drawings per character)")
        if self.split not in ("vinyals", "lake"):
            raise ValueError(f"split must be 'vinyals' or 'lake', got {self.split!r}")
        if self.resample not in ("lanczos", "box"):
            raise ValueError(f"resample must be 'lanczos' or 'box', got {self.resample!r}")
        if self.network not in ("ours", "finn"):
            raise ValueError(f"network must be 'ours' or 'finn', got {self.network!r}")

    def model(self) -> ConvNet | FinnConvNet:
        if self.network == "finn":
            from dmaml_core.finn_net import finn_omniglot_net

            return finn_omniglot_net(self.n_way, self.image_size)
        from dmaml_core.models import omniglot_convnet

        return dataclasses.replace(omniglot_convnet(self.n_way), image_size=self.image_size)

    def preprocessed(self) -> Preprocessed:
        """Locate, preprocess or load the data once per process."""
        fields = (self.data_dir, self.cache_dir, self.image_size, self.resample, self.download)
        if fields not in _RESOLVED:
            source = find_omniglot(self.data_dir, self.cache_dir, self.download)
            cache = Path(self.cache_dir) if self.cache_dir else user_cache_dir("omniglot")
            _RESOLVED[fields] = load_preprocessed(
                source, cache / "preprocessed", self.image_size, self.resample
            )
        return _RESOLVED[fields]

    def classes(self, split: Split = "train") -> ClassSplit:
        """The class array of one side of the split (built once per process)."""
        data = self.preprocessed()
        key = (str(data.path), self.split, self.rotations, self.seed)
        if key not in _SPLITS:
            train, test = character_split(self.split, len(data.names), data.n_background, self.seed)
            _SPLITS[key] = (
                build_classes(data.images, train, self.rotations),
                build_classes(data.images, test, self.rotations),
            )
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return _SPLITS[key][0 if split == "train" else 1]

    def sample(self, rng: np.random.Generator, n_tasks: int, split: Split = "train") -> Tasks:
        return sample_tasks(
            rng, self.classes(split).images, self.n_way, self.k_shot, self.k_query, n_tasks
        )
