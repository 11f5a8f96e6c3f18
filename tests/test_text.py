"""mmcourse.text (notebook 01, §5–7): pooling, sentence embeddings, neighbours, attention maps."""
import numpy as np
import pytest
import torch

from mmcourse import text


def test_mean_pool_ignores_padding_and_matches_a_loop():
    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 4, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    pooled = text.mean_pool(hidden, mask)
    loop = torch.stack([hidden[i, :int(mask[i].sum())].mean(0) for i in range(3)])
    assert pooled.dtype == torch.float64 and torch.allclose(pooled, loop)
    hidden2 = hidden.clone()
    hidden2[mask == 0] = 1e6  # whatever sits at padded positions must not matter
    assert torch.allclose(text.mean_pool(hidden2, mask), loop)


def test_nearest_neighbours_matches_sklearn():
    from sklearn.neighbors import NearestNeighbors
    rng = np.random.default_rng(0)
    corpus, queries = rng.normal(size=(50, 8)), rng.normal(size=(4, 8))
    scores, idx = text.nearest_neighbours(torch.tensor(queries), torch.tensor(corpus), k=5)
    dist, ref = NearestNeighbors(n_neighbors=5, metric="cosine").fit(corpus).kneighbors(queries)
    assert idx.shape == (4, 5) and np.array_equal(idx.numpy(), ref)
    assert np.allclose(scores.numpy(), 1 - dist, atol=1e-5)
    assert (scores[:, :-1] >= scores[:, 1:]).all()


@pytest.fixture(scope="module")
def minilm(models_ready):
    from mmcourse import pretrained
    return pretrained.load("text")


def test_embeddings_do_not_depend_on_padding(minilm):
    """A sentence embedded alone (no padding) equals the same sentence padded in a batch."""
    model, tok = minilm
    sentences = ["a dog", "a black dog runs through the tall green grass"]
    together = text.embed_sentences(model, tok, sentences)
    alone = torch.cat([text.embed_sentences(model, tok, [s]) for s in sentences])
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.allclose(together.norm(dim=-1), torch.ones(2), atol=1e-5)
    e = text.embed_sentences(model, tok, ["cat", "kitten", "stocks fell sharply today"])
    assert e[0] @ e[1] > 0.5 and e[0] @ e[2] < 0.2


def test_attention_maps_rows_sum_to_one_and_model_is_restored(minilm):
    model, tok = minilm
    before = model.config._attn_implementation
    tokens, w = text.attention_maps(model, tok, "The cat sat on the mat.")
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert w.shape == (model.config.num_hidden_layers, model.config.num_attention_heads, len(tokens), len(tokens))
    assert torch.allclose(w.sum(-1), torch.ones(()), atol=1e-5)
    assert model.config._attn_implementation == before
