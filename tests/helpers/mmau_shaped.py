"""A small benchmark in MMAU test-mini's exact shape and quirks, and a random checkpoint of Qwen2-Audio's real
architecture in a Hugging Face cache, for the researcher's path end to end (`tests/integration/test_researcher_path`).

The benchmark (`shared/method.md`, "The benchmark: MMAU"): `split: "test-mini"` on every item and no other split, 2 to
8 choices, `category` a string except on some items where it is a one-element list, several `sub-category` and three
`difficulty` values, `audio_id` a `./test-mini-audios/<id>.wav` path, and clips that are mono 16 kHz or stereo
44.1/48 kHz, 1 to 39 s long (so some exceed the 30 s window).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TASKS = {  # task -> its sub-categories (a few of MMAU's 27)
    "sound": ("Acoustic Scene Reasoning", "Event-Based Sound Reasoning", "Sound-Based Event Recognition"),
    "music": ("Genre Identification", "Instrument Identification", "Emotion Recognition"),
    "speech": ("Speaker Identification", "Phonemic Stress Pattern Analysis", "Event-Based Knowledge Retrieval"),
}
WORDS = ("bell", "rain", "piano", "violin", "dog", "engine", "crowd", "whistle", "drum", "thunder", "laugh", "siren",
         "guitar", "wind", "bird", "train")


def write_mmau_shaped(folder: str | Path, n_items: int = 36, seed: int = 0) -> Path:
    """Write `mmau-test-mini.json` and its clips under `folder`; returns the JSON's path."""
    import soundfile

    folder = Path(folder)
    audio = folder / "test-mini-audios"
    audio.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = []
    for index in range(n_items):
        task = list(TASKS)[index % 3]
        item_id = f"{index:04x}-mmau-shaped"
        rate, channels = [(16_000, 1), (44_100, 2), (48_000, 2)][index % 3]
        seconds = [1.0, 7.5, 39.0, 12.0][index % 4]  # every fourth clip longer than the 30 s window
        wave = 0.1 * rng.standard_normal((int(seconds * rate), channels)).astype(np.float32)
        soundfile.write(audio / f"{item_id}.wav", wave if channels > 1 else wave[:, 0], rate)
        n_choices = [4, 2, 8, 3, 4, 6][index % 6]
        choices = [str(w) for w in rng.choice(WORDS, size=n_choices, replace=False)]
        if index % 5 == 0:
            choices[-1] = f"a {choices[-1]} and a {choices[0]} together"  # options of several tokens, unequal lengths
        category = f"{task} category {index % 4}"
        items.append({
            "id": item_id,
            "audio_id": f"./test-mini-audios/{item_id}.wav",
            "question": f"Which of these is heard in the clip ({task})?",
            "choices": choices,
            "answer": choices[int(rng.integers(n_choices))],
            "dataset": f"{task}-set",
            "task": task,
            "split": "test-mini",
            "category": [category] if index % 7 == 3 else category,  # MMAU stores 13 categories as one-element lists
            "sub-category": TASKS[task][(index // 3) % 3],  # several per task
            "difficulty": ("easy", "medium", "hard")[(index // 3) % 3],
        })
    path = folder / "mmau-test-mini.json"
    path.write_text(json.dumps(items, indent=1))
    return path


def cache_random_qwen2_audio(cache: str | Path, repo: str = "Qwen/Qwen2-Audio-7B-Instruct", seed: int = 0) -> str:
    """Save a random Qwen2-Audio of the real audio front end (30 s window, 128 mel bins, the Instruct chat template)
    at a small width as `repo`'s snapshot in the Hugging Face cache folder `cache`; returns `repo`."""
    from lens_audio.testing import save_checkpoint, tiny_hf_model

    hf, processor = tiny_hf_model(seed=seed, n_mels=128, chunk_seconds=30, d_model=64, n_layers=4, n_heads=4,
                                  n_kv_heads=2, audio_d_model=32, audio_layers=2, audio_heads=2)
    entry = Path(cache) / f"models--{repo.replace('/', '--')}"
    snapshot = entry / "snapshots" / "0123456789abcdef"
    save_checkpoint(hf, processor, snapshot)
    (entry / "refs").mkdir(parents=True, exist_ok=True)
    (entry / "refs" / "main").write_text(snapshot.name)
    return repo

