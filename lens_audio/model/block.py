"""The pre-norm residual block shared by the audio encoder and the decoder, with TransformerLens's block hooks."""

from __future__ import annotations

from collections.abc import Callable

from jaxtyping import Float
from torch import Tensor, nn

from lens_audio.model.hook_point import HookPoint


class PreNormBlock(nn.Module):
    """`resid_pre -> ln1 -> attn -> + -> resid_mid -> ln2 -> mlp -> + -> resid_post`, each step hooked.

    Subclasses create `ln1`, `attn`, `ln2` and `mlp`, and call `residual` with
    the attention call (which may need masks, positions or a cache).
    """

    ln1: nn.Module
    ln2: nn.Module
    mlp: nn.Module
    # hook_resid_post is the one residual stream the next block (or ln_final) reads: TransformerLens 4.x's logit
    # lens and readout tools check this flag.
    hook_out_is_single_residual_stream = True

    def __init__(self) -> None:
        super().__init__()
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def residual(
        self, resid: Float[Tensor, "batch pos d"], attend: Callable[[Tensor], Tensor]
    ) -> Float[Tensor, "batch pos d"]:
        resid = self.hook_resid_pre(resid)
        resid = self.hook_resid_mid(resid + self.hook_attn_out(attend(self.ln1(resid))))
        return self.hook_resid_post(resid + self.hook_mlp_out(self.mlp(self.ln2(resid))))
