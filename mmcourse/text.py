"""Text helpers (notebook 01_text_encoders; first used in 00_welcome)."""
from __future__ import annotations

import torch


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average token vectors over real tokens only: (batch, seq, dim), (batch, seq) -> (batch, dim).

    Padding positions (mask 0) must not count, or short sentences get pulled towards the
    padding vector (notebook 01, "Pooling").
    """
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


@torch.no_grad()
def embed_sentences(model, tokenizer, sentences: list[str], batch_size: int = 64,
                    normalize: bool = True) -> torch.Tensor:
    """Sentence embeddings the sentence-transformers way: mean pooling, then L2-normalise."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(sentences), batch_size):
        batch = tokenizer(sentences[i:i + batch_size], padding=True, truncation=True,
                          return_tensors="pt").to(device)
        hidden = model(**batch).last_hidden_state  # (batch, seq, dim)
        emb = mean_pool(hidden, batch["attention_mask"])
        out.append(torch.nn.functional.normalize(emb, dim=-1) if normalize else emb)
    return torch.cat(out)
