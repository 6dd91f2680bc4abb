"""Meta-reinforcement learning: 2-D navigation environments, a Gaussian policy and MAML-RL.

Importing this package registers the environments with Gymnasium (``dmaml/PointNavigation-v0``,
``dmaml/Nav2d-v0``); Gymnasium is the optional ``rl`` extra.
"""
