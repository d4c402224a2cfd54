"""Writing a workshop benchmark: wav files plus an MMAU-format JSON, deterministic from a seed.

Clips are partitioned into `calibration`, `dev` and `test` (MMAU's `split`
field) by clip, and every clip appears under all three hint conditions, so
comparisons between conditions are paired (same audio, different text).
The folder is written to a temporary sibling and renamed into place, so an
interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from lens_audio.workshop.sounds import SAMPLE_RATE
from lens_audio.workshop import atomic_folder
from lens_audio.workshop.task import HINT_CONDITIONS, draw_clips, make_item

JSON_NAME = "workshop.json"
PARTITIONS = (("calibration", 0.25), ("dev", 0.25), ("test", 0.5))
TEST_SNR_DB = (0.0, 20.0)


def write_benchmark(folder: str | Path, seed: int = 0, n_clips: int = 180, overwrite: bool = False, progress: bool = True) -> Path:
    """Write `n_clips` clips x 3 hint conditions to `folder` (JSON at `folder/workshop.json`)."""
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} exists; pass overwrite=True (--overwrite) to replace it.")
    rng = np.random.default_rng(seed)
    clips = draw_clips(rng, n_clips, prefix=f"ws{seed}", snr_range=TEST_SNR_DB)
    bounds = np.cumsum([0] + [int(round(share * n_clips)) for _, share in PARTITIONS])
    bounds[-1] = n_clips
    with atomic_folder(folder) as staging:
        (staging / "audios").mkdir()
        items = []
        for (split, _), start, end in zip(PARTITIONS, bounds[:-1], bounds[1:]):
            for clip in tqdm(clips[start:end], desc=f"writing {split} clips", disable=not progress):
                audio_id = f"./audios/{clip.id}.wav"
                sf.write(staging / audio_id, clip.waveform(), SAMPLE_RATE, subtype="PCM_16")
                items += [make_item(clip, hint, rng, audio_id, split) for hint in HINT_CONDITIONS]
        (staging / JSON_NAME).write_text(json.dumps(items, indent=1))
    return folder
