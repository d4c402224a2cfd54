"""The hook points of `HookedAudioLM`: name pattern, shape and meaning, for docs/hooks.md and `lens-audio hooks`.

`{L}` is a layer index. Shapes use: batch, pos (token positions), head,
kv_head (key/value heads, fewer than heads under grouped-query attention),
clips (audio clips in the batch, in prompt order), frames (mel frames,
2 * audio_ctx), audio_ctx (encoder positions), audio_pos (audio tokens per
clip before trimming, audio_ctx // 2). A test checks that every hook of a
model matches exactly one row.
"""

from __future__ import annotations

import re

HOOK_TABLE: tuple[tuple[str, str, str], ...] = (
    ("audio.hook_mel", "[clips, mels, frames]", "log-mel input features of each clip"),
    ("audio.hook_conv_out", "[clips, audio_ctx, d_audio]", "output of the two-conv stem (gelu), before positions"),
    (
        "audio.blocks.{L}.hook_resid_pre / hook_resid_mid / hook_resid_post",
        "[clips, audio_ctx, d_audio]",
        "encoder residual stream",
    ),
    (
        "audio.blocks.{L}.ln1.hook_normalized / ln2.hook_normalized",
        "[clips, audio_ctx, d_audio]",
        "LayerNorm output before weight and bias",
    ),
    (
        "audio.blocks.{L}.attn.hook_q / hook_k / hook_v / hook_z",
        "[clips, audio_ctx, head, d_head]",
        "encoder attention queries, keys, values, mixed values",
    ),
    (
        "audio.blocks.{L}.attn.hook_attn_scores / hook_pattern",
        "[clips, head, audio_ctx, audio_ctx]",
        "encoder attention (padding keys masked); explicit path only",
    ),
    (
        "audio.blocks.{L}.attn.hook_result",
        "[clips, audio_ctx, head, d_audio]",
        "per-head output, computed only when hooked",
    ),
    ("audio.blocks.{L}.hook_attn_out / hook_mlp_out", "[clips, audio_ctx, d_audio]", "encoder sublayer outputs"),
    (
        "audio.blocks.{L}.mlp.hook_pre / hook_post",
        "[clips, audio_ctx, d_audio_mlp]",
        "encoder MLP before and after gelu",
    ),
    ("audio.hook_pooled", "[clips, audio_pos, d_audio]", "after AvgPool1d(2)"),
    ("audio.ln_post.hook_normalized", "[clips, audio_pos, d_audio]", "final encoder LayerNorm, before weight and bias"),
    (
        "audio.hook_audio_embeds",
        "[clips, audio_pos, d_model]",
        "projected audio embeddings (spliced in; patch here to swap audio)",
    ),
    (
        "hook_embed",
        "[batch, pos, d_model]",
        "token embeddings with the audio embeddings spliced in at <|AUDIO|> positions",
    ),
    (
        "blocks.{L}.hook_resid_pre / hook_resid_mid / hook_resid_post",
        "[batch, pos, d_model]",
        "decoder residual stream; the last block's resid_post is the paper's steering site",
    ),
    (
        "blocks.{L}.hook_q_input / hook_k_input / hook_v_input",
        "[batch, pos, head or kv_head, d_model]",
        "residual stream copied per head before ln1; after model.set_use_split_qkv_input(True)",
    ),
    (
        "blocks.{L}.attn.hook_q_input / hook_k_input / hook_v_input",
        "[batch, pos, head or kv_head, d_model]",
        "TransformerLens 4.x's names for the same per-head inputs, fired right after the block's",
    ),
    (
        "blocks.{L}.hook_attn_in",
        "[batch, pos, head, d_model]",
        "residual stream copied per head before ln1; after model.set_use_attn_in(True) (no grouped-query attention)",
    ),
    ("blocks.{L}.hook_mlp_in", "[batch, pos, d_model]", "MLP input before ln2; after model.set_use_hook_mlp_in(True)"),
    ("blocks.{L}.ln1.hook_scale / ln2.hook_scale", "[batch, pos, 1]", "RMSNorm scale sqrt(mean(x^2) + eps)"),
    (
        "blocks.{L}.ln1.hook_normalized / ln2.hook_normalized",
        "[batch, pos, d_model]",
        "RMSNorm output before the weight",
    ),
    ("blocks.{L}.attn.hook_q / hook_rot_q", "[batch, pos, head, d_head]", "queries before and after rotary"),
    (
        "blocks.{L}.attn.hook_k / hook_rot_k / hook_v",
        "[batch, pos, kv_head, d_head]",
        "keys (before and after rotary) and values; [batch, pos, head, d_head] after "
        "model.set_ungroup_grouped_query_attention(True)",
    ),
    (
        "blocks.{L}.attn.hook_attn_scores",
        "[batch, head, query, key]",
        "scaled scores, masked with the dtype minimum; explicit path only",
    ),
    (
        "blocks.{L}.attn.hook_pattern",
        "[batch, head, query, key]",
        "attention probabilities; hooking it selects the explicit path",
    ),
    ("blocks.{L}.attn.hook_z", "[batch, pos, head, d_head]", "attention-weighted values per head"),
    (
        "blocks.{L}.attn.hook_result",
        "[batch, pos, head, d_model]",
        "per-head output; when hooked or cfg.use_attn_result",
    ),
    ("blocks.{L}.hook_attn_out / hook_mlp_out", "[batch, pos, d_model]", "decoder sublayer outputs"),
    (
        "blocks.{L}.mlp.hook_pre / hook_pre_linear / hook_post",
        "[batch, pos, d_mlp]",
        "SwiGLU gate, up projection, silu(gate) * up",
    ),
    ("ln_final.hook_scale", "[batch, pos, 1]", "final RMSNorm scale"),
    ("ln_final.hook_normalized", "[batch, pos, d_model]", "final RMSNorm output before its weight"),
)


def _pattern(row: str) -> re.Pattern[str]:
    """A row like `blocks.{L}.attn.hook_q / hook_rot_q` as a regex over full hook names."""
    first, *others = [part.strip() for part in row.split("/")]
    parts = first.split(".")
    # An alternative replaces as many trailing components of the first name as it has.
    names = [first] + [".".join(parts[: len(parts) - len(o.split("."))] + [o]) for o in others]
    escaped = [re.escape(n).replace(re.escape("{L}"), r"\d+") for n in names]
    return re.compile("|".join(f"(?:{e})" for e in escaped))


_PATTERNS = tuple((_pattern(row), row) for row, _, _ in HOOK_TABLE)


def rows_matching(hook_name: str) -> list[str]:
    """The table rows that describe `hook_name` (exactly one for every hook of the model)."""
    return [row for pattern, row in _PATTERNS if pattern.fullmatch(hook_name)]


def markdown_table() -> str:
    lines = ["| hook | shape | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{name}` | `{shape}` | {meaning} |" for name, shape, meaning in HOOK_TABLE]
    return "\n".join(lines)
