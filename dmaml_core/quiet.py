"""Quiet TensorFlow start-up, for the driver and for every worker process.

TensorFlow greets every process with absl/oneDNN/CPU-feature lines on stderr. They are not ours to
print, they drown the one line a user needs, and with TensorFlow 2.21 ``TF_CPP_MIN_LOG_LEVEL`` no
longer hides them: they are written by the C++ library while it loads, before absl's logging is
initialised, so they ignore every log level. So ``quiet_startup`` (1) sets
``TF_CPP_MIN_LOG_LEVEL`` for everything later (worker processes inherit it), (2) sets absl's
Python logging to errors, and (3) runs TensorFlow's first import, whenever something needs it,
with file descriptor 2 pointed at a temporary file that is replayed if the import fails, so a
broken install still says why. A user who sets ``TF_CPP_MIN_LOG_LEVEL=0`` (show everything) gets
TensorFlow's output untouched.

The driver calls it first thing (``harness.__main__``); ``dmaml_core/__init__.py`` calls it in
any process that inherited a non-zero ``TF_CPP_MIN_LOG_LEVEL``, which is how spawned worker
processes (which import TensorFlow while they are being started) stay quiet too.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any, BinaryIO


@contextlib.contextmanager
def stderr_captured() -> Iterator[BinaryIO]:
    """Point file descriptor 2 (what C++ libraries write to) at a temporary file meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield sink
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader of ``tensorflow`` with stderr captured (see the module docstring)."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        error: BaseException | None = None
        with stderr_captured() as sink:
            try:
                self._loader.exec_module(module)
                # The CUDA-capable wheel logs "failed call to cuInit" on a machine without a GPU
                # when the devices are first listed, i.e. at the first op: list them now, while
                # fd 2 is still captured.
                module.config.list_physical_devices()
            except BaseException as err:
                error = err
                sink.seek(0)
                captured = sink.read()
        if error is not None:  # show what TensorFlow said, then the import error itself
            sys.stderr.write(captured.decode(errors="replace"))
            raise error

    def __getattr__(self, name: str) -> Any:  # resource readers and the like: the real loader's
        return getattr(self._loader, name)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` like the rest of ``sys.meta_path`` would, with a quiet loader; only
    the first import, whenever some command needs it (``list`` and ``--help`` never pay for it)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _NoIntendedRetracingWarning(logging.Filter):
    """Drops TensorFlow's "N out of the last M calls to <function> triggered tf.function
    retracing" warning. ``maml.CompiledMaml`` traces once per layout candidate and per chunk shape
    on purpose (it never lets a traced function generalise a shape, see its docstring), and says
    which layout ran in every record; the warning would advise the opposite."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def quiet_startup() -> None:
    """Silence TensorFlow's and absl's start-up output before TensorFlow is first imported."""
    # hides info and warnings, errors still show; inherited by worker processes
    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging as absl_logging  # a TensorFlow dependency, cheap to import

    absl_logging.set_verbosity(absl_logging.ERROR)
    tf_logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _NoIntendedRetracingWarning) for f in tf_logger.filters):
        tf_logger.addFilter(_NoIntendedRetracingWarning())
    if level.strip() == "0" or "tensorflow" in sys.modules:  # 0: the user asked for everything
        return
    if not any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())
