"""Runs hpe-compare-peer (hpe_jax.tools.compare_peer) as `python tools/compare_peer.py`."""

from hpe_jax.tools import compare_peer

if __name__ == '__main__':
  compare_peer.run()
