"""Who measured what, where: machine, library versions and git state, stored with every result."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

LIBRARIES = ("tensorflow-cpu", "tensorflow", "numpy", "scipy", "ray", "multiprocess", "gymnasium")
REPORTED_CPU_FLAGS = ("avx2", "avx512f", "fma")
# TensorFlow's own rule (DefaultOneDnnPolicy in tensorflow/core/util/util.cc): on Linux its oneDNN
# custom ops are on by default only for a CPU with one of these neural-network features;
# TF_ENABLE_ONEDNN_OPTS=0/1 (or false/true) overrides it, anything else keeps the default.
ONEDNN_DEFAULT_CPU_FLAGS = (
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def onednn_state(flags: frozenset[str], env: str | None, linux: bool) -> dict[str, Any]:
    """Whether TensorFlow's oneDNN custom ops are on, and why, by TensorFlow's rule (see
    ONEDNN_DEFAULT_CPU_FLAGS); they change both speed and rounding, so every record says."""
    features = sorted(f for f in ONEDNN_DEFAULT_CPU_FLAGS if f in flags)
    default = linux and bool(features)
    why = (
        f"TensorFlow's default on Linux for a CPU with {', '.join(features)}"
        if default
        else "TensorFlow's default: off (not Linux, or no AVX512-VNNI/BF16, AVX-VNNI or AMX)"
    )
    value = (env or "").strip().lower()
    if value in ("1", "true", "0", "false"):
        return {"enabled": value in ("1", "true"), "why": f"TF_ENABLE_ONEDNN_OPTS={env}"}
    if env is not None:
        why = f"TF_ENABLE_ONEDNN_OPTS={env!r} is not 0/1/true/false, so {why}"
    return {"enabled": default, "why": why}


def xla_state(flags: str | None) -> dict[str, Any]:
    """XLA auto-clustering from TF_XLA_FLAGS (a case's own ``jit_compile`` is in the case)."""
    words = (flags or "").split()
    auto_jit = any(
        w.split("=", 1)[1] not in ("0", "-1")
        for w in words
        if w.startswith("--tf_xla_auto_jit=") and "=" in w
    ) or any(w in ("--tf_xla_cpu_global_jit", "--tf_xla_cpu_global_jit=true") for w in words)
    return {"auto_jit": auto_jit, "TF_XLA_FLAGS": flags}


@functools.cache
def device_info() -> dict[str, Any]:
    """What the numbers ran on, for every record: device kind and name (the GPU TensorFlow uses,
    else the CPU model), oneDNN and XLA state and the CPU flags that decide TensorFlow's kernels.
    Cached: computed once per process (TensorFlow reads these settings once at start-up too).
    Where TensorFlow is already imported, its own answers (visible GPUs, oneDNN in force)
    replace the prediction from the environment."""
    flags = cpu_flags()
    onednn = onednn_state(
        flags, os.environ.get("TF_ENABLE_ONEDNN_OPTS"), sys.platform.startswith("linux")
    )
    from harness.measure import gpu_info  # the one module that talks to NVML

    present = [str(d["name"]) for d in gpu_info().get("devices", [])]
    gpus: list[str] = []
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        for i, gpu in enumerate(tf.config.list_physical_devices("GPU")):
            details = tf.config.experimental.get_device_details(gpu)
            nvml_name = present[i] if i < len(present) else gpu.name
            gpus.append(str(details.get("device_name", nvml_name)))
        try:
            from tensorflow.python.util import _pywrap_util_port

            onednn["enabled"] = bool(_pywrap_util_port.IsMklEnabled())
        except (ImportError, AttributeError):
            pass
    return {
        "kind": "gpu" if gpus else "cpu",
        "name": gpus[0] if gpus else cpu_model(),
        "gpus": gpus,  # the GPUs TensorFlow computes on
        "gpus_present": present,  # NVML: GPUs in the machine, used or not (e.g. tensorflow-cpu)
        "onednn": onednn,
        "xla": xla_state(os.environ.get("TF_XLA_FLAGS")),
        "cpu_flags": {f: f in flags for f in REPORTED_CPU_FLAGS},
    }


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_info(cwd: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the checkout; 'unknown' outside a git work tree. Without ``cwd``:
    the checkout this package runs from, and only that: an installed wheel is 'unknown' even
    when its environment happens to sit inside some other git work tree."""
    where = cwd or Path(__file__).resolve().parent.parent
    if cwd is None and not (where / ".git").exists():  # a wheel in site-packages, not a checkout
        return {"commit": "unknown", "dirty": None}

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=where, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


CODE_PACKAGES = ("dmaml_core", "harness")


def code_fingerprint() -> dict[str, Any]:
    """What code writes the records: the checkout's commit and a SHA-256 over the package files
    as they are on disk (relative path and bytes of every ``.py`` of ``CODE_PACKAGES``), so an
    edit without a commit, or an installed wheel, is told apart too. ``--resume`` compares it."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return {"commit": git_info()["commit"], "package_sha256": digest.hexdigest()}


def machine_info() -> dict[str, Any]:
    from harness.measure import gpu_info  # the one module that talks to NVML

    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_bytes": psutil.virtual_memory().total,
        "gpu": gpu_info(),
        "device": device_info(),
        "versions": library_versions(),
        "git": git_info(),
    }
