"""Fixtures for the image domains: tiny generated Omniglot / miniImageNet archives (fast, always
available) and the real Omniglot preprocessed once per session (integration tests)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dmaml_core.tasks import miniimagenet, omniglot
from dmaml_core.tasks.omniglot import Omniglot, Preprocessed, shared_data_candidates


def random_png(rng: np.random.Generator, size: int = 105) -> bytes:
    """A 1-bit PNG like Omniglot's: white background, a few black strokes (random blocks)."""
    pixels = np.ones((size, size), bool)
    for _ in range(4):
        y, x = rng.integers(0, size - 20, size=2)
        pixels[y : y + 20, x : x + 6] = False
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


def write_omniglot_zip(
    path: Path, alphabets: int, characters: int, first_id: int, seed: int
) -> int:
    """An archive with Omniglot's layout; returns the next free character id."""
    rng = np.random.default_rng(seed)
    set_name = path.name.removesuffix(".zip")
    char_id = first_id
    with zipfile.ZipFile(path, "w") as archive:
        for a in range(alphabets):
            for c in range(characters):
                folder = f"{set_name}/Alphabet_{a}/character{c + 1:02d}"
                for drawer in range(1, 21):
                    archive.writestr(f"{folder}/{char_id:04d}_{drawer:02d}.png", random_png(rng))
                char_id += 1
    return char_id


@pytest.fixture(scope="session")
def tiny_omniglot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Background: 2 alphabets x 3 characters; evaluation: 1 x 3 (6 + 3 characters)."""
    folder = tmp_path_factory.mktemp("tiny_omniglot")
    next_id = write_omniglot_zip(folder / "images_background.zip", 2, 3, 1, seed=1)
    write_omniglot_zip(folder / "images_evaluation.zip", 1, 3, next_id, seed=2)
    return folder


@pytest.fixture(autouse=True)
def _fresh_module_caches() -> Iterator[None]:
    """Each test sees the per-process caches as a fresh process would (the real data set's arrays
    are kept across tests by the session fixture, which holds its own reference)."""
    caches: list[dict[Any, Any]] = [
        omniglot._PREPROCESSED,
        omniglot._RESOLVED,
        omniglot._SPLITS,
        miniimagenet._LOADED,
        miniimagenet._FOLDERS,
    ]
    saved = [dict(cache) for cache in caches]
    yield
    for cache, old in zip(caches, saved, strict=True):
        cache.clear()
        cache.update(old)


def real_omniglot_dir() -> Path | None:
    for folder in shared_data_candidates("omniglot"):
        if (folder / "images_background.zip").is_file():
            return folder
    return None


@pytest.fixture(scope="session")
def real_omniglot(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Preprocessed]:
    """(data dir, cache dir, preprocessed arrays) of the real data set, preprocessed once per
    test session into a temporary cache (about 15 s)."""
    source = real_omniglot_dir()
    if source is None:
        pytest.skip("the real Omniglot archives are not in ../shared/data/omniglot")
    cache = tmp_path_factory.mktemp("omniglot_cache")
    data = Omniglot(data_dir=str(source), cache_dir=str(cache), download=False).preprocessed()
    return source, cache, data
