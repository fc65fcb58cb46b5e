"""Layer 3, inspection with a finished model: the one prediction path, the result policy, the :class:`Inspector`,
evaluation on a test split and latency measurement. Never imports the training code."""
