"""Writing a workshop benchmark: wav files plus an MMAU-format JSON, deterministic from a seed.

Clips are partitioned into `calibration`, `dev` and `test` (MMAU's `split`
field) by clip, and every clip appears under all three hint conditions, so
comparisons between conditions are paired (same audio, different text).
The folder is written to a temporary sibling and renamed into place, so an
interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from lens_audio.files import atomic_folder
from lens_audio.organisms.sounds import SAMPLE_RATE
from lens_audio.organisms.task import HINT_CONDITIONS, draw_clips, make_item
from lens_audio.organisms.workshop.task import draw_clip_sets, make_set_item
from lens_audio.organisms.workshop_chains.task import draw_chain_sets, draw_relation, make_chain_item

JSON_NAME = "workshop.json"
SETS_JSON_NAME = "workshop_sets.json"
CHAINS_JSON_NAME = "workshop_chains.json"
# clip sets per split, and the hint conditions asked there (calibration holds the conflicting items, where the errors
# are)
SET_PARTITIONS = (("calibration", 60, ("conflicting",)), ("dev", 20, HINT_CONDITIONS), ("test", 40, HINT_CONDITIONS))
# the clip-chain benchmark: four items per set and hint condition (one per clip), so test holds 800 conflicting items
# and calibration 400 (with >= 20% errors, >= 80 errors)
CHAIN_PARTITIONS = (
    ("calibration", 100, ("conflicting",)), ("dev", 60, HINT_CONDITIONS), ("test", 200, HINT_CONDITIONS)
)
# "workshop-chains"' registered benchmark: direct questions only, 350 calibration sets of conflicting items (1400 items,
# enough errors for r), 60 dev sets, 200 test sets -> 800 conflicting test items; its own seed
DIRECT_PARTITIONS = (
    ("calibration", 350, ("conflicting",)), ("dev", 60, HINT_CONDITIONS), ("test", 200, HINT_CONDITIONS)
)
DIRECT_SEED = 1
PARTITIONS = (("calibration", 0.25), ("dev", 0.25), ("test", 0.5))
TEST_SNR_DB = (0.0, 20.0)


def write_benchmark(
    folder: str | Path, seed: int = 0, n_clips: int = 180, overwrite: bool = False, progress: bool = True
) -> Path:
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


def write_set_benchmark(folder: str | Path, seed: int = 0, partitions=SET_PARTITIONS, overwrite: bool = False,
                        progress: bool = True, chains: bool = False, direct_only: bool = False) -> Path:
    """Write the clip-set benchmark (`clip_sets.py`): every clip of every set asked about, per split's hint conditions.

    JSON at `folder/workshop_sets.json`; each item's `audio_id` lists its set's three clips. With `chains`, the
    clip-chain benchmark (`clip_chains.py`, see `write_chain_benchmark`); with `direct_only` as well, every clip is
    asked about by its number ("What is in Audio 2?"), the kind of question the chains model learned best.
    """
    if direct_only and not chains:
        raise ValueError("direct_only applies to the clip-chain benchmark (chains=True) only.")
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} exists; pass overwrite=True (--overwrite) to replace it.")
    rng = np.random.default_rng(seed)
    with atomic_folder(folder) as staging:
        (staging / "audios").mkdir()
        items = []
        for split, n_sets, hints in partitions:
            draw = draw_chain_sets if chains else draw_clip_sets
            prefix = f"{'chain' if chains else 'set'}{seed}-{split[:3]}"
            for clip_set in tqdm(draw(rng, n_sets, prefix=prefix, snr_range=TEST_SNR_DB),
                                 desc=f"writing {split} clip sets", disable=not progress):
                audio_ids = [f"./audios/{clip.id}.wav" for clip in clip_set.clips]
                for clip, audio_id in zip(clip_set.clips, audio_ids):
                    sf.write(staging / audio_id, clip.waveform(), SAMPLE_RATE, subtype="PCM_16")
                for target in range(len(clip_set.clips)):
                    if chains:  # one way of naming the clip, the same under every hint condition (paired)
                        relation = "direct" if direct_only else draw_relation(rng, target)
                        items += [make_chain_item(clip_set, target, relation, hint, rng, audio_ids, split)
                                  for hint in hints]
                    else:
                        items += [make_set_item(clip_set, target, hint, rng, audio_ids, split) for hint in hints]
        (staging / (CHAINS_JSON_NAME if chains else SETS_JSON_NAME)).write_text(json.dumps(items, indent=1))
    return folder


def write_chain_benchmark(folder: str | Path, seed: int = 0, partitions=CHAIN_PARTITIONS, overwrite: bool = False,
                          progress: bool = True, direct_only: bool = False) -> Path:
    """Write the clip-chain benchmark (`clip_chains.py`) to `folder/workshop_chains.json` (and `audios/`): each
    clip of each four-clip set asked about once per hint condition of its split, named by its number (30%, or
    always with `direct_only`) or by a neighbour's content, the same way under every hint condition."""
    return write_set_benchmark(folder, seed, partitions, overwrite, progress, chains=True, direct_only=direct_only)


