"""Measuring one run: wall and CPU time, peak memory (kernel-tracked), GPU figures via NVML.

This is the only module that imports ``pynvml`` (from nvidia-ml-py). Where there is no GPU, no
driver or no library, every GPU field says so plainly (``{"available": False, "reason": ...}``)
and nothing fails.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

SAMPLE_INTERVAL_S = 0.02
CHILDREN_REFRESH_S = 5.0


def _nvml() -> tuple[Any, str]:
    """(pynvml module after nvmlInit, "") or (None, why not)."""
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py (pynvml) is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as err:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None, f"NVML unavailable: {err}"
    return pynvml, ""


def gpu_info() -> dict[str, Any]:
    nvml, reason = _nvml()
    if nvml is None:
        return {"available": False, "reason": reason}
    try:
        count = nvml.nvmlDeviceGetCount()
        if count == 0:
            return {"available": False, "reason": "NVML found no GPU"}
        devices = []
        for i in range(count):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            name = nvml.nvmlDeviceGetName(handle)
            devices.append(
                {
                    "index": i,
                    "name": name.decode() if isinstance(name, bytes) else str(name),
                    "memory_total_bytes": int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
                }
            )
        driver = nvml.nvmlSystemGetDriverVersion()
        return {
            "available": True,
            "driver": driver.decode() if isinstance(driver, bytes) else str(driver),
            "devices": devices,
        }
    finally:
        nvml.nvmlShutdown()


def _status_kib(pid: int, field_name: str) -> int:
    """One ``VmXXX:`` field of /proc/PID/status in KiB (0 when the process has gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def _reset_peak(pid: int) -> bool:
    """Reset the kernel's peak RSS (VmHWM) of ``pid`` to its current RSS (Linux >= 4.0)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class PeakRss:
    """Peak resident memory of this process and its children between ``reset()`` and ``read()``.

    Where Linux lets us reset VmHWM (``/proc/PID/clear_refs``), the kernel tracks every peak
    exactly and nothing runs inside the measured region: a polling thread there competed for the
    GIL with runs of a few ms and, with psutil's scan of every process for children, added about
    0.5 ms per run on 2 cores. The figure is then the sum of each process's own peak, an upper
    bound of the peak of the sum. Elsewhere a thread samples the sum every ``interval_s``
    (``method`` says which).
    """

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.process = psutil.Process()
        self.interval_s = interval_s
        self.kernel = sys.platform.startswith("linux") and _reset_peak(self.process.pid)
        self.method = "kernel" if self.kernel else "sampled"
        self.peak = 0
        self._pids: list[int] = []
        self._children: list[psutil.Process] = []
        self._children_at = -float("inf")

    def processes(self) -> list[psutil.Process]:
        """This process and its descendants. psutil finds children by reading every process's
        /proc entry (about 2 ms here), and that time between two runs slowed the next one (TF's
        thread pools go to sleep), so the list is refreshed at most every ``CHILDREN_REFRESH_S``:
        worker processes start with the backend, before the first measured run."""
        now = time.monotonic()
        if now - self._children_at >= CHILDREN_REFRESH_S:
            self._children = self.process.children(recursive=True)
            self._children_at = now
        return [self.process, *self._children]

    def _current(self) -> int:
        total = 0
        for proc in self.processes():
            try:
                total += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total

    def reset(self) -> None:
        self.peak = 0
        if self.kernel:
            self._pids = [proc.pid for proc in self.processes()]
            for pid in self._pids:
                _reset_peak(pid)
        else:
            self.poll()

    def poll(self) -> None:
        """Fold the current sum into the peak (the sampled method; a no-op under the kernel's)."""
        if not self.kernel:
            self.peak = max(self.peak, self._current())

    def read(self) -> int:
        if not self.kernel:
            self.poll()
            return self.peak
        pids = set(self._pids) | {proc.pid for proc in self.processes()}
        return sum(_status_kib(pid, "VmHWM") for pid in pids) * 1024


@dataclass
class Sample:
    peak_rss_bytes: int = 0  # driver + all its child processes (see PeakRss)
    gpu_util_max_pct: list[float] = field(default_factory=list)
    gpu_mem_max_bytes: list[int] = field(default_factory=list)


class Sampler:
    """Peak memory and, where NVML works, peak GPU utilisation and memory between ``start()``
    and ``stop()``. A background thread polls only when something must be polled (GPU figures,
    or memory where the kernel cannot track its peak); it is started once and kept, since
    starting a thread per run put its start-up inside the next timed region."""

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.memory = PeakRss(interval_s)
        self._nvml, self.gpu_reason = _nvml()
        self._handles: list[Any] = []
        if self._nvml is not None:
            count = self._nvml.nvmlDeviceGetCount()
            self._handles = [self._nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        self.sample = Sample(0, [0.0] * len(self._handles), [0] * len(self._handles))
        self._active = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def polls(self) -> bool:
        return bool(self._handles) or not self.memory.kernel

    def poll(self) -> None:
        with self._lock:
            self.memory.poll()
            for i, handle in enumerate(self._handles):
                util = self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu
                used = self._nvml.nvmlDeviceGetMemoryInfo(handle).used
                self.sample.gpu_util_max_pct[i] = max(self.sample.gpu_util_max_pct[i], float(util))
                self.sample.gpu_mem_max_bytes[i] = max(self.sample.gpu_mem_max_bytes[i], int(used))

    def _loop(self) -> None:
        while not self._closed.wait(self.interval_s):
            if self._active.is_set():
                self.poll()

    def start(self) -> None:
        with self._lock:
            self.sample = Sample(0, [0.0] * len(self._handles), [0] * len(self._handles))
            self.memory.reset()
        self.poll()
        if self.polls and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="peak-sampler", daemon=True)
            self._thread.start()
        self._active.set()

    def stop(self) -> Sample:
        self._active.clear()
        self.poll()
        with self._lock:
            self.sample.peak_rss_bytes = self.memory.read()
            # a copy: a poll already under way must not change what this run reports
            return Sample(
                self.sample.peak_rss_bytes,
                list(self.sample.gpu_util_max_pct),
                list(self.sample.gpu_mem_max_bytes),
            )

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._nvml is not None:
            self._nvml.nvmlShutdown()
            self._nvml = None


@dataclass
class Measurement:
    wall_s: float
    driver_cpu_s: float
    peak_rss_bytes: int
    gpu: dict[str, Any]
    peak_rss_method: str = "kernel"  # PeakRss.method: kernel-tracked peaks, or sampled


class RunMeter:
    """``with meter: learner.run()`` then ``meter.result``: one run's wall, CPU, memory, GPU."""

    def __init__(self) -> None:
        self.sampler = Sampler()
        self.process = psutil.Process()
        self.result: Measurement | None = None

    def __enter__(self) -> RunMeter:
        self._cpu = self.process.cpu_times()
        self.sampler.start()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._start
        sample = self.sampler.stop()
        cpu = self.process.cpu_times()
        gpu: dict[str, Any]
        if self.sampler._handles:
            gpu = {
                "available": True,
                "util_max_pct": sample.gpu_util_max_pct,
                "mem_max_bytes": sample.gpu_mem_max_bytes,
            }
        else:
            gpu = {"available": False, "reason": self.sampler.gpu_reason}
        self.result = Measurement(
            wall_s=wall,
            driver_cpu_s=(cpu.user - self._cpu.user) + (cpu.system - self._cpu.system),
            peak_rss_bytes=sample.peak_rss_bytes,
            gpu=gpu,
            peak_rss_method=self.sampler.memory.method,
        )

    def close(self) -> None:
        self.sampler.close()
