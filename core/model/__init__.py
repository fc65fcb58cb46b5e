"""Layer 2, the networks (PyTorch): the encoder, denoiser, diffusion process, segmenter and feature memory that
make up :class:`core.model.network.DiffusionAD`, its checkpoints, devices and process groups."""
