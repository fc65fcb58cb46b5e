"""Stand-ins for ``dad_gui.jobs.run_job`` that the job tests run in the spawned child (importable there)."""

from __future__ import annotations

import numpy as np


def preview_then_done(spec, queue, cancel) -> None:  # noqa: ANN001 - run_job's signature
    """A preview of three 256 px images (2.4 MB: more than a pipe holds) and the end of the job: the child
    can only exit once the parent has read them."""
    image = np.zeros((256, 256, 3), np.float32)
    queue.put({"type": "preview", "step": 1, "input": image, "reconstruction": image, "anomaly_map": image[..., 0]})
    queue.put({"type": "done", "checkpoint": None, "cancelled": True, "step": 1})
