import numpy as np
import pytest
import tensorflow as tf

from dmaml_core.models import (
    MLP,
    ConvNet,
    miniimagenet_convnet,
    omniglot_convnet,
    task_batch_norm,
    task_conv3x3,
)


@pytest.mark.parametrize("size,stride", [(28, 2), (14, 2), (7, 2), (4, 2), (9, 1), (8, 1), (5, 2)])
def test_task_conv_matches_tf_conv2d_per_task(size: int, stride: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, size, size, 4)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 4, 5)).astype(np.float32)
    got = task_conv3x3(tf.constant(x), tf.constant(w), stride).numpy()
    for t in range(3):
        want = tf.nn.conv2d(x[t], w[t], stride, "SAME").numpy()
        np.testing.assert_allclose(got[t], want, rtol=1e-5, atol=1e-5)


def test_task_batch_norm_normalises_each_task_with_its_own_statistics() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 4, 5)) * np.array([1.0, 7.0])[:, None, None, None, None] + 3
    scale = rng.standard_normal((2, 5))
    offset = rng.standard_normal((2, 5))
    got = task_batch_norm(tf.constant(x), tf.constant(scale), tf.constant(offset)).numpy()
    for t in range(2):
        mean = x[t].mean(axis=(0, 1, 2))
        var = x[t].var(axis=(0, 1, 2))
        want = (x[t] - mean) / np.sqrt(var + 1e-3) * scale[t] + offset[t]
        np.testing.assert_allclose(got[t], want, rtol=1e-10)


def test_model_shapes_and_parameter_counts() -> None:
    mlp = MLP((1, 40, 40, 1))
    assert [w.shape for w in mlp.init(0)] == [(1, 40), (40,), (40, 40), (40,), (40, 1), (1,)]
    omni = omniglot_convnet(5)
    assert omni.feature_size() == 2 * 2 * 64
    mini = miniimagenet_convnet(5)
    assert mini.feature_size() == 5 * 5 * 32
    for model, shape in [(omni, (28, 28, 1)), (mini, (84, 84, 3))]:
        weights = [tf.constant(np.stack([w, w])) for w in model.init(0)]
        out = model.apply(weights, tf.zeros((2, 3, *shape)))
        assert out.shape == (2, 3, 5)


def test_init_is_seeded() -> None:
    a, b, c = (ConvNet(3, 8, 1, 4).init(s) for s in (0, 0, 1))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])
