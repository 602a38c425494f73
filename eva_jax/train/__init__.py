"""Pre-training: schedules, objective, optimizer, the jitted step, Orbax checkpoints and the loop."""