@dataclass(frozen=True)
class SeededBenchmark:
    """A bundled clip-chain benchmark the package ships as JSON only, its audio rewritten from its seed on first use.

    The clips take tens of MB as wav files and seconds to synthesize. On first use (`path()`) the benchmark is
    rewritten from `seed`, its JSON checked equal to the shipped one, and its `audios/` placed beside the shipped
    JSON, or, where the package folder is read-only, with a copy of the JSON under the user cache
    (`$XDG_CACHE_HOME/lens_audio/<cache_name>`, default `~/.cache/lens_audio/<cache_name>`).
    """

    shipped: Path  # the JSON in the package (named CHAINS_JSON_NAME)
    cache_name: str
    seed: int
    partitions: tuple
    direct_only: bool = False

    def write(self, folder: str | Path, overwrite: bool = False, progress: bool = True) -> Path:
        """Write this benchmark (JSON and audio) to `folder`, from its seed."""
        return write_chain_benchmark(folder, self.seed, self.partitions, overwrite, progress, self.direct_only)

    def command(self) -> str:
        """The command that writes this benchmark to a folder of the user's choosing."""
        direct = " --direct-only" if self.direct_only else ""
        return f"lens-audio workshop benchmark --recipe chains --seed {self.seed}{direct} --out DIR"

    def path(self, progress: bool = True) -> Path:
        """The benchmark's JSON, with its audio beside it (written on first use)."""
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lens_audio" / self.cache_name
        places = (self.shipped.parent, cache)
        for folder in places:
            if (folder / "audios").is_dir() and (folder / CHAINS_JSON_NAME).is_file():
                return folder / CHAINS_JSON_NAME
        for folder in places:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                staging = Path(tempfile.mkdtemp(prefix=f".{self.cache_name}-", dir=folder))
            except OSError:
                continue  # read-only: try the next place
            try:
                written = self.write(staging / "benchmark", progress=progress)
                if (written / CHAINS_JSON_NAME).read_text() != self.shipped.read_text():
                    raise RuntimeError(
                        f"the benchmark rewritten from its seed differs from the shipped {self.shipped} (another "
                        f"numpy random generator?); write one with `{self.command()}` and pass its JSON explicitly."
                    )
                if folder != self.shipped.parent:
                    shutil.copyfile(self.shipped, folder / CHAINS_JSON_NAME)
                try:
                    os.replace(written / "audios", folder / "audios")  # complete, or not there at all
                except OSError:
                    if not (folder / "audios").is_dir():  # else another process placed them first
                        raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return folder / CHAINS_JSON_NAME
        raise PermissionError(f"neither {places[0]} nor {places[1]} is writable; write the benchmark with "
                              f"`{self.command()}` and pass its JSON explicitly.")


def _bundled(name: str) -> SeededBenchmark:
    from lens_audio import organisms

    if name == "mixed":  # the benchmark the chains model was trained and accepted on
        return SeededBenchmark(organisms.BENCHMARK_CHAINS, "workshop_chains", 0, CHAIN_PARTITIONS)
    return SeededBenchmark(organisms.BENCHMARK_CHAINS_DIRECT, "workshop_chains_direct", DIRECT_SEED,
                           DIRECT_PARTITIONS, direct_only=True)


def chain_benchmark(progress: bool = True) -> Path:
    """The bundled clip-chain benchmark (questions by number or by a neighbour; the model's acceptance checks and
    metrics.json are measured on it), its audio written on first use (`SeededBenchmark`)."""
    return _bundled("mixed").path(progress)


def direct_chain_benchmark(progress: bool = True) -> Path:
    """`"workshop-chains"`'s registered benchmark: direct questions only ("What is in Audio k?"), seed `DIRECT_SEED`,
    `DIRECT_PARTITIONS` (800 conflicting test items), its audio written on first use (`SeededBenchmark`). On it the
    paper's head-selection claim is decidable, and its controls say whether it is the heads or the depth (card)."""
    return _bundled("direct").path(progress)
