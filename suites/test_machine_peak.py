"""What this machine can do at best: float32 GEMM throughput through TensorFlow, and what it makes
the arithmetic floor of the Omniglot meta step (issue 2 quotes "about 5 GFLOP and 10.5 GFLOP at
about 300 GFLOP/s"; the floor here is those FLOPs at the GEMM rate measured here).

The FLOP count is exact for the convolutions and the dense head of one first-order step (support
and query: forward, filter gradients, input gradients except into the images); the second-order
figure adds the support pass differentiated a second time (reverse over reverse: each conv of its
forward and of its backward pass yields two more products of the same size), an estimate that
ignores batch norm and elementwise ops.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from typing import Any

import tensorflow as tf

from dmaml_core.models import ConvNet, omniglot_convnet

GEMM_SIZE = 1024


def forward_macs(net: ConvNet) -> list[int]:
    """Multiply-adds per image of each conv layer and of the dense head."""
    macs, side, c_in = [], net.image_size, net.channels
    for _ in range(net.blocks):
        side = -(-side // net.stride)
        macs.append(side * side * 9 * c_in * net.filters)
        if net.max_pool:
            side //= 2
        c_in = net.filters
    macs.append(net.feature_size() * net.n_way)
    return macs


def step_gflop(net: ConvNet, images_per_pass: int, order: int) -> float:
    """FLOPs (1e9) of one meta step: forward, filter gradients, input gradients (none into the
    images), once on the support and once on the query images; order 2 adds the support pass
    (forward and backward) differentiated again: two products per conv of that pass."""
    per_layer = forward_macs(net)
    forward = sum(per_layer)
    backward = forward + sum(per_layer[1:])
    pass_macs = forward + backward
    total = 2 * pass_macs + (2 * pass_macs if order == 2 else 0)
    return 2.0 * total * images_per_pass / 1e9


def check_flop_count_by_hand(net: ConvNet) -> None:
    """28 -> 14 -> 7 -> 4 -> 2 pixels a side, 3x3 kernels, 1 then 64 input channels, 64 filters."""
    by_hand = [14 * 14 * 9 * 1 * 64, 7 * 7 * 9 * 64 * 64, 4 * 4 * 9 * 64 * 64, 2 * 2 * 9 * 64 * 64]
    assert forward_macs(net) == [*by_hand, 2 * 2 * 64 * 5]
    forward = sum(by_hand) + 2 * 2 * 64 * 5
    backward = 2 * forward - by_hand[0]  # filter and input gradients, none into the images
    assert step_gflop(net, 160, 1) == 2 * 2 * (forward + backward) * 160 / 1e9


def test_gemm_peak_and_step_floor(benchmark: Any) -> None:
    net = omniglot_convnet()
    check_flop_count_by_hand(net)
    a = tf.random.normal([GEMM_SIZE, GEMM_SIZE])
    b = tf.random.normal([GEMM_SIZE, GEMM_SIZE])
    matmul = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
    matmul(a, b).numpy()  # trace
    benchmark.group = "machine peak"
    benchmark.pedantic(lambda: matmul(a, b).numpy(), rounds=30, iterations=1, warmup_rounds=3)
    if not benchmark.stats:  # pytest-benchmark disabled: the GEMM ran once, nothing to report
        return
    gflops = 2 * GEMM_SIZE**3 / float(benchmark.stats.stats.median) / 1e9
    images = 32 * 5  # 32 tasks x 5 images, in the support and in the query pass
    first, second = step_gflop(net, images, 1), step_gflop(net, images, 2)
    benchmark.extra_info.update(
        {
            "gemm": f"{GEMM_SIZE}^3 float32 tf.matmul",
            "gemm_gflops": gflops,
            "omniglot_step_gflop_order1": first,
            "omniglot_step_gflop_order2_estimate": second,
            "omniglot_floor_ms_order1": first / gflops * 1e3,
            "omniglot_floor_ms_order2_estimate": second / gflops * 1e3,
            "tf_version": tf.__version__,
            "cpu_count": os.cpu_count(),
        }
    )
    assert gflops > 0
