"""A run on disk: its directory (workdir.py: config, metrics log, lock) and its Orbax checkpoints
(checkpoint.py). Training writes runs; inference, evaluation and studies read them, so this layer
sits below both and imports neither."""
