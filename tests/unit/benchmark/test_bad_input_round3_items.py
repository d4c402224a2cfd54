"""Bad input, round 3, for benchmark items: text compared as a reader sees it, one linear-time validation shared by
`load_mmau` and `run_benchmark`, JSON Lines files, audio markers in item text, and integer ids.

Each test fails on the code before this round (866792f) and checks a second computation or that the message names
the input."""

from __future__ import annotations

import json
import re
import shutil
import time
import unicodedata
from pathlib import Path

import pytest
import soundfile

from lens_audio.benchmark import BenchmarkError, load_mmau, run_benchmark, score_output, string_match
from tests.helpers.reference import waveform

CAFE_NFC = unicodedata.normalize("NFC", "café")
CAFE_NFD = unicodedata.normalize("NFD", "café")


def reader_text(text: str) -> str:
    """What a reader sees, computed here by hand: NFC, runs of whitespace as one space, no outer spaces."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def item(id_="x", **fields):
    return {"id": id_, "audio_id": "a.wav", "question": "What is it?", "choices": ["dog", "cat"], "answer": "dog",
            **fields}


def bench(folder: Path, items, name: str = "bench.json", text: str | None = None) -> Path:
    soundfile.write(folder / "a.wav", waveform(0.5, 1), 16000)
    path = folder / name
    path.write_text(json.dumps(items) if text is None else text, encoding="utf-8")
    return path


# --- look-alike text ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "choices",
    [["a dog barking", "a dog  barking", "a cat"],  # inner whitespace
     [f"{CAFE_NFC} noise", f"{CAFE_NFD} noise", "street"],  # NFC and NFD of one word
     ["dog\u00a0bark", "dog bark", "cat"]],  # a no-break space
)
def test_look_alike_choices_are_refused_naming_the_item(tmp_path, choices):
    assert choices[0] != choices[1] and reader_text(choices[0]) == reader_text(choices[1])  # they print alike
    path = bench(tmp_path, [item("good"), item("look-alike", choices=choices, answer=choices[2])])
    with pytest.raises(BenchmarkError) as raised:
        load_mmau(path)
    message = str(raised.value)
    assert str(path) in message and "item 1 ('look-alike')" in message and "choices repeat" in message
    items = [{"id": "r", "audio_path": str(tmp_path / "a.wav"), "question": "Which?", "choices": choices,
              "answer": choices[2]}]
    with pytest.raises(BenchmarkError, match=re.escape("item 0 ('r'): choices repeat")):  # before any model work
        run_benchmark(None, items, None, progress=False)


def test_nfd_answer_matches_its_nfc_choice_and_scores(tmp_path):
    choices = [f"{CAFE_NFC} noise", "street traffic"]
    loaded = load_mmau(bench(tmp_path, [item("n", choices=choices, answer=f"{CAFE_NFD}  noise")]))[0]
    assert loaded["answer"] == choices[0]  # the answer is its choice as the file writes it
    # scoring reads words as a reader sees them: the NFD answer scores as the NFC one does
    for output in (choices[0], f"The answer is {CAFE_NFC} noise.", f"<answer>{CAFE_NFD} noise</answer>"):
        extracted, correct = score_output(output, f"{CAFE_NFD} noise", choices)
        assert correct and correct == string_match(choices[0], reader_text(extracted), choices)
    assert not score_output("street traffic", f"{CAFE_NFD} noise", choices)[1]


def test_choice_key_is_nfc_spaces_and_case():
    from lens_audio.benchmark.text import choice_key

    assert choice_key(" Caf\u0065\u0301\tNoise ") == choice_key("café noise") == "café noise"
    assert choice_key("dog") != choice_key("dogs")


# --- one linear validation ---------------------------------------------------------------------------------------
class CountingId(str):
    """An id that counts how often it is compared with `==` (a quadratic duplicate search compares every pair)."""

    comparisons = 0

    def __eq__(self, other):
        CountingId.comparisons += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_run_benchmark_finds_duplicate_ids_in_linear_time(tmp_path):
    n = 2000
    items = [{"id": CountingId(f"id-{i}"), "audio_path": "a.wav", "question": "Which?", "choices": ["dog", "cat"],
              "answer": "dog"} for i in range(n)]
    items.append({**items[7], "id": CountingId("id-7")})
    CountingId.comparisons = 0
    with pytest.raises(BenchmarkError) as raised:
        run_benchmark(None, items, None, progress=False)
    assert CountingId.comparisons < 10 * n, CountingId.comparisons  # not one comparison per pair of items
    assert f"item {n} ('id-7'): duplicate id (also item 7" in str(raised.value)


def test_validation_of_100k_items_is_linear_and_shared(tmp_path):
    """100 000 items with a duplicate id at the end: each of validate_items, load_mmau and run_benchmark finds it in
    seconds (a search over pairs takes hours). The bound is generous: 2-core CPUs shared with other work."""
    from lens_audio.benchmark.items import validate_items

    items = [item(f"id-{i}", choices=[f"dog {i}", f"cat {i}"], answer=f"dog {i}") for i in range(100_000)]
    items.append(item("id-5"))
    path = bench(tmp_path, items)
    run_items = [{**i, "audio_path": "a.wav"} for i in items]
    says = re.escape("item 100000 ('id-5'): duplicate id (also item 5")
    for check in (lambda: validate_items(items, "these items"), lambda: load_mmau(path),
                  lambda: run_benchmark(None, run_items, None, progress=False)):
        started = time.perf_counter()
        with pytest.raises(BenchmarkError, match=says):
            check()
        assert time.perf_counter() - started < 20


def test_ids_are_compared_as_text(tmp_path):
    path = bench(tmp_path, [item(1), item("1")])
    with pytest.raises(BenchmarkError, match=re.escape("item 1 ('1'): duplicate id (also item 0); ids are compared "
                                                       "as text")):
        load_mmau(path)


# --- JSON Lines ------------------------------------------------------------------------------------------------
def test_json_lines_file_is_named_and_a_list_is_asked_for(tmp_path):
    text = "".join(json.dumps(i) + "\n" for i in [item("a"), item("b")])
    path = bench(tmp_path, None, name="bench.jsonl", text=text)
    with pytest.raises(BenchmarkError) as raised:
        load_mmau(path)
    message = str(raised.value)
    assert str(path) in message and "JSON Lines" in message and "JSON list" in message
    fixed = bench(tmp_path, [json.loads(line) for line in text.splitlines()], name="fixed.json")
    assert [i["id"] for i in load_mmau(fixed)] == ["a", "b"]  # the same items as a list load


def test_json_object_file_asks_for_a_list(tmp_path):
    path = bench(tmp_path, None, text=json.dumps({"items": [item("a")]}))
    with pytest.raises(BenchmarkError, match=re.escape(f"{path} must hold a JSON list of items (MMAU format), not a "
                                                       "dict")):
        load_mmau(path)


# --- audio markers in item text ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fields, field, marker",
    [({"question": "What is <|AUDIO|> here?"}, "question", "<|AUDIO|>"),
     ({"hint": "listen to <sound> first"}, "hint", "<sound>"),
     ({"choices": ["dog", "[AUDIO] cat"]}, "choice 1", "[AUDIO]"),
     ({"question": "<|audio_bos|>What?"}, "question", "<|audio_bos|>")],
)
def test_audio_markers_in_item_text_are_refused_naming_where(tmp_path, fields, field, marker):
    path = bench(tmp_path, [item("good"), item("marked", **fields)])
    with pytest.raises(BenchmarkError) as raised:
        load_mmau(path)
    message = str(raised.value)
    assert "item 1 ('marked')" in message and f"its {field} holds the audio marker {marker!r}" in message
    loaded = {**item("marked", **fields), "audio_path": str(tmp_path / "a.wav")}
    with pytest.raises(BenchmarkError, match=re.escape(f"its {field} holds the audio marker {marker!r}")):
        run_benchmark(None, [loaded], None, progress=False)


# --- explore --item with integer ids -----------------------------------------------------------------------------
def test_explore_finds_an_integer_id(tmp_path, capsys):
    from lens_audio.cli import main
    from lens_audio.organisms import BENCHMARK_V1

    source = next(i for i in load_mmau(BENCHMARK_V1, split="test") if i["hint"] == "conflicting")
    shutil.copy(source["audio_path"], tmp_path / "clip.wav")
    entry = {k: v for k, v in source.items() if k not in ("audio_path",)}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps([{**entry, "id": 1, "audio_id": "clip.wav"}, {**entry, "id": 2, "audio_id": "clip.wav",
                                                                              "question": "Second question?"}]))
    out = tmp_path / "page.html"
    assert main(["explore", "--item", "2", "--benchmark", str(path), "--out", str(out)]) == 0
    page = out.read_text()
    assert "Second question?" in page and "explorer: 2<" in page  # the item with the integer id 2, not item 1
    assert main(["explore", "--item", "3", "--benchmark", str(path), "--out", str(out)]) == 1
    assert "no item '3' in the benchmark (2 items, e.g. 1, 2)" in capsys.readouterr().err


def test_run_benchmark_names_a_missing_question_before_any_model_work():
    items = [{"id": "q", "audio_path": "a.wav", "choices": ["dog", "cat"], "answer": "dog"}]
    with pytest.raises(BenchmarkError, match=re.escape("item 0 ('q'): lacks ['question']")):
        run_benchmark(None, items, None, template="letters", progress=False)
