"""Adam as a pair of pure functions (optax style): ``adam_init(params)`` and ``adam_update(...)``.

The optimiser state is data, not a hidden ``tf.Variable`` inside a Keras object, so a worker can
keep it across runs, ship it between processes, and a compiled meta step can take it in and hand it
back.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf


class AdamState(NamedTuple):
    count: tf.Tensor  # float32 scalar: number of updates applied so far
    mu: list[tf.Tensor]  # first-moment estimates, one per weight
    nu: list[tf.Tensor]  # second-moment estimates, one per weight


def adam_init(params: list[np.ndarray] | list[tf.Tensor]) -> AdamState:
    zeros = [tf.zeros_like(tf.convert_to_tensor(p)) for p in params]
    return AdamState(tf.constant(0.0), zeros, [tf.identity(z) for z in zeros])


def adam_update(
    grads: list[tf.Tensor],
    state: AdamState,
    params: list[tf.Tensor],
    learning_rate: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    epsilon: float = 1e-7,
) -> tuple[list[tf.Tensor], AdamState]:
    """One bias-corrected Adam step (Kingma & Ba, alg. 1; epsilon as in Keras)."""
    count = state.count + 1.0
    mu = [beta1 * m + (1.0 - beta1) * g for m, g in zip(state.mu, grads, strict=True)]
    nu = [beta2 * v + (1.0 - beta2) * tf.square(g) for v, g in zip(state.nu, grads, strict=True)]
    step = learning_rate * tf.sqrt(1.0 - beta2**count) / (1.0 - beta1**count)
    new_params = [
        p - step * m / (tf.sqrt(v) + epsilon) for p, m, v in zip(params, mu, nu, strict=True)
    ]
    return new_params, AdamState(count, mu, nu)


def adam_to_numpy(state: AdamState) -> dict[str, np.ndarray | list[np.ndarray]]:
    """The state as plain numpy arrays, exact to the bit, so a checkpoint can store it and another
    process (or a resumed run) can carry on with precisely the same moments and step count."""
    return {
        "count": np.asarray(state.count),
        "mu": [np.asarray(m) for m in state.mu],
        "nu": [np.asarray(v) for v in state.nu],
    }


def adam_from_numpy(data: dict[str, np.ndarray | list[np.ndarray]]) -> AdamState:
    """Inverse of ``adam_to_numpy``; dtypes are kept, so the compiled step does not retrace."""
    mu, nu = data["mu"], data["nu"]
    assert isinstance(mu, list) and isinstance(nu, list)
    return AdamState(
        tf.convert_to_tensor(data["count"]),
        [tf.convert_to_tensor(m) for m in mu],
        [tf.convert_to_tensor(v) for v in nu],
    )
