"""Layer 1, torch-free: configs and presets, image files and datasets, results and their files, metrics,
overlays, tiling, atomic file writes. Imports numpy, OpenCV and the standard library only."""
