"""device_info and its pieces: TensorFlow's oneDNN rule, XLA flags, CPU flags."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.machine import cpu_flags, device_info, onednn_state, xla_state

VNNI = frozenset({"avx2", "fma", "avx512f", "avx512_vnni"})
PLAIN_AVX2 = frozenset({"avx2", "fma"})


@pytest.mark.parametrize(
    "flags,env,linux,enabled,why",
    [
        (VNNI, None, True, True, "default on Linux for a CPU with avx512_vnni"),
        (PLAIN_AVX2, None, True, False, "default: off"),
        (VNNI, None, False, False, "default: off"),  # Windows: off by default
        (VNNI, "0", True, False, "TF_ENABLE_ONEDNN_OPTS=0"),
        (PLAIN_AVX2, "true", True, True, "TF_ENABLE_ONEDNN_OPTS=true"),
        (VNNI, "yes", True, True, "is not 0/1/true/false, so TensorFlow's default"),
    ],
)
def test_onednn_follows_tensorflows_rule(
    flags: frozenset[str], env: str | None, linux: bool, enabled: bool, why: str
) -> None:
    state = onednn_state(flags, env, linux)
    assert state["enabled"] is enabled
    assert why in state["why"]


@pytest.mark.parametrize(
    "flags,auto_jit",
    [
        (None, False),
        ("--tf_xla_auto_jit=2", True),
        ("--tf_xla_auto_jit=fusible --tf_xla_cpu_global_jit", True),
        ("--tf_xla_auto_jit=0", False),
        ("--tf_xla_cpu_global_jit", True),
        ("--xla_gpu_autotune_level=0", False),
    ],
)
def test_xla_auto_jit_from_flags(flags: str | None, auto_jit: bool) -> None:
    assert xla_state(flags) == {"auto_jit": auto_jit, "TF_XLA_FLAGS": flags}


def test_device_info_is_cached_and_complete() -> None:
    info = device_info()
    assert device_info() is info  # computed once per process
    assert info["kind"] in ("cpu", "gpu") and info["name"]
    assert set(info["cpu_flags"]) == {"avx2", "avx512f", "fma"}
    assert isinstance(info["gpus"], list) and isinstance(info["gpus_present"], list)
    if os.path.exists("/proc/cpuinfo"):
        assert info["cpu_flags"]["avx2"] == ("avx2" in cpu_flags())


@pytest.mark.slow
def test_predicted_onednn_matches_tensorflow() -> None:
    """The prediction from the environment (used before TensorFlow is imported) agrees with
    what TensorFlow reports once loaded, in a fresh process so its once-only check is fresh."""
    code = (
        "import os, sys; from harness.machine import cpu_flags, onednn_state;"
        "p = onednn_state(cpu_flags(), os.environ.get('TF_ENABLE_ONEDNN_OPTS'),"
        " sys.platform.startswith('linux'))['enabled'];"
        "from tensorflow.python.util import _pywrap_util_port as u;"
        "print(p, u.IsMklEnabled())"
    )
    for value in (None, "0"):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        env.pop("TF_ENABLE_ONEDNN_OPTS", None)
        if value is not None:
            env["TF_ENABLE_ONEDNN_OPTS"] = value
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
        )
        assert out.returncode == 0, out.stderr[-2000:]
        predicted, actual = out.stdout.split()
        assert predicted == actual, (value, out.stdout)
