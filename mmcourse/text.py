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
    """Sentence embeddings the sentence-transformers way: mean pooling, then L2-normalise.

    Sentences are batched in order of length (so little compute goes to padding) and returned in
    the order given: (len(sentences), dim) (notebook 01, §5).
    """
    device = next(model.parameters()).device
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    out = []
    for i in range(0, len(order), batch_size):
        batch = tokenizer([sentences[j] for j in order[i:i + batch_size]], padding=True, truncation=True,
                          return_tensors="pt").to(device)
        hidden = model(**batch).last_hidden_state  # (batch, seq, dim)
        emb = mean_pool(hidden, batch["attention_mask"])
        out.append(torch.nn.functional.normalize(emb, dim=-1) if normalize else emb)
    if not out:
        return torch.empty(0, model.config.hidden_size)
    result = torch.empty_like(torch.cat(out))
    result[torch.tensor(order, device=result.device)] = torch.cat(out)
    return result


def nearest_neighbours(queries: torch.Tensor, corpus: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine top-k search (notebook 01, §6 "Nearest neighbours"; used again in 04 for retrieval).

    queries (n_q, dim), corpus (n_c, dim) → (scores (n_q, k), indices (n_q, k)), most similar first.
    The vectors need not be normalised: both sides are L2-normalised here.
    """
    q = torch.nn.functional.normalize(queries.float(), dim=-1)
    c = torch.nn.functional.normalize(corpus.float(), dim=-1)
    return (q @ c.T).topk(k, dim=-1)  # similarity (n_q, n_c), best k along the corpus axis


@torch.no_grad()
def attention_maps(model, tokenizer, sentence: str) -> tuple[list[str], torch.Tensor]:
    """Attention weights of every layer and head for one sentence (notebook 01, §7).

    Returns ``(tokens, weights)`` with weights (layers, heads, seq, seq); row i says how much
    token i attends to each token. The fused ``sdpa`` kernel does not return weights, so the
    model is switched to the ``eager`` implementation for the call and switched back afterwards.
    """
    device = next(model.parameters()).device
    batch = tokenizer(sentence, return_tensors="pt").to(device)
    before = model.config._attn_implementation
    if before != "eager":
        model.set_attn_implementation("eager")
    try:
        out = model(**batch, output_attentions=True)
    finally:
        if before != "eager":
            model.set_attn_implementation(before)
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    return tokens, torch.stack([a[0] for a in out.attentions]).cpu()
