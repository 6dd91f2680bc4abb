"""miniImageNet domain on small generated fixtures in both supported formats."""

from __future__ import annotations

import csv
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dmaml_core.maml import MamlConfig
from dmaml_core.models import ConvNet
from dmaml_core.tasks import make_domain, miniimagenet
from dmaml_core.tasks.miniimagenet import (
    THESIS_SETTINGS,
    MiniImageNet,
    find_miniimagenet,
    load_split,
)
from dmaml_core.tasks.omniglot import DatasetFormatError, DatasetNotFoundError

CLASSES = {"train": 6, "val": 5, "test": 5}
PER_CLASS = 4


def class_colour(split: str, c: int) -> int:
    return 10 * ("train", "val", "test").index(split) + 40 * c


def write_csv_dataset(folder: Path, size: int = 40) -> None:
    """Ravi & Larochelle's layout: images/<file>.jpg (not yet 84x84 here) + <split>.csv.
    Each class is a flat colour, so a sampled image tells which class it came from."""
    (folder / "images").mkdir(parents=True)
    for split, n_classes in CLASSES.items():
        with (folder / f"{split}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["filename", "label"])
            for c in range(n_classes):
                label = f"n{split}{c:04d}"
                for i in range(PER_CLASS):
                    name = f"{label}{i:08d}.png"
                    colour = (class_colour(split, c), 7 * i, 255)
                    Image.new("RGB", (size, size), colour).save(folder / "images" / name)
                    writer.writerow([name, label])


def write_pickle_dataset(folder: Path) -> None:
    """The pickle format; class c, image i has every pixel = 20 * c + i (to check the sampler)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n_classes in CLASSES.items():
        counts = [PER_CLASS + c for c in range(n_classes)]  # uneven on purpose
        values = [20 * c + i for c in range(n_classes) for i in range(counts[c])]
        images = np.array(values, np.uint8)[:, None, None, None] * np.ones((1, 84, 84, 3), np.uint8)
        class_dict, start = {}, 0
        for c, n in enumerate(counts):
            class_dict[f"n{split}{c:04d}"] = list(range(start, start + n))
            start += n
        with (folder / f"mini-imagenet-cache-{split}.pkl").open("wb") as handle:
            pickle.dump({"image_data": images, "class_dict": class_dict}, handle)


def test_csv_format(tmp_path: Path) -> None:
    write_csv_dataset(tmp_path / "data")
    domain = MiniImageNet(k_query=2, data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "c"))
    tasks = domain.sample(np.random.default_rng(0), 3, "train")
    assert tasks.support_x.shape == (3, 5, 84, 84, 3) and tasks.query_x.shape == (3, 10, 84, 84, 3)
    assert tasks.support_x.dtype == np.float32 and tasks.query_y.dtype == np.int32
    assert tasks.support_x.min() >= 0.0 and tasks.support_x.max() <= 1.0
    # the blue channel is 255 everywhere -> 1.0; red encodes the class: consistent with labels
    assert np.allclose(tasks.query_x[..., 2], 1.0)
    red = np.rint(tasks.query_x[:, :, 40, 40, 0] * 255).astype(int)
    for t in range(3):
        for label in range(5):
            assert len(set(red[t][tasks.query_y[t] == label])) == 1
    data = domain.classes("train")
    assert len(data.labels) == 6 and data.counts.tolist() == [PER_CLASS] * 6
    assert domain.classes("test").labels[0] == "ntest0000"
    assert MiniImageNet(data_dir=str(tmp_path / "data"), test_split="val").classes(
        "test"
    ).labels == [f"nval{c:04d}" for c in range(5)]


def test_csv_decoded_split_is_cached(tmp_path: Path) -> None:
    write_csv_dataset(tmp_path / "data")
    cache = tmp_path / "cache"
    first = load_split(tmp_path / "data", "train", cache_dir=cache)
    (npz,) = cache.glob("miniimagenet-train-*.npz")
    miniimagenet._LOADED.clear()
    for image in (tmp_path / "data" / "images").glob("*.png"):
        os.utime(image, (1e9, 1e9))  # same bytes, another mtime: the cache key moves on
    rebuilt = load_split(tmp_path / "data", "train", cache_dir=cache)
    assert len(list(cache.glob("miniimagenet-train-*.npz"))) == 2
    np.testing.assert_array_equal(first.images, rebuilt.images)
    miniimagenet._LOADED.clear()
    npz.unlink()
    again = load_split(tmp_path / "data", "train", cache_dir=cache)
    np.testing.assert_array_equal(first.images, again.images)


def test_pickle_format_tasks_are_valid(tmp_path: Path) -> None:
    write_pickle_dataset(tmp_path / "data")
    domain = make_domain("miniimagenet", k_query=3, data_dir=str(tmp_path / "data"))
    assert isinstance(domain, MiniImageNet)
    tasks = domain.sample(np.random.default_rng(1), 50, "train")
    for t in range(50):
        s_ids = np.rint(tasks.support_x[t, :, 0, 0, 0] * 255).astype(int)
        q_ids = np.rint(tasks.query_x[t, :, 0, 0, 0] * 255).astype(int)
        assert not set(s_ids) & set(q_ids)
        assert len(set(q_ids)) == len(q_ids)
        pairs = set(zip(s_ids // 20, tasks.support_y[t], strict=True))
        pairs |= set(zip(q_ids // 20, tasks.query_y[t], strict=True))
        assert len(pairs) == 5 and len({c for c, _ in pairs}) == 5
    a = domain.sample(np.random.default_rng(3), 4, "test")
    b = domain.sample(np.random.default_rng(3), 4, "test")
    np.testing.assert_array_equal(a.query_x, b.query_x)


def test_missing_data_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        MiniImageNet(data_dir=str(tmp_path)).sample(np.random.default_rng(0), 1)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "train.csv" in message and "mini-imagenet-cache-" in message


def test_corrupted_pickle_error(tmp_path: Path) -> None:
    bad = tmp_path / "mini-imagenet-cache-train.pkl"
    bad.write_bytes(b"\x80\x04garbage")
    assert find_miniimagenet(tmp_path, ("train",)) == tmp_path
    with pytest.raises(DatasetFormatError, match="not a readable miniImageNet pickle") as info:
        load_split(tmp_path, "train")
    assert str(bad) in str(info.value)


def test_csv_with_missing_image_error(tmp_path: Path) -> None:
    write_csv_dataset(tmp_path / "data")
    victim = next((tmp_path / "data" / "images").glob("ntrain0000*.png"))
    victim.unlink()
    with pytest.raises(DatasetFormatError, match=r"listed in .*train\.csv but missing"):
        load_split(tmp_path / "data", "train")


def test_thesis_preset_and_model() -> None:
    assert THESIS_SETTINGS["alpha"] == 0.4 and THESIS_SETTINGS["k_query"] == 15
    assert THESIS_SETTINGS["tasks_per_step"] == 4 and THESIS_SETTINGS["inner_steps"] == 5
    assert THESIS_SETTINGS["val_steps"] == 10
    domain = MiniImageNet()
    assert domain.k_query == THESIS_SETTINGS["k_query"] and domain.loss == "xent"
    model = domain.model()
    assert isinstance(model, ConvNet) and (model.image_size, model.channels) == (84, 3)
    cfg = MamlConfig(
        alpha=THESIS_SETTINGS["alpha"], inner_steps=THESIS_SETTINGS["inner_steps"], loss="xent"
    )
    assert cfg.alpha == 0.4
    assert pickle.loads(pickle.dumps(domain)) == domain
