"""Movement analysis of predicted videos: joint angles, repetitions, summaries, plots, standard
motion files (TRC, C3D, BVH) and a report a browser opens (what `hpe-analyze` does)."""
