"""TMRoPE: the Qwen Omni thinkers' multimodal rotary positions (time, height, width), for audio and text prompts.

Each position is three ids `[3, batch, pos]` (temporal, height, width). The rotary frequencies of a head are split
into `mrope_section` runs (e.g. `[16, 24, 24]` of the 64 frequencies of a 128-wide head): run `i` turns by the
ids of row `i % 3`; the two halves of the head use the same frequencies, as in plain RoPE.

Which ids a prompt gets is transformers' `get_rope_index`. For text and audio (no image or video), it gives every
real token the count of real tokens before it, the same in all three rows (audio tokens are 40 ms apart and
Qwen2.5-Omni advances 25 ids a second, so audio positions advance with time), and padding id 1; the per-row offset
kept for decoding (`rope_deltas`) is then 0, so a KV-cached step continues from the count of real tokens. With
three equal rows TMRoPE equals plain RoPE at those ids; passing `position_ids` of shape `[3, batch, pos]` with
unequal rows to `HookedAudioLM.forward` exercises the sections. Images and videos (3-D vision grids, audio
interleaved with video) are not ported: `rope_index` says so.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lens_audio.model.decoder import RotaryEmbedding


class MultimodalRotaryEmbedding:
    """Rotary angles from `[3, batch, pos]` (or `[batch, pos]`, the same ids in all three rows) position ids.

    `interleaved=False` (Qwen2.5-Omni): frequencies in runs, run `i` from row `i % 3`. `interleaved=True` (Qwen3-Omni):
    frequency `j` from row `j % 3` while `j < 3 * sections[j % 3]` (rows 1 and 2), from row 0 otherwise."""

    def __init__(self, d_head: int, base: float, sections: tuple[int, ...], interleaved: bool = False) -> None:
        if sum(sections) != d_head // 2:
            raise ValueError(
                f"rope_parameters['mrope_section'] = {list(sections)} must sum to head_dim // 2 = {d_head // 2}."
            )
        self.d_head, self.base, self.sections, self.interleaved = d_head, base, tuple(sections), interleaved

    def cos_sin(
        self, position_ids: Int[Tensor, "*three batch pos"], dtype: torch.dtype
    ) -> tuple[Float[Tensor, "batch pos 1 d_head"], Float[Tensor, "batch pos 1 d_head"]]:
        if position_ids.ndim == 2:
            position_ids = position_ids[None].expand(3, -1, -1)
        if position_ids.ndim != 3 or position_ids.shape[0] != 3:
            raise ValueError(
                f"TMRoPE position_ids have shape [3, batch, pos] (time, height, width) or [batch, pos]; got "
                f"{tuple(position_ids.shape)}."
            )
        exponents = torch.arange(0, self.d_head, 2, dtype=torch.int64, device=position_ids.device).float() / self.d_head
        inv_freq = 1.0 / (self.base**exponents)
        freqs = position_ids[..., None].float() * inv_freq  # [3, batch, pos, d_head / 2]
        if self.interleaved:
            j = torch.arange(freqs.shape[-1], device=freqs.device)
            row = torch.where((j % 3 > 0) & (j < 3 * torch.tensor(self.sections, device=j.device)[j % 3]), j % 3, 0)
            mixed = freqs.gather(0, row.expand(1, *freqs.shape[1:]))[0]
        else:
            runs = freqs.split(list(self.sections), dim=-1)
            mixed = torch.cat([run[i % 3] for i, run in enumerate(runs)], dim=-1)
        angles = torch.cat((mixed, mixed), dim=-1)[:, :, None, :]
        return angles.cos().to(dtype), angles.sin().to(dtype)


def make_rotary(
    d_head: int, base: float, sections: tuple[int, ...] | None, interleaved: bool = False
) -> RotaryEmbedding | MultimodalRotaryEmbedding:
    """The decoder's rotary embedding: TMRoPE when the family has `mrope_section`s (interleaved for Qwen3-Omni),
    plain RoPE otherwise."""
    if sections is None:
        return RotaryEmbedding(d_head, base)
    return MultimodalRotaryEmbedding(d_head, base, sections, interleaved)


def rope_index(
    input_ids: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"] | None,
    vision_token_ids: tuple[int, ...] = (),
) -> tuple[Int[Tensor, "3 batch pos"], Int[Tensor, "batch 1"]]:
    """`(position_ids [3, batch, pos], rope_deltas [batch, 1])` as transformers' `get_rope_index` computes them for
    an audio and text prompt; a prompt holding an image or video placeholder (`vision_token_ids`) is refused."""
    if vision_token_ids and bool(torch.isin(input_ids, torch.tensor(vision_token_ids, device=input_ids.device)).any()):
        raise ValueError(
            "the prompt holds image/video placeholders; HookedAudioLM's Omni thinker port takes audio and text only."
        )
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(input_ids.device)
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
    deltas = positions.max(-1, keepdim=True).values + 1 - mask.long().sum(-1, keepdim=True)
    return positions[None].expand(3, -1, -1), deltas
