"""``python -m harness`` and the ``dmaml-bench`` console script: one CLI, started quietly (see
``dmaml_core.quiet`` for why TensorFlow's start-up lines need more than a log level)."""

from __future__ import annotations

from dmaml_core.quiet import quiet_startup


def entry(argv: list[str] | None = None) -> int:
    """The ``dmaml-bench`` console script (and ``python -m harness``)."""
    quiet_startup()
    from harness.cli import main

    return main(argv)


if __name__ == "__main__":
    raise SystemExit(entry())
