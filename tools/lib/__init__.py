"""What the developer tools share: the measurements behind each benchmark (benchmark.py: the train
step and its timing helpers; benchmark_pipeline.py; benchmark_video.py), the PyTorch peer
(torch_peer.py) and its comparison (compare_peer.py), and the reference's torch.nn network of the
weight-import fixtures (torch_reference.py). torch_peer, compare_peer and torch_reference need
torch; the library (hpe_jax) imports none of them."""
