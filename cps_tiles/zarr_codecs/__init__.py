"""Layer 3, the zarr codecs: ``cps_latent`` for numcodecs and zarr-python 3 (entry points)."""
