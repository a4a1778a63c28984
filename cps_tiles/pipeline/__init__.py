"""Layer 5, conversion and scale-out: image sources, the Dask conversion graph, TIFF export."""
