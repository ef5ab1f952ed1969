"""The user commands, one module each, named as its console script (hpe-build-dataset:
build_dataset.py): train (also `python -m hpe_jax.main`), evaluate, predict, analyze, export,
study, build_dataset, import_weights, make_clip. Each parses its flags and calls the library
(hpe_jax/cli.py's `run`); `python -m hpe_jax.commands.X` runs command X."""
