import numpy as np

from harness.machine import git_info, machine_info
from harness.measure import RunMeter, gpu_info


def test_no_gpu_is_said_plainly() -> None:
    info = gpu_info()
    assert info["available"] is False
    assert "NVML" in info["reason"] or "nvidia-ml-py" in info["reason"]


def test_meter_sees_a_short_memory_peak() -> None:
    meter = RunMeter()
    with meter:
        pass
    assert meter.result is not None
    idle = meter.result.peak_rss_bytes
    with meter:
        block = np.ones(300 * 2**20 // 8)  # 300 MiB, freed before the block ends
        del block
    assert meter.result.peak_rss_bytes > idle + 200 * 2**20
    assert meter.result.wall_s > 0 and meter.result.driver_cpu_s >= 0
    assert meter.result.gpu["available"] is False
    meter.close()


def test_machine_info_is_complete() -> None:
    info = machine_info()
    assert info["logical_cores"] >= 1 and info["memory_bytes"] > 0
    assert "tensorflow-cpu" in info["versions"] or "tensorflow" in info["versions"]
    assert len(git_info()["commit"]) in (40, 7)  # a sha, or 'unknown' outside git
