import subprocess
import sys
import time

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


def test_sampled_peak_where_the_kernel_cannot_track_it() -> None:
    """The fallback (no /proc/PID/clear_refs): a thread polls the sum of RSS, started once."""
    meter = RunMeter()
    meter.sampler.memory.kernel = False
    meter.sampler.memory.method = "sampled"
    with meter:
        block = np.ones(300 * 2**20 // 8)
        time.sleep(0.1)  # long enough for the 20 ms poll to see it
        del block
    thread = meter.sampler._thread
    with meter:
        pass
    assert meter.sampler._thread is thread is not None  # one thread for every run
    assert meter.result is not None and meter.result.peak_rss_method == "sampled"
    meter.close()
    assert meter.sampler._thread is None


def test_kernel_peak_runs_no_thread_and_counts_a_child_process() -> None:
    """On Linux the kernel tracks each process's peak (VmHWM): nothing polls during a run, and a
    child's short peak inside the measured region is counted."""
    meter = RunMeter()
    if meter.sampler.memory.method != "kernel":  # not Linux: the sampled test covers it
        meter.close()
        return
    script = (
        "import sys, numpy as np\n"
        "sys.stdin.readline()\n"
        "b = np.ones(200 * 2**20 // 8); del b\n"
        "print('done', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        try:
            with meter:  # the child is up and idle
                time.sleep(0.5)
            assert meter.result is not None
            idle = meter.result.peak_rss_bytes
            with meter:
                child.stdin.write("go\n")
                child.stdin.flush()
                assert child.stdout.readline().strip() == "done"
            assert meter.sampler._thread is None
            assert meter.result.peak_rss_bytes > idle + 150 * 2**20
        finally:
            child.kill()
            meter.close()
