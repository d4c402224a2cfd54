"""Training: one loop and one resumable run folder, for the organisms' recipes and the SAE trainer.

- `loop.py`: `Trainer` (AdamW, the warmup-cosine schedule, clipping, running averages, phases and stages,
  auxiliary losses through the recipe's step function, progress log, periodic states), `Phase`, `StepOutput`;
- `run_folder.py`: `RunFolder` (atomic, kill-safe states; refuses other settings or inputs), `LoopState`,
  `default_run_folder` (the user's cache, never the package);
- `state_files.py`: what a state holds, in safetensors + JSON (no pickle, written or read).
"""

from lens_audio.train.loop import Phase, StepOutput, Trainer, inputs_fingerprint, warmup_cosine
from lens_audio.train.run_folder import LoopState, ResumeMismatch, RunFolder, default_run_folder
from lens_audio.train.state_files import StateFormatError

__all__ = [
    "LoopState",
    "Phase",
    "ResumeMismatch",
    "RunFolder",
    "StateFormatError",
    "StepOutput",
    "Trainer",
    "default_run_folder",
    "inputs_fingerprint",
    "warmup_cosine",
]
