"""Measuring one run: wall and CPU time, peak memory (a sampler thread), GPU figures via NVML.

This is the only module that imports ``pynvml`` (from nvidia-ml-py). Where there is no GPU, no
driver or no library, every GPU field says so plainly (``{"available": False, "reason": ...}``)
and nothing fails.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

SAMPLE_INTERVAL_S = 0.02


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


@dataclass
class Sample:
    peak_rss_bytes: int = 0  # driver + all its child processes, summed
    gpu_util_max_pct: list[float] = field(default_factory=list)
    gpu_mem_max_bytes: list[int] = field(default_factory=list)


class Sampler:
    """Polls memory (and GPU utilisation where NVML works) in a background thread, so the peak
    between start and stop is seen, not one reading at the end."""

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.process = psutil.Process()
        self.sample = Sample()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml, self.gpu_reason = _nvml()
        self._handles: list[Any] = []
        if self._nvml is not None:
            count = self._nvml.nvmlDeviceGetCount()
            self._handles = [self._nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self.sample.gpu_util_max_pct = [0.0] * count
            self.sample.gpu_mem_max_bytes = [0] * count

    def _rss(self) -> int:
        total = 0
        for proc in [self.process, *self.process.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total

    def poll(self) -> None:
        self.sample.peak_rss_bytes = max(self.sample.peak_rss_bytes, self._rss())
        for i, handle in enumerate(self._handles):
            util = self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu
            used = self._nvml.nvmlDeviceGetMemoryInfo(handle).used
            self.sample.gpu_util_max_pct[i] = max(self.sample.gpu_util_max_pct[i], float(util))
            self.sample.gpu_mem_max_bytes[i] = max(self.sample.gpu_mem_max_bytes[i], int(used))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def start(self) -> None:
        self.sample = Sample(0, [0.0] * len(self._handles), [0] * len(self._handles))
        self._stop.clear()
        self.poll()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> Sample:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.poll()
        return self.sample

    def close(self) -> None:
        if self._nvml is not None:
            self._nvml.nvmlShutdown()
            self._nvml = None


@dataclass
class Measurement:
    wall_s: float
    driver_cpu_s: float
    peak_rss_bytes: int
    gpu: dict[str, Any]


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
        )

    def close(self) -> None:
        self.sampler.close()
