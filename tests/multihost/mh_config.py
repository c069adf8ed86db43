"""The model and step count the multi-process test and its single-process reference share."""

CONFIG = {"layers": 2, "d_model": 32, "heads": 4, "seq": 16, "batch": 8, "vocab": 64, "d_ff": 64}
"""A small zoo GPT (`partir.testing.models.get("gpt", **CONFIG)`); batch 8 splits over
the mesh's batch axis of 4 (2 rows per device, 4 per process)."""

STEPS = 3
"""Training steps each run takes."""
