"""Shared test set-up: quiet TensorFlow logs before it is imported anywhere."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
