"""Datasets: TFDS builders, the stored format, augmentation and the grain input pipeline."""
