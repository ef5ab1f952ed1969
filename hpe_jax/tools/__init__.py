"""The commands beyond training, evaluation and prediction: thin launchers of the library."""
