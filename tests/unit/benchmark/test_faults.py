"""Bad input and faults: one small test per catalogue case, each checking that the message names
the input; a SIGKILL fault test; two writers on one run file."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from tqdm.auto import tqdm
from tqdm.std import tqdm as tqdm_std

from lens_audio import HookedAudioLM, make_batch
from lens_audio.analysis.listening import listening_signal
from lens_audio.analysis.steering import adaptive_direction, adaptive_steering, steering_hooks
from lens_audio.benchmark import load_mmau
from lens_audio.benchmark.run_file import RunFile, RunLockedError, read_records
from lens_audio.benchmark.runner import run_benchmark
from lens_audio.cli import main
from lens_audio.inputs.audio import AudioError, load_audio
from lens_audio.organisms.benchmark_writer import write_benchmark
from lens_audio.testing import save_checkpoint, tiny_hf_model
from tests.helpers.reference import waveform

RUN = dict(template="letters", mode="choice", batch_size=1, progress=False)


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    folder = write_benchmark(tmp_path_factory.mktemp("bench") / "w", seed=4, n_clips=3, progress=False)
    return load_mmau(folder / "workshop.json")


@pytest.fixture
def model(tiny_pair):
    return tiny_pair(n_heads=4, n_kv_heads=2, n_layers=2)[1]


@pytest.fixture
def one_thread():
    """Forked children compute on one thread (see `_fork`); the parent too, so their timings compare."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_items(folder: Path, items: list[dict]) -> Path:
    for name in {clip for item in items for clip in np.atleast_1d(item.get("audio_id", []))}:
        if not name.startswith("missing"):
            soundfile.write(folder / name, waveform(0.5, len(name)), 16000)
    path = folder / "bench.json"
    path.write_text(json.dumps(items))
    return path


def item(id_, audio="a.wav", answer="dog"):
    return {"id": id_, "audio_id": audio, "question": "What is it?", "choices": ["dog", "cat"], "answer": answer}


# 1, 12: benchmarks are checked whole when loaded, every problem reported at once.
def test_benchmark_problems_are_reported_together(tmp_path):
    path = write_items(tmp_path, [item("x"), item("x"), item("y", audio="missing.wav"), item("z", answer="cow")])
    with pytest.raises(ValueError) as raised:
        load_mmau(path, split="test")  # even items outside the split are checked
    message = str(raised.value)
    assert str(path) in message and "3 problem(s)" in message
    assert "item 1 ('x'): duplicate id (also item 0)" in message
    assert "missing.wav" in message and "does not exist" in message
    assert "answer 'cow' is not among its choices" in message


def test_runner_refuses_duplicate_ids(model, items):
    with pytest.raises(ValueError, match=items[0]["id"]):
        run_benchmark(model, [items[0], items[1], items[0]], None, **RUN)


def test_audio_id_may_list_several_clips(tmp_path, model, one_thread):
    path = write_items(tmp_path, [item("pair", audio=["a.wav", "bb.wav"]), item("one")])
    loaded = {i["id"]: i for i in load_mmau(path)}
    assert loaded["pair"]["audio_path"] == [str(tmp_path / "a.wav"), str(tmp_path / "bb.wav")]
    records = run_benchmark(model, list(loaded.values()), tmp_path / "run.jsonl", **RUN)
    assert [r["id"] for r in records] == ["pair", "one"]
    batch = model.to_batch([loaded["pair"]["audio_path"]], ["What is it?"])
    assert len(batch.audio_spans[0]) == 2


def test_missing_clip_of_a_list_is_named(tmp_path):
    path = write_items(tmp_path, [item("pair", audio=["a.wav", "missing-2.wav"])])
    with pytest.raises(ValueError, match="missing-2.wav"):
        load_mmau(path)


# 2: one writer per run file; torn lines never cost later records.
def test_second_writer_is_refused_with_the_owner_pid(tmp_path):
    path = tmp_path / "run.jsonl"
    with RunFile(path):
        with pytest.raises(RunLockedError) as raised:
            RunFile(path).__enter__()
    assert str(path) in str(raised.value) and f"pid {os.getpid()}" in str(raised.value)
    with RunFile(path) as run:  # released: the next writer gets it
        run.append({"id": "a"})
    assert read_records(path) == {"a": {"id": "a"}}


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    path = tmp_path / "run.jsonl"
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    Path(f"{path}.lock").write_text(f"{pid}\n")
    with RunFile(path) as run:
        run.append({"id": "a"})
        assert Path(f"{path}.lock").read_text().strip() == str(os.getpid())


