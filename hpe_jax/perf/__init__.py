"""Speed measurements: the train step, the input pipeline, and the PyTorch peer (torch_peer,
compare; the only modules here that need torch, and nothing else imports them)."""
