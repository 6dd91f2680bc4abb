"""Omniglot domain: locating and preprocessing the archives, the splits, the task sampler."""

from __future__ import annotations

import pickle
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dmaml_core.maml import Tasks
from dmaml_core.models import ConvNet
from dmaml_core.tasks import make_domain, omniglot
from dmaml_core.tasks.omniglot import (
    DatasetFormatError,
    DatasetNotFoundError,
    Omniglot,
    Preprocessed,
    atomic_write_bytes,
    load_preprocessed,
    sample_tasks,
)


def tiny(folder: Path, cache: Path, **kw: object) -> Omniglot:
    return Omniglot(split="lake", data_dir=str(folder), cache_dir=str(cache), download=False, **kw)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- sampler


def id_images(n_classes: int, items: int) -> np.ndarray:
    """[C, M, 1, 1, 1] images whose single pixel is the id ``class * 1000 + item``."""
    ids = np.arange(n_classes)[:, None] * 1000 + np.arange(items)[None, :]
    return ids.astype(np.float32)[..., None, None, None]


def check_tasks(tasks: Tasks, n_way: int, k_shot: int, k_query: int) -> None:
    sx, sy, qx, qy = (np.asarray(a) for a in tasks)
    for t in range(tasks.n_tasks):
        s_ids, q_ids = sx[t].ravel().astype(int), qx[t].ravel().astype(int)
        assert not set(s_ids) & set(q_ids), "an image is in both support and query"
        assert len(set(s_ids)) == len(s_ids) and len(set(q_ids)) == len(q_ids)
        # one label per class, a different class per label, K (resp. Q) images per label
        label_of: dict[int, int] = {}
        for ids, labels in ((s_ids, sy[t]), (q_ids, qy[t])):
            for image_id, label in zip(ids, labels, strict=True):
                assert label_of.setdefault(image_id // 1000, int(label)) == label
        assert sorted(label_of.values()) == list(range(n_way))
        assert np.bincount(sy[t], minlength=n_way).tolist() == [k_shot] * n_way
        assert np.bincount(qy[t], minlength=n_way).tolist() == [k_query] * n_way


@pytest.mark.parametrize(("n_classes", "n_way", "k_shot", "k_query"), [(50, 5, 1, 1), (8, 5, 2, 3)])
def test_sampler_tasks_are_valid(n_classes: int, n_way: int, k_shot: int, k_query: int) -> None:
    tasks = sample_tasks(
        np.random.default_rng(0), id_images(n_classes, 20), n_way, k_shot, k_query, 64
    )
    assert tasks.support_x.shape == (64, n_way * k_shot, 1, 1, 1)
    assert tasks.query_y.shape == (64, n_way * k_query)
    assert tasks.support_x.dtype == np.float32 and tasks.support_y.dtype == np.int32
    check_tasks(tasks, n_way, k_shot, k_query)


def test_sampler_shuffles_labels_and_order() -> None:
    tasks = sample_tasks(np.random.default_rng(0), id_images(100, 20), 5, 1, 1, 200)
    # labels are not sorted by class id, and support is not in label order, in most tasks
    classes = (np.asarray(tasks.support_x).reshape(200, 5) // 1000).astype(int)
    labels = np.asarray(tasks.support_y)
    by_label = np.take_along_axis(classes, np.argsort(labels, axis=1), axis=1)
    assert (np.diff(by_label, axis=1) < 0).any(axis=1).mean() > 0.8
    assert (np.diff(labels, axis=1) < 0).any(axis=1).mean() > 0.8


def test_sampler_with_index_and_uneven_counts() -> None:
    """The flat-array path (miniImageNet): padded index rows are never drawn."""
    counts = np.array([3, 20, 5, 4, 3, 6])
    rows = [np.arange(c) + 1000 * i for i, c in enumerate(counts)]
    flat = np.concatenate(rows).astype(np.float32)[:, None, None, None]
    index = np.zeros((6, 20), np.int64)
    offset = 0
    for i, c in enumerate(counts):
        index[i, :c] = np.arange(offset, offset + c)
        offset += c
    tasks = sample_tasks(np.random.default_rng(1), flat, 5, 1, 2, 300, index=index, counts=counts)
    check_tasks(tasks, 5, 1, 2)


def test_sampler_rejects_impossible_tasks() -> None:
    with pytest.raises(ValueError, match="distinct"):
        sample_tasks(np.random.default_rng(0), id_images(4, 20), 5, 1, 1, 2)
    with pytest.raises(ValueError, match="only 20 images"):
        sample_tasks(np.random.default_rng(0), id_images(10, 20), 5, 10, 11, 2)


# ----------------------------------------------------------------------------- tiny archives


def test_tiny_lake_split_counts_and_rotations(tiny_omniglot: Path, tmp_path: Path) -> None:
    domain = tiny(tiny_omniglot, tmp_path)
    train, test = domain.classes("train"), domain.classes("test")
    assert train.images.shape == (6 * 4, 20, 28, 28, 1)
    assert test.images.shape == (3 * 4, 20, 28, 28, 1)
    assert not set(train.characters) & set(test.characters)
    for c in range(0, len(train.images), 4):
        for k in range(4):
            np.testing.assert_array_equal(
                train.images[c + k], np.rot90(train.images[c], k, axes=(1, 2))
            )
    assert tiny(tiny_omniglot, tmp_path, rotations=False).classes("train").images.shape[0] == 6


def test_tiny_preprocessing_inverts_and_scales(tiny_omniglot: Path, tmp_path: Path) -> None:
    tasks = tiny(tiny_omniglot, tmp_path).sample(np.random.default_rng(0), 4)
    x = np.asarray(tasks.support_x)
    assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
    assert x.max() == pytest.approx(1.0)  # strokes are 1 ...
    assert np.median(x) == 0.0  # ... on a background of 0


def test_determinism_under_a_seed(tiny_omniglot: Path, tmp_path: Path) -> None:
    domain = tiny(tiny_omniglot, tmp_path)
    a = domain.sample(np.random.default_rng(7), 8, "test")
    b = domain.sample(np.random.default_rng(7), 8, "test")
    c = domain.sample(np.random.default_rng(8), 8, "test")
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.support_x, c.support_x)


def test_domain_is_small_hashable_and_registered(tiny_omniglot: Path, tmp_path: Path) -> None:
    domain = tiny(tiny_omniglot, tmp_path)
    domain.sample(np.random.default_rng(0), 2)  # arrays loaded: must not travel with the object
    blob = pickle.dumps(domain)
    assert len(blob) < 1000
    assert pickle.loads(blob) == domain and hash(pickle.loads(blob)) == hash(domain)
    assert make_domain("omniglot", n_way=20) == Omniglot(n_way=20)
    model = domain.model()
    assert isinstance(model, ConvNet) and model.image_size == 28 and model.n_way == 5
    assert Omniglot(image_size=14).model().image_size == 14


def test_preprocessed_cache_is_reused_and_invalidated(
    tiny_omniglot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, cache = tmp_path / "data", tmp_path / "cache"
    shutil.copytree(tiny_omniglot, source)

    def load(size: int = 28) -> Preprocessed:
        omniglot._PREPROCESSED.clear()  # as if in a new process
        return load_preprocessed(source, cache, size)

    first = load()
    assert first.built and first.path.is_file()
    again = load()
    assert not again.built and again.path == first.path
    np.testing.assert_array_equal(again.images, first.images)
    # another preprocessing parameter, another cache file
    smaller = load(14)
    assert smaller.built and smaller.path != first.path and smaller.images.shape[-1] == 14
    # a change of preprocessing code (version bump)
    monkeypatch.setattr(omniglot, "PREPROCESS_VERSION", omniglot.PREPROCESS_VERSION + 1)
    bumped = load()
    assert bumped.built and bumped.path != first.path
    monkeypatch.undo()
    # a changed source archive (here: one more entry), even with the same name
    with zipfile.ZipFile(source / "images_evaluation.zip", "a") as archive:
        archive.writestr("images_evaluation/README.txt", "changed")
    changed = load()
    assert changed.built and changed.path not in (first.path, bumped.path)


def test_corrupted_cache_file_is_rebuilt(tiny_omniglot: Path, tmp_path: Path) -> None:
    first = load_preprocessed(tiny_omniglot, tmp_path)
    first.path.write_bytes(b"not an npz")
    omniglot._PREPROCESSED.clear()
    again = load_preprocessed(tiny_omniglot, tmp_path)
    assert again.built
    np.testing.assert_array_equal(again.images, first.images)


def test_missing_data_error_says_where_and_what(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError) as info:
        Omniglot(data_dir=str(empty), download=False).sample(np.random.default_rng(0), 1)
    message = str(info.value)
    assert str(empty) in message
    assert "images_background.zip" in message and "images_evaluation.zip" in message
    assert "github.com/brendenlake/omniglot" in message


def test_failed_download_error_and_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No network here: a download that fails midway leaves nothing behind."""

    def fail(url: str, timeout: float) -> object:
        raise omniglot.urllib.error.URLError("no network (test)")

    monkeypatch.setattr(omniglot.urllib.request, "urlopen", fail)
    with pytest.raises(DatasetNotFoundError, match=r"download into .* failed") as info:
        omniglot.find_omniglot(data_dir=tmp_path, allow_download=True)
    assert "no network (test)" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    def broken(handle: object) -> None:
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write_bytes(tmp_path / "out.npz", broken)
    assert list(tmp_path.iterdir()) == []


def test_corrupted_archive_error(tiny_omniglot: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_omniglot, tmp_path / "data")
    bad = tmp_path / "data" / "images_evaluation.zip"
    bad.write_bytes(bad.read_bytes()[:1000])  # truncated download
    with pytest.raises(DatasetFormatError) as info:
        load_preprocessed(tmp_path / "data", tmp_path / "cache")
    message = str(info.value)
    assert str(bad) in message and "not a readable zip" in message
    assert "Expected the Omniglot archive images_evaluation.zip" in message
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_corrupted_png_error(tiny_omniglot: Path, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    shutil.copy(tiny_omniglot / "images_evaluation.zip", tmp_path / "data")
    bad = tmp_path / "data" / "images_background.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        for d in range(1, 21):
            archive.writestr(f"images_background/A/character01/0001_{d:02d}.png", b"garbage")
    with pytest.raises(DatasetFormatError, match=r"0001_01\.png is not a readable PNG"):
        load_preprocessed(tmp_path / "data", tmp_path / "cache")


def test_unpacked_folders_are_accepted(tiny_omniglot: Path, tmp_path: Path) -> None:
    for name in ("images_background", "images_evaluation"):
        with zipfile.ZipFile(tiny_omniglot / f"{name}.zip") as archive:
            archive.extractall(tmp_path / "data")
    from_folders = load_preprocessed(tmp_path / "data", tmp_path / "cache")
    from_zips = load_preprocessed(tiny_omniglot, tmp_path / "cache")
    np.testing.assert_array_equal(from_folders.images, from_zips.images)
    assert list(from_folders.names) == list(from_zips.names)


def test_search_order_env_then_shared(
    tiny_omniglot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DMAML_DATA", str(tiny_omniglot))
    assert omniglot.find_omniglot(cache_dir=tmp_path, allow_download=False) == tiny_omniglot
    monkeypatch.setenv("DMAML_DATA", str(tmp_path / "nothing"))
    monkeypatch.setattr(omniglot, "shared_data_candidates", lambda name: [tmp_path / "none"])
    with pytest.raises(DatasetNotFoundError, match="nothing"):
        omniglot.find_omniglot(cache_dir=tmp_path, allow_download=False)


# ----------------------------------------------------------------------------- real data set


@pytest.mark.integration
@pytest.mark.parametrize(
    ("split", "n_train", "n_test"), [("vinyals", 4800, 1692), ("lake", 3856, 2636)]
)
def test_real_split_counts_and_disjoint_characters(
    real_omniglot: tuple[Path, Path, Preprocessed], split: str, n_train: int, n_test: int
) -> None:
    source, cache, data = real_omniglot
    assert data.images.shape == (1623, 20, 28, 28) and data.n_background == 964
    domain = Omniglot(split=split, data_dir=str(source), cache_dir=str(cache), download=False)  # type: ignore[arg-type]
    train, test = domain.classes("train"), domain.classes("test")
    assert (len(train.images), len(test.images)) == (n_train, n_test)
    train_chars = {str(data.names[c]) for c in train.characters}
    test_chars = {str(data.names[c]) for c in test.characters}
    assert len(train_chars) == n_train // 4 and len(test_chars) == n_test // 4
    assert not train_chars & test_chars
    if split == "lake":
        assert all(c.startswith("images_background/") for c in train_chars)
        assert all(c.startswith("images_evaluation/") for c in test_chars)


@pytest.mark.integration
def test_real_vinyals_split_is_seeded(real_omniglot: tuple[Path, Path, Preprocessed]) -> None:
    source, cache, _ = real_omniglot

    def test_characters(seed: int) -> np.ndarray:
        return (
            Omniglot(data_dir=str(source), cache_dir=str(cache), download=False, seed=seed)
            .classes("test")
            .characters
        )

    np.testing.assert_array_equal(test_characters(0), test_characters(0))
    assert not np.array_equal(test_characters(0), test_characters(1))


@pytest.mark.integration
def test_real_rotations_and_pixels(real_omniglot: tuple[Path, Path, Preprocessed]) -> None:
    source, cache, data = real_omniglot
    test = Omniglot(data_dir=str(source), cache_dir=str(cache), download=False).classes("test")
    for c in (0, 4 * 100, 4 * 422):
        base = data.images[test.characters[c]]
        np.testing.assert_array_equal(test.images[c, ..., 0], base)
        for k in (1, 2, 3):
            assert test.rotations[c + k] == k
            np.testing.assert_array_equal(test.images[c + k, ..., 0], np.rot90(base, k, (1, 2)))
        assert not np.array_equal(test.images[c + 1], test.images[c])
    # inverted: mostly background (0), strokes near 1
    mean = data.images.mean() / 255
    assert 0.02 < mean < 0.3 and data.images.max() == 255


@pytest.mark.integration
def test_real_second_start_is_fast(real_omniglot: tuple[Path, Path, Preprocessed]) -> None:
    source, cache, data = real_omniglot
    omniglot._PREPROCESSED.clear()
    start = time.perf_counter()
    again = load_preprocessed(source, cache / "preprocessed")
    assert not again.built and again.path == data.path
    assert time.perf_counter() - start < 3.0  # ~0.05 s when the machine is idle


@pytest.mark.integration
def test_real_sampling_is_cheap(real_omniglot: tuple[Path, Path, Preprocessed]) -> None:
    """A meta-batch of 32 5-way 1-shot tasks: budget 5% of a ~130 ms meta step."""
    source, cache, _ = real_omniglot
    domain = Omniglot(data_dir=str(source), cache_dir=str(cache), download=False)
    rng = np.random.default_rng(0)
    check_tasks_real = domain.sample(rng, 32)
    assert check_tasks_real.support_x.shape == (32, 5, 28, 28, 1)
    times = []
    for _ in range(50):
        start = time.perf_counter()
        domain.sample(rng, 32)
        times.append(time.perf_counter() - start)
    assert float(np.median(times)) < 0.05 * 0.130


def test_sampled_tasks_fit_the_model(tiny_omniglot: Path, tmp_path: Path) -> None:
    """The sampled arrays go straight into the Omniglot conv net and the xent loss (eager)."""
    from dmaml_core.maml import task_losses, tile, to_tensors

    domain = tiny(tiny_omniglot, tmp_path)
    model = domain.model()
    tasks = domain.sample(np.random.default_rng(0), 3)
    weights = tile(to_tensors(model.init(0)), 3)
    assert model.apply(weights, tasks.support_x).shape == (3, 5, 5)
    losses, accuracy = task_losses(model, domain.loss, weights, tasks.query_x, tasks.query_y)
    assert losses.shape == (3,) and np.isfinite(losses.numpy()).all()
    assert ((accuracy.numpy() >= 0) & (accuracy.numpy() <= 1)).all()


def test_prepare_images_gives_what_the_tasks_hold(tiny_omniglot: Path, tmp_path: Path) -> None:
    """Every image a task holds is an archive PNG through ``prepare_images`` (rotated where the
    split adds rotations): outside images fed to exported weights look like training's."""
    pngs = []
    for name in ("images_background.zip", "images_evaluation.zip"):
        with zipfile.ZipFile(tiny_omniglot / name) as archive:
            pngs += [archive.read(m) for m in archive.namelist() if m.endswith(".png")]
    prepared = omniglot.prepare_images(pngs)
    assert prepared.shape == (len(pngs), 28, 28, 1) and prepared.dtype == np.float32
    rotations = [np.rot90(prepared, k, axes=(1, 2)) for k in range(4)]
    known = {image.tobytes() for rotated in rotations for image in rotated}
    tasks = tiny(tiny_omniglot, tmp_path).sample(np.random.default_rng(0), 4)
    for image in np.asarray(tasks.support_x).reshape(-1, 28, 28, 1):
        assert image.tobytes() in known