def test_a_torn_line_costs_no_later_record(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "out\n{"id": "c"}\n{"id": "a", "again": 1}\n{"id": "d"}')
    assert list(read_records(path)) == ["a", "c", "d"]
    before = path.read_text()
    read_records(path)
    assert path.read_text() == before, "readers never change the file"
    with RunFile(path) as run:
        assert list(run.records) == ["a", "c", "d"]
        run.append({"id": "e"})
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "c", "d", "e"]


def _fork(target) -> int:
    """Run `target()` in a forked child; its return value is the child's exit code.

    The child computes on one thread: OpenMP's thread pool does not survive a fork (it would hang). It also
    takes a progress-bar lock of its own: tqdm's default lock is a multiprocessing lock shared across fork, and
    a child SIGKILLed while holding it would leave the parent's next progress bar waiting forever.
    """
    pid = os.fork()
    if pid == 0:
        code = 4
        try:
            for bars in (tqdm, tqdm_std):
                bars.set_lock(threading.RLock())
            torch.set_num_threads(1)
            code = target()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def test_two_writers_one_refused_nothing_doubled(model, items, tmp_path, one_thread):
    path, items = tmp_path / "run.jsonl", items[:6]

    def slow(model, batch, start):  # a steering function that adds nothing but time
        time.sleep(0.15)
        return []

    def writer() -> int:
        try:
            run_benchmark(model, items, path, steering=slow, **RUN)
            return 0
        except RunLockedError:
            return 3

    pids = [_fork(writer), _fork(writer)]
    codes = sorted(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids)
    assert codes == [0, 3]
    ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
    assert sorted(ids) == sorted(i["id"] for i in items)


def test_killed_runs_resume_to_the_uninterrupted_records(model, items, tmp_path, one_thread):
    items = items[:6]
    seed = int(os.environ.get("LENS_AUDIO_FAULT_SEED", random.randrange(2**31)))
    print(f"fault test seed: {seed} (rerun with LENS_AUDIO_FAULT_SEED={seed})")
    rng = random.Random(seed)
    started = time.perf_counter()
    full = run_benchmark(model, items, tmp_path / "full.jsonl", **RUN)
    duration = time.perf_counter() - started
    path = tmp_path / "killed.jsonl"
    progress = []

    def resume() -> int:
        run_benchmark(model, items, path, **RUN)
        return 0

    for kill in range(10):  # kill k waits for k * n / 10 records, then strikes at a random moment of the next one
        pid = _fork(resume)
        deadline = time.perf_counter() + 60 + 10 * duration
        while len(read_records(path)) < kill * len(items) // 10 and time.perf_counter() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, duration / len(items)))
        os.kill(pid, signal.SIGKILL)  # a child that finished meanwhile is a zombie until waited: no error
        os.waitpid(pid, 0)
        ids = [json.loads(line)["id"] for line in path.read_text().splitlines()] if path.exists() else []
        assert len(ids) == len(set(ids)), f"a record was doubled after kill {len(progress) + 1}"
        progress.append(len(ids))
    print("records after each kill:", progress)
    resumed = run_benchmark(model, items, path, **RUN)
    assert list(resumed) == list(full)
    lines = path.read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(i["id"] for i in items)


