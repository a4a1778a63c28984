"""Layer 2, chunk format and coding: one self-contained entropy-coded bitstream per latent chunk."""
