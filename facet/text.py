"""CLIP's text tower: a causal transformer over BPE tokens, pooled at the end-of-text token.

    tokens (B, L) -> token_embedding + positional_embedding -> transformer (causal mask)
    -> ln_final -> the vector at <|endoftext|> (B, C) @ text_projection (C, E) -> (B, E)

The causal mask lets position t see positions <= t only, so the end-of-text vector summarises
exactly the prompt and never the padding after it (GPT-2 style, CLIP sec. 2.4).

OpenAI's checkpoints keep the text parameters at the top level of the model (no `text.`
prefix), so `CLIP` (facet/clip.py) inherits from `TextTransformer` to keep those names.
We find the end token by its id (vocab_size - 1); OpenAI's `argmax` over token ids relies on
the end token being the largest id present, which the id search does not need.
"""
from __future__ import annotations

import torch
from torch import nn

from facet.transformer import Transformer


def causal_mask(length: int, device: torch.device | None = None) -> torch.Tensor:
    """(L, L) bool mask, True = keep: query i may attend to keys j <= i."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


def eot_positions(tokens: torch.Tensor, eot_token: int) -> torch.Tensor:
    """Index of the first end-of-text token per row.

    Args:
        tokens: (B, L) int64 ids.
        eot_token: the end-of-text id.
    Returns:
        (B,) int64 positions.
    Raises:
        ValueError: a row has no end-of-text token (e.g. tokens from another vocabulary).
    """
    is_eot = tokens == eot_token  # (B, L)
    missing = (~is_eot.any(dim=1)).nonzero().flatten().tolist()
    if missing:
        raise ValueError(f"rows {missing[:5]} contain no end-of-text token {eot_token}; "
                         f"tokenize with the tokenizer that matches this model's vocabulary")
    return is_eot.int().argmax(dim=1)  # argmax of a 0/1 row = first True


class TextTransformer(nn.Module):
    """Causal text encoder with OpenAI CLIP's (top-level) parameter names.

    Args:
        context_length: L, maximum number of tokens (length of the positional embedding).
        vocab_size: number of token ids; the last one is <|endoftext|>.
        width: C.
        layers: transformer blocks.
        heads: attention heads.
        output_dim: E, the joint embedding size.
        quick_gelu: QuickGELU MLPs (OpenAI's checkpoints).
    """

    def __init__(self, context_length: int, vocab_size: int, width: int, layers: int,
                 heads: int, output_dim: int, quick_gelu: bool = False):
        super().__init__()
        self.context_length, self.vocab_size = context_length, vocab_size
        self.transformer = Transformer(width, layers, heads, quick_gelu)
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, output_dim))
        # CLIP's initialize_parameters (the blocks are initialised by Transformer)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    @property
    def eot_token(self) -> int:
        return self.vocab_size - 1

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embed tokenised texts.

        Args:
            tokens: (B, L) int64 from `Tokenizer.tokenize`, L <= context_length, each row
                holding an end-of-text token.
        Returns:
            (B, E) text embeddings (not normalised).
        """
        B, L = tokens.shape
        if L > self.context_length:
            raise ValueError(f"{L} tokens exceed the context length {self.context_length}")
        x = self.token_embedding(tokens) + self.positional_embedding[:L]  # (B, L, C)
        x = self.transformer(x, attn_mask=causal_mask(L, tokens.device))  # (B, L, C)
        eot = eot_positions(tokens, self.eot_token)  # (B,)
        x = self.ln_final(x[torch.arange(B, device=tokens.device), eot])  # (B, C)
        return x @ self.text_projection  # (B, E)