# 3: integer PCM is scaled by its dtype's range, as soundfile does.
@pytest.mark.parametrize("subtype,dtype", [("PCM_16", np.int16), ("PCM_32", np.int32), ("PCM_U8", np.uint8)])
def test_integer_pcm_is_scaled_like_soundfile(tmp_path, subtype, dtype):
    signal_ = waveform(0.3, 1)
    path = tmp_path / "clip.wav"
    soundfile.write(path, signal_, 16000, subtype=subtype)
    as_read = load_audio(path)
    integers, _ = soundfile.read(path, dtype="int16" if dtype is np.uint8 else dtype.__name__)
    if dtype is np.uint8:  # soundfile has no uint8 read: rebuild the unsigned samples from the 16-bit ones
        integers = (integers.astype(np.int32) // 256 + 128).astype(np.uint8)
    np.testing.assert_allclose(load_audio(integers, 16000), as_read, atol=1e-7)


def test_float_audio_far_outside_unit_range_warns():
    with pytest.warns(UserWarning, match="audio array: float samples reach"):
        load_audio(waveform(0.3, 1) * 32767, 16000)


# 4: a clip too short for one audio token is refused, with the minimum named (and the minimum is exact).
def test_too_short_clip_is_refused_with_the_minimum(processor):
    with pytest.raises(AudioError, match=r"too short for one audio token") as raised:
        make_batch(processor, np.full(100, 0.1, np.float32), "What?", sampling_rate=16000)
    message = str(raised.value)
    assert "example 0, clip 0 (array)" in message
    minimum = int(message.split("(")[-1].split(" samples")[0])
    batch = make_batch(processor, np.full(minimum, 0.1, np.float32), "What?", sampling_rate=16000)
    assert batch.audio_mask.sum() >= 1
    with pytest.raises(AudioError):
        make_batch(processor, np.full(minimum - 1, 0.1, np.float32), "What?", sampling_rate=16000)


# 5: non-finite steering is refused.
@pytest.mark.parametrize("beta", [float("nan"), float("inf")])
def test_non_finite_beta_is_refused(model, beta):
    with pytest.raises(ValueError, match="steering beta is"):
        steering_hooks(model, torch.ones(model.cfg.d_model), beta)
    with pytest.raises(ValueError, match="steering beta is"):
        adaptive_steering([0], beta)


def test_non_finite_direction_is_refused(model):
    direction = torch.ones(model.cfg.d_model)
    direction[3] = float("nan")
    with pytest.raises(ValueError, match="steering direction holds NaN"):
        steering_hooks(model, direction, 1.0)


# 6: prompts beyond the context are refused before the forward, or warned about when allowed.
def test_prompt_beyond_n_ctx_is_refused(model, two_example_batch):
    cfg = model.cfg
    model.cfg = cfg.replace(n_ctx=10)
    try:
        with pytest.raises(ValueError, match="cfg.n_ctx = 10"):
            model(two_example_batch)
        model.allow_long_context = True
        with pytest.warns(UserWarning, match="cfg.n_ctx = 10"):
            logits = model(two_example_batch)
    finally:
        model.cfg = cfg
        del model.allow_long_context
    assert torch.allclose(logits, model(two_example_batch))


# 7, 9: analyses that need audio refuse a batch without it; listening_signal checks its layers.
def test_analyses_refuse_a_batch_without_audio(model, processor):
    batch = make_batch(processor, [], "What is the sound?")
    assert not batch.audio_mask.any()
    with pytest.raises(ValueError, match="listening_signal needs audio.*example\\(s\\) \\[0\\]"):
        listening_signal(model, batch)
    with pytest.raises(ValueError, match="adaptive_direction needs audio"):
        adaptive_direction(model, batch, layers=[0])


def test_listening_signal_checks_layers(model, two_example_batch):
    with pytest.raises(ValueError, match=r"layers \[-1\] must be a non-empty list in 0-1"):
        listening_signal(model, two_example_batch, layers=[-1])


# 8, 10, 12: loading.
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, processor):
    hf, _ = tiny_hf_model(processor, seed=5, n_heads=4, n_kv_heads=2)
    return save_checkpoint(hf, processor, tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.mark.parametrize("section,key", [("text_config", "num_hidden_layers"), ("audio_config", "encoder_layers")])
def test_config_with_fewer_layers_than_the_weights(checkpoint, tmp_path, section, key):
    folder = tmp_path / "fewer"
    folder.mkdir()
    for file in checkpoint.iterdir():
        (folder / file.name).symlink_to(file)
    (folder / "config.json").unlink()
    config = json.loads((checkpoint / "config.json").read_text())
    config[section][key] = 1
    config[section].pop("layer_types", None)  # transformers checks that one against num_hidden_layers itself
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"{re.escape(str(folder))}.*layers.1.*no place for.*{key}"):
        HookedAudioLM.from_pretrained(folder)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_named():
    with pytest.raises(ValueError, match="device 'cuda' is not available"):
        HookedAudioLM.from_pretrained("workshop", device="cuda")


def test_pickle_only_folder_and_folder_as_audio(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match=f"{tmp_path} holds only pickle weights"):
        HookedAudioLM.from_pretrained(tmp_path)
    with pytest.raises(AudioError, match=f"{tmp_path} is a folder, not an audio file"):
        load_audio(tmp_path)


# 11: the command line prints one line per error and exits non-zero; --debug shows the traceback.
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_errors_are_one_line(capsys, tmp_path):
    assert main(["listen", "--device", "cuda"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lens-audio listen: error: device 'cuda'")
    missing = tmp_path / "nothing"
    assert main(["demo", "--model", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err
    with pytest.raises(ValueError, match="device 'cuda'"):
        main(["listen", "--device", "cuda", "--debug"])
