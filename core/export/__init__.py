"""Layer 4, export: a checkpoint as an ONNX or OpenVINO model that the torch-free runtime (``core.runtime``) runs."""
