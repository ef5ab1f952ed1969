"""Evaluation on held-out splits: prediction readout and metric protocols."""
