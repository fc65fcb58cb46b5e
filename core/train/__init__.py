"""Layer 4, training: anomaly synthesis, losses, the batch pipeline, the trainer, the feature memory, held-out
validation and the one description of a run (:mod:`core.train.run`) that every caller builds a trainer from."""
