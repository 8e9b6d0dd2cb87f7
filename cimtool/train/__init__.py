"""Training: loop, schedules, batching, checkpoints."""
