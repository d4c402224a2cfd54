"""MMAR and MMAU-Pro files (in their published shapes, written here) converted to the MMAU format: every field mapped,
lettered choices read, what cannot be scored left out and counted, and the result run by the same harness."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile

from lens_audio import cli
from lens_audio.benchmark import load_mmau
from lens_audio.benchmark.formats import convert_benchmark


def clip(folder, name, seconds=1.0):
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    soundfile.write(folder / "audio" / name, np.zeros(int(16000 * seconds), np.float32), 16000)
    return f"./audio/{name}"


def mmar_rows(folder):
    rows = []
    for i, modality in enumerate(("sound", "music", "speech", "sound-music", "mix-sound-music-speech")):
        rows.append({"id": f"mmar-{i}", "audio_path": clip(folder, f"{i}.wav"), "question": f"Question {i}?",
                     "choices": ["a dog", "a cat", "a bird"][: 2 + i % 2], "answer": "a cat", "modality": modality,
                     "category": "Perception Layer", "sub-category": "Counting", "language": "en",
                     "url": "https://example.org", "timestamp": "00:01-00:05"})
    rows.append({**rows[0], "id": "mmar-bad", "answer": "a horse"})  # its answer is no choice: left out
    return rows


def test_mmar_items_convert_with_their_fields_and_run_through_the_harness(tmp_path):
    path = tmp_path / "MMAR-meta.json"
    path.write_text(json.dumps(mmar_rows(tmp_path)))
    out, conversion = convert_benchmark(path, "mmar")
    assert out == tmp_path / "MMAR-meta-mmau-format.json"
    assert conversion.left_out == {"the answer is not one of the choices": ["mmar-bad"]}
    items = load_mmau(out)
    assert [i["id"] for i in items] == [f"mmar-{i}" for i in range(5)]
    assert [i["task"] for i in items] == ["sound", "music", "speech", "sound-music", "mix-sound-music-speech"]
    assert all(i["answer"] == "a cat" and i["category"] == "Perception Layer" and i["sub-category"] == "Counting"
               for i in items)
    assert items[0]["url"] == "https://example.org" and items[0]["audio_path"].endswith("0.wav")  # kept


def test_lettered_choices_of_the_hugging_face_copy_are_read(tmp_path):
    rows = [{"id": "h1", "audio_path": clip(tmp_path, "h.wav"), "question": "Q?",
             "choices": ["A. rain", "B. wind", "C. fire"], "answer": "B", "modality": "sound"}]
    (tmp_path / "hf.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out, _ = convert_benchmark(tmp_path / "hf.jsonl", "mmar")
    [item] = load_mmau(out)
    assert item["choices"] == ["rain", "wind", "fire"] and item["answer"] == "wind"


def test_mmau_pro_closed_form_items_from_parquet_and_the_rest_counted(tmp_path, capsys):
    pandas = pytest.importorskip("pandas", reason="MMAU-Pro ships parquet: pip install pandas pyarrow")
    pytest.importorskip("pyarrow", reason="MMAU-Pro ships parquet: pip install pyarrow")
    rows = [
        {"id": "p1", "audio_path": [clip(tmp_path, "p1.wav")], "question": "Which?", "choices": ["x", "y"],
         "answer": "y", "category": "sound"},
        {"id": "p2", "audio_path": [clip(tmp_path, "p2a.wav"), clip(tmp_path, "p2b.wav")], "question": "Same?",
         "choices": ["yes", "no", "unsure"], "answer": "no", "category": "multi-audio"},
        {"id": "p3", "audio_path": [clip(tmp_path, "p3.wav")], "question": "Describe it.", "choices": [],
         "answer": "a long text", "category": "open"},
    ]
    pandas.DataFrame(rows).to_parquet(tmp_path / "test.parquet")
    assert cli.main(["convert-benchmark", str(tmp_path / "test.parquet"), "--format", "mmau-pro"]) == 0
    said = capsys.readouterr().out
    assert "2 items converted" in said and "1 left out: open-ended" in said
    items = load_mmau(tmp_path / "test-mmau-format.json")
    assert [i["id"] for i in items] == ["p1", "p2"] and [i["task"] for i in items] == ["sound", "multi-audio"]
    assert isinstance(items[1]["audio_path"], list) and len(items[1]["audio_path"]) == 2  # multi-audio kept


def test_a_file_of_another_shape_is_refused_naming_the_fields(tmp_path, capsys):
    (tmp_path / "x.json").write_text(json.dumps([{"id": 1, "text": "no"}]))
    assert cli.main(["convert-benchmark", str(tmp_path / "x.json"), "--format", "mmar"]) == 1
    err = capsys.readouterr().err
    assert "no ['audio_path', 'question', 'choices', 'answer'] field" in err and "mmar" in err
