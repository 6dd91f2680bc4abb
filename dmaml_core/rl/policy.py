"""Gaussian MLP policy as a pure function of a weight list, batched over tasks like ``models.MLP``.

Weights: ``[W_1, b_1, ..., W_L, b_L, log_std]``; inside MAML every tensor carries a leading task
axis ``T`` so that each task's adapted copy acts on its own trajectories in one call. The mean is
produced in unit action scale (the dynamics rescale), the log standard deviation is a learned,
state-independent vector (Duan et al. 2016), so adaptation can also sharpen or widen exploration.

The forward pass exists twice on purpose: in TensorFlow for log-likelihoods and their (higher)
derivatives, and in numpy for sampling inside rollouts, where a TF call per time step would cost
more than the arithmetic (the numpy and TF means are tested to agree).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from dmaml_core.models import NumpyWeights, Weights
from dmaml_core.types import Activation

LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class GaussianMLPPolicy:
    """``obs_dim -> hidden... -> act_dim`` mean; ``hidden=()`` is a linear-Gaussian policy."""

    obs_dim: int = 2
    act_dim: int = 2
    hidden: tuple[int, ...] = (100, 100)
    activation: Activation = "tanh"
    init_log_std: float = 0.0

    def init(self, seed: int) -> NumpyWeights:
        """Glorot-uniform hidden layers, a small output layer (the first policy is near-zero mean,
        so early exploration is the Gaussian's), zero biases, log-std ``init_log_std``."""
        rng = np.random.default_rng(seed)
        sizes = (self.obs_dim, *self.hidden, self.act_dim)
        weights: NumpyWeights = []
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
            limit = math.sqrt(6.0 / (n_in + n_out))
            if i == len(sizes) - 2:
                limit *= 0.1
            weights.append(rng.uniform(-limit, limit, size=(n_in, n_out)).astype(np.float32))
            weights.append(np.zeros((n_out,), np.float32))
        weights.append(np.full((self.act_dim,), self.init_log_std, np.float32))
        return weights

    # ---- TensorFlow (differentiable) -------------------------------------------------------

    def apply(
        self, weights: Weights, x: tf.Tensor, *, twice_differentiated: bool = False
    ) -> tf.Tensor:
        """Mean action: ``x`` [T, N, obs_dim] -> [T, N, act_dim] (``Model`` protocol)."""
        act = tf.tanh if self.activation == "tanh" else tf.nn.relu
        h = x
        layers = (len(weights) - 1) // 2
        for i in range(layers):
            h = tf.matmul(h, weights[2 * i]) + weights[2 * i + 1][:, None, :]
            if i < layers - 1:
                h = act(h)
        return h

    def log_prob(self, weights: Weights, obs: tf.Tensor, actions: tf.Tensor) -> tf.Tensor:
        """log pi(a | s) summed over action dimensions: [T, N, obs], [T, N, act] -> [T, N]."""
        mean = self.apply(weights, obs)
        log_std = weights[-1][:, None, :]
        z = (actions - mean) * tf.exp(-log_std)
        return tf.reduce_sum(-0.5 * tf.square(z) - log_std - 0.5 * LOG_2PI, axis=-1)

    # ---- numpy (sampling) ------------------------------------------------------------------

    def mean_np(self, weights: NumpyWeights, obs: np.ndarray) -> np.ndarray:
        """Same as ``apply`` in numpy: ``obs`` [T, N, obs_dim] -> [T, N, act_dim]."""
        h = obs.astype(np.float32)
        layers = (len(weights) - 1) // 2
        for i in range(layers):
            h = np.matmul(h, weights[2 * i]) + weights[2 * i + 1][:, None, :]
            if i < layers - 1:
                h = np.tanh(h) if self.activation == "tanh" else np.maximum(h, 0.0)
        return h

    def sample_np(
        self, weights: NumpyWeights, obs: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """One action per row: mean + std * N(0, 1), [T, N, act_dim] float32 (not clipped: the
        likelihood is of the unclipped sample, the dynamics clip)."""
        mean = self.mean_np(weights, obs)
        std = np.exp(weights[-1])[:, None, :]
        noise = rng.standard_normal(mean.shape).astype(np.float32)
        return (mean + std * noise).astype(np.float32)
