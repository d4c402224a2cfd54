"""How a generated answer is matched to an item's options: MMAU's string match (`scoring.score_output`, the
default) or MMAU-Pro's rule for its closed-ended items, the option whose text embedding is nearest the answer's.

MMAU-Pro's evaluation embeds the model's answer and each option with an embedding model (NV-Embed-v2, its
`encode` with no instruction), normalises them, and takes the option of highest cosine similarity; the item is right
where that option is the answer. `EmbeddingMatch.from_pretrained(model)` does the same with any embedding model by
Hub id or folder: one with its own `encode` is used as it is, any other transformers encoder by the mean of its last
hidden states over the text's tokens. A model that ships its own code (NV-Embed-v2 does) is never run on the
package's own initiative: review its code, then load it with `trust_remote_code=True` yourself and pass the matcher
to `run_benchmark(answer_match=...)`. A matcher is called
as the string match is, `(output, answer, choices) -> (extracted option, correct)`, and names itself (`label`) in
the run manifest, so a run file scored one way never resumes scored another.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

Encode = Callable[[list[str]], Float[Tensor, "text dim"]]


@dataclass(frozen=True, eq=False)
class EmbeddingMatch:
    """The option whose embedding (`encode`) is nearest the answer's, by cosine similarity; ties: the first."""

    encode: Encode
    label: str  # what the manifest records, e.g. "embedding nvidia/NV-Embed-v2"

    def __call__(self, output: str, answer: str, choices: Sequence[str]) -> tuple[str, bool]:
        if not choices:
            raise ValueError("matching an answer by embedding needs the item's choices; this item has none.")
        chosen = choices[self.nearest(output, choices)]
        return chosen, chosen == answer

    def nearest(self, output: str, choices: Sequence[str]) -> int:
        """The index of the option nearest `output`."""
        vectors = torch.nn.functional.normalize(self.encode([output, *choices]).float(), dim=-1)
        return int((vectors[1:] @ vectors[0]).argmax())

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: str | torch.device | None = None,
                        trust_remote_code: bool = False, max_length: int = 4096) -> "EmbeddingMatch":
        """An embedding model by Hub id or folder (see the module docstring)."""
        from transformers import AutoModel, AutoTokenizer

        model = AutoModel.from_pretrained(name_or_path, trust_remote_code=trust_remote_code).eval()
        if device is not None:
            model = model.to(device)
        if hasattr(model, "encode"):  # NV-Embed-v2 and others with their own pooling

            def encode(texts: list[str]) -> Tensor:
                with torch.no_grad():
                    return torch.as_tensor(model.encode(texts, instruction="", max_length=max_length))

            return cls(encode, f"embedding {name_or_path}")
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        return cls(lambda texts: mean_pooled(model, tokenizer, texts, max_length), f"embedding {name_or_path}")


def mean_pooled(model: Any, tokenizer: Any, texts: list[str], max_length: int) -> Float[Tensor, "text dim"]:
    """Each text's mean last hidden state over its tokens (padding left out)."""
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    encoded = {k: v.to(model.device) for k, v in encoded.items()}
    with torch.no_grad():
        hidden = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)


_LOADED: dict[str, EmbeddingMatch] = {}


def embedding_match(name_or_path: str) -> EmbeddingMatch:
    """`EmbeddingMatch.from_pretrained(name_or_path)`, loaded once per process, never with remote code: a model that
    needs its own code is refused, naming how to load it after reviewing that code."""
    if name_or_path not in _LOADED:
        device = "cuda" if torch.cuda.is_available() else None
        try:
            _LOADED[name_or_path] = EmbeddingMatch.from_pretrained(name_or_path, device)
        except ValueError as exc:
            if "trust_remote_code" not in str(exc):
                raise
            raise ValueError(
                f"the embedding model {name_or_path!r} ships its own code, which lens_audio does not run on its own: "
                "review it, then build the matcher yourself, EmbeddingMatch.from_pretrained(name, "
                "trust_remote_code=True), and pass it to run_benchmark(answer_match=...); or give --answer-embedder "
                "a model transformers loads without remote code."
            ) from exc
    return _LOADED[name_or_path]
