import numpy as np
import tensorflow as tf

from dmaml_core.optim import adam_init, adam_update


def test_adam_matches_keras_adam() -> None:
    rng = np.random.default_rng(0)
    start = [
        rng.standard_normal((3, 2)).astype(np.float32),
        rng.standard_normal(2).astype(np.float32),
    ]
    variables = [tf.Variable(p) for p in start]
    keras_adam = tf.keras.optimizers.Adam(learning_rate=0.01, epsilon=1e-7)
    params = [tf.constant(p) for p in start]
    state = adam_init(params)
    for _ in range(5):
        grads = [tf.constant(rng.standard_normal(p.shape).astype(np.float32)) for p in start]
        keras_adam.apply_gradients(zip(grads, variables, strict=True))
        params, state = adam_update(grads, state, params, 0.01)
    for p, v in zip(params, variables, strict=True):
        np.testing.assert_allclose(p.numpy(), v.numpy(), rtol=1e-5, atol=1e-6)
    assert float(state.count) == 5.0
