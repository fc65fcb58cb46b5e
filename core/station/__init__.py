"""Layer 4, the station: a watched folder judged image by image into an append-only audit log."""
