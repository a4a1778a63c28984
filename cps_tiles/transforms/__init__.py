"""Layer 1, geometry and tensors: the padding-free layers, the CPS model, POPS geometry, tile-exact
analysis and synthesis, and the trained-codec registry. Imports nothing else of cps_tiles."""
