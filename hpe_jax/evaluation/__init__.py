"""Evaluation on held-out splits: the metric protocols (scoring.py), Markdown reports (report.py)
and evaluating a trained run's checkpoint (trained_run.py)."""
