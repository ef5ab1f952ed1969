"""Developer tools, run as `python tools/X.py` from a checkout (not installed): the benchmarks,
the PyTorch peer comparison and the weight-import fixtures. lib/ holds the code they share;
hpe_jax never imports from here."""
