"""Layer 1b, inspection without torch: the result policy every inspector shares and the runtime of exported
models (ONNX Runtime, OpenVINO). Never imports torch."""
