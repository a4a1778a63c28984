"""Training (``cps-tiles train``, ``train-context``): imported only by those commands, never by
the encode or decode path."""
