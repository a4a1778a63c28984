"""Layer 4, the store: layout and metadata, the tile writer, the region reader, verification."""
