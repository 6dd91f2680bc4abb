"""The DMAML core: models, MAML, weight generators, the central learner and its backends."""

import os

# A process that inherited a quiet setting (a spawned worker of the quiet driver) stays quiet:
# TensorFlow's start-up lines would otherwise reach the terminal from every worker.
if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip() not in ("", "0"):
    from dmaml_core.quiet import quiet_startup

    quiet_startup()
