"""dmaml-bench harness: suites -> cases -> measurements -> results -> reports."""
