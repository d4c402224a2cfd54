"""MMAU-Pro's answer matching: the option whose embedding is nearest the answer's. An embedding model saved to a
folder is loaded by path and its choice equals cosine similarities computed a second way (each text embedded
alone, no padding); in a generate-mode run every record's option is the matcher's, the manifest names it, and a
run file scored one way refuses to resume scored another."""

from __future__ import annotations

import json

import pytest
import torch

from lens_audio import HookedAudioLM
from lens_audio.benchmark import load_mmau
from lens_audio.benchmark.answer_match import EmbeddingMatch
from lens_audio.benchmark.manifest import RunMismatchError
from lens_audio.benchmark.runner import run_benchmark
from lens_audio.paper import profile_for

WORDS = ["dog", "bark", "bell", "rain", "music", "a", "the", "is", "it", "sound", "of", "piano", "drum"]


@pytest.fixture(scope="module")
def embedder_folder(tmp_path_factory):
    """A tiny random BERT encoder and its word-level tokenizer, saved as a Hub-style folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("embedder")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=5 + len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32)
    BertModel(config).save_pretrained(folder)
    return folder


def test_the_nearest_option_is_the_one_of_highest_cosine_computed_text_by_text(embedder_folder):
    from transformers import AutoModel, AutoTokenizer

    match = EmbeddingMatch.from_pretrained(str(embedder_folder))
    model, tok = AutoModel.from_pretrained(embedder_folder).eval(), AutoTokenizer.from_pretrained(embedder_folder)

    def alone(text):  # one text, no padding: the mean of its tokens' last hidden states
        with torch.no_grad():
            return model(**tok(text, return_tensors="pt")).last_hidden_state[0].mean(0)

    choices = ["dog bark", "bell", "the sound of rain is music", "piano"]
    for output in ["it is a dog", "music of the rain", "piano drum drum", "bell"]:
        want = torch.stack([torch.cosine_similarity(alone(output), alone(c), dim=0) for c in choices]).argmax()
        extracted, correct = match(output, "bell", choices)
        assert extracted == choices[int(want)] and correct == (extracted == "bell")
    assert match("bell", "bell", choices) == ("bell", True)  # an answer that is an option is matched to it
    assert match.label == f"embedding {embedder_folder}"


def letters_of(texts):
    """A stand-in embedding: each text's letter counts (the nearest option shares the answer's letters)."""
    return torch.tensor([[t.lower().count(chr(c)) for c in range(ord("a"), ord("z") + 1)] for t in texts],
                        dtype=torch.float32)


def test_a_generate_run_matches_every_answer_by_embedding_and_records_it(small_bench, tmp_path):
    model = HookedAudioLM.from_pretrained("workshop")
    items = load_mmau(small_bench)[:6]
    prompt = profile_for("workshop").prompt
    match = EmbeddingMatch(letters_of, "embedding letters")
    path = tmp_path / "run.jsonl"
    run = run_benchmark(model, items, path, template=prompt, mode="generate", max_new_tokens=4, listening=False,
                        progress=False, answer_match=match)
    for item, record in zip(items, run.records):
        assert record["extracted"] == match(record["output"], item["answer"], item["choices"])[0]
        assert record["correct"] == (record["extracted"] == item["answer"])
    assert json.loads(path.with_suffix(".manifest.json").read_text())["answer_match"] == "embedding letters"
    with pytest.raises(RunMismatchError, match="answer_match"):
        run_benchmark(model, items, path, template=prompt, mode="generate", max_new_tokens=4, listening=False,
                      progress=False)  # MMAU's string match on a file matched by embedding
    with pytest.raises(ValueError, match="needs generate mode"):
        profile_for("workshop").replace(answer_embedder="nvidia/NV-Embed-v2")  # the workshop profile: choice mode


def test_a_model_that_needs_its_own_code_is_refused_naming_how_to_load_it(tmp_path):
    """The flag's loader never runs a model's own code: a folder whose config asks for it is refused, with the fix."""
    from lens_audio.benchmark.answer_match import embedding_match

    folder = tmp_path / "remote"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "nvembed", "auto_map": {
        "AutoModel": "modeling_nvembed.NVEmbedModel", "AutoConfig": "configuration_nvembed.NVEmbedConfig"}}))
    with pytest.raises(ValueError, match="ships its own code.*trust_remote_code=True"):
        embedding_match(str(folder))
