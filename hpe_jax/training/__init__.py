"""Training: the train step, optimiser, checkpoints and the train loop."""
