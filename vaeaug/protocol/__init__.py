"""Does it help? The classifier, the evaluation protocol, tuning, and generation-speed timing."""
