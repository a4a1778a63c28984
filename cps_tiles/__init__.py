"""cps-tiles: learned compression of gigapixel images with Continuous Patch Stitching."""

__version__ = "0.1.0"
