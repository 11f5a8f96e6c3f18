"""mmcourse.captioning: vocabulary, labels, cached grid features, the decoder, greedy and beam search."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmcourse import captioning, metrics

CAPTIONS = ["A dog runs on the grass .", "A black dog runs.", "The dog jumps over a log!", "A man rides a bike",
            "a man on a bike", "Two dogs play", "a dog and a man"]


def test_vocab_counts_specials_and_round_trip():
    vocab = captioning.Vocab.build(CAPTIONS, min_count=2)
    assert vocab.words[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert vocab.words[4] == "a"                          # the most frequent word first
    assert "log" not in vocab.index and "dog" in vocab.index
    ids = vocab.encode("A dog jumps over a log", max_len=10)
    assert ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id
    assert ids.count(vocab.unk_id) == 3                    # jumps, over, log are rare
    assert vocab.decode(ids + [vocab.pad_id]) == "a dog <unk> <unk> a <unk>"
    assert vocab.decode([vocab.bos_id, 4, vocab.eos_id, 5]) == "a"   # stops at <eos>


def test_vocab_truncates_but_keeps_eos_and_pads_right():
    vocab = captioning.Vocab.build(CAPTIONS, min_count=1)
    ids = vocab.encode("a dog a dog a dog a dog", max_len=5)
    assert len(ids) == 5 and ids[-1] == vocab.eos_id
    batch = vocab.encode_batch(["a dog", "a man rides a bike"], max_len=8)
    assert batch.shape == (2, 8) and batch[0, 4:].eq(vocab.pad_id).all()
    assert vocab.coverage(["a dog", "a zebra"]) == pytest.approx(3 / 4)


def test_shift_labels_masks_padding_only():
    tokens = torch.tensor([[1, 7, 9, 2, 0, 0], [1, 5, 6, 7, 8, 2]])
    inputs, labels = captioning.shift_labels(tokens, pad_id=0)
    assert inputs.tolist() == [[1, 7, 9, 2, 0], [1, 5, 6, 7, 8]]
    assert labels.tolist() == [[7, 9, 2, -100, -100], [5, 6, 7, 8, 2]]
    assert tokens[0, 4] == 0                               # the input is not modified


def _decoder(vocab_size: int = 12, seed: int = 0) -> captioning.CaptionDecoder:
    torch.manual_seed(seed)
    return captioning.CaptionDecoder(vocab_size, d_visual=16, n_visual=4, d_model=32, n_layers=2, n_heads=2,
                                     dropout=0.0, max_len=12).eval()


def test_decoder_is_causal_and_sees_the_image():
    model = _decoder()
    feats = torch.randn(2, 4, 16)
    tokens = torch.randint(3, 12, (2, 6))
    logits = model(feats, tokens)
    assert logits.shape == (2, 6, 12)
    changed = tokens.clone()
    changed[:, 4] = (changed[:, 4] + 1) % 12
    with torch.no_grad():
        a, b = model(feats, tokens), model(feats, changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])         # positions before 4 do not see token 4
    assert not torch.allclose(a[:, 4:], b[:, 4:])
    other = model(torch.randn(2, 4, 16), tokens)
    assert not torch.allclose(other, logits)               # cross-attention: another image, other logits
    with pytest.raises(ValueError, match="max_len"):
        model(feats, torch.zeros(2, 13, dtype=torch.long))


def test_decoder_keeps_cross_attention_on_request():
    model = _decoder()
    model.keep_attention(True)
    model(torch.randn(1, 4, 16), torch.randint(3, 12, (1, 5)))
    w = model.layers[-1].cross_weights
    assert w.shape == (1, 2, 5, 4)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 2, 5))
    model.keep_attention(False)
    assert model.layers[-1].cross_weights is None


def test_loss_ignores_padding():
    model = _decoder()
    feats = torch.randn(2, 4, 16)
    tokens = torch.tensor([[1, 5, 6, 2, 0, 0], [1, 7, 8, 9, 2, 0]])
    padded_differently = torch.cat([tokens, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    torch.testing.assert_close(captioning.loss_fn(model, (feats, tokens)),
                               captioning.loss_fn(model, (feats, padded_differently)))


def _plain_greedy(model, feats, steps):
    memory = model.encode(feats)
    seq = torch.ones(len(feats), 1, dtype=torch.long)
    logp = torch.zeros(len(feats))
    done = torch.zeros(len(feats), dtype=torch.bool)
    for _ in range(steps):
        lp = torch.log_softmax(model.decode(seq, memory)[:, -1], -1)
        nxt = lp.argmax(-1)
        logp += torch.where(done, torch.zeros_like(logp), lp.max(-1).values)
        done |= nxt == 2
        seq = torch.cat([seq, nxt[:, None]], 1)
    return seq[:, 1:].tolist(), logp


@torch.no_grad()
def test_beam_of_one_is_greedy_and_wider_beams_are_at_least_as_likely_mostly():
    model = _decoder(seed=3)
    feats = torch.randn(40, 4, 16)
    step = captioning.decoder_step(model, feats)
    tokens, logp = captioning.greedy(step, 40, bos=1, eos=2, max_len=8)
    plain, plain_logp = _plain_greedy(model, feats, 8)
    assert tokens == [row[: row.index(2)] if 2 in row else row for row in plain]
    np.testing.assert_allclose(logp, plain_logp.numpy(), rtol=1e-5, atol=1e-5)
    wide_tokens, wide = captioning.beam_search(captioning.decoder_step(model, feats, repeat=4), 40, 1, 2, beam=4,
                                               max_len=8)
    better = np.mean(np.array(wide) >= np.array(logp) - 1e-5)
    assert better >= 0.8, better
    assert all(2 not in t for t in wide_tokens)             # tokens end before <eos>


def test_beam_search_length_normalisation_prefers_the_longer_caption():
    # vocabulary <pad> <bos> <eos> a b. "a <eos>": log-prob 2·log 0.6 = -1.02 (-0.51 per token);
    # "b b b <eos>": log 0.4 + 2·log 0.7 + log 0.9 = -1.74 (-0.43 per token)
    def dist(**p: float) -> list[float]:
        probs = [p.get(w, 1e-9) for w in ("pad", "bos", "eos", "a", "b")]
        return list(np.log(np.array(probs) / sum(probs)))

    def step(prefixes: torch.Tensor) -> torch.Tensor:
        rows = []
        for p in prefixes.tolist():
            if len(p) == 1:
                rows.append(dist(a=0.6, b=0.4))
            elif p[-1] == 3:
                rows.append(dist(eos=0.6, a=0.4))
            elif len(p) < 4:
                rows.append(dist(b=0.7, eos=0.3))
            else:
                rows.append(dist(eos=0.9, b=0.1))
        return torch.tensor(rows, dtype=torch.float32)

    short, short_logp = captioning.beam_search(step, 1, 1, 2, beam=2, max_len=6, alpha=0.0)
    long, long_logp = captioning.beam_search(step, 1, 1, 2, beam=2, max_len=6, alpha=1.0)
    assert short == [[3]] and long == [[4, 4, 4]]
    assert short_logp[0] == pytest.approx(2 * np.log(0.6), abs=1e-5)
    assert long_logp[0] == pytest.approx(np.log(0.4) + 2 * np.log(0.7) + np.log(0.9), abs=1e-5)


def test_grid_features_are_cached_by_weights_images_and_size(tmp_path, monkeypatch):
    from torchvision.models import mobilenet_v2

    from mmcourse.data import synthetic

    monkeypatch.setenv("MMCOURSE_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    model = mobilenet_v2(num_classes=10).eval()
    for m in model.modules():                                     # untrained, eval-mode BN: lift the
        if isinstance(m, torch.nn.BatchNorm2d):                   # activations off ReLU6's zero
            torch.nn.init.constant_(m.bias, 0.5)
    ds = synthetic.shapes("val", view="image", image_size=64)
    first = captioning.grid_features(model, ds, [0, 1, 2], image_size=64, progress=False)
    assert first.shape == (3, 4, 1280) and first.dtype == np.float16 and np.abs(first).max() > 0
    files = lambda: sorted(p.name for p in tmp_path.rglob("*.npy"))
    assert len(files()) == 1
    again = captioning.grid_features(model, ds, [0, 1, 2], image_size=64, progress=False)
    np.testing.assert_array_equal(first, again)
    assert len(files()) == 1                                      # a hit
    captioning.grid_features(model, ds, [0, 1], image_size=64, progress=False)
    assert len(files()) == 2                                      # another subset: another entry
    with torch.no_grad():
        model.features[0][0].weight.mul_(1.01)                    # the weights change in place
    changed = captioning.grid_features(model, ds, [0, 1, 2], image_size=64, progress=False)
    assert len(files()) == 3 and not np.array_equal(changed, first)
    direct = captioning.grid_tokens(model, torch.stack([ds[i]["image"] for i in range(3)]))
    np.testing.assert_allclose(changed, direct.half().numpy(), rtol=1e-3, atol=1e-3)


def test_score_is_the_metrics_times_100():
    hyps = ["a dog runs on grass", "a man rides a bike"]
    refs = [["a dog runs on the grass", "the dog is running"], ["a man on a bike", "a man rides his bicycle"]]
    s = captioning.score(hyps, refs)
    assert s["BLEU-4"] == pytest.approx(100 * metrics.bleu(hyps, refs)[3])
    assert s["ROUGE-L"] == pytest.approx(100 * metrics.rouge_l(hyps, refs))
    assert s["CIDEr-D"] == pytest.approx(100 * metrics.cider_d(hyps, refs)[0])


@torch.no_grad()
def test_kv_cache_gives_the_same_log_probs_and_captions():
    model = _decoder(seed=5)
    feats = torch.randn(6, 4, 16)
    for beam in (1, 3):
        slow = captioning.beam_search(captioning.decoder_step(model, feats, beam, cache=False), 6, 1, 2, beam=beam,
                                      max_len=9, alpha=0.7)
        fast = captioning.beam_search(captioning.decoder_step(model, feats, beam, cache=True), 6, 1, 2, beam=beam,
                                      max_len=9, alpha=0.7)
        assert fast[0] == slow[0]
        np.testing.assert_allclose(fast[1], slow[1], rtol=1e-5, atol=1e-5)
    step = captioning.decoder_step(model, feats[:1], cache=True)
    step(torch.tensor([[1]]))
    with pytest.raises(ValueError, match="grow by one word"):
        step(torch.tensor([[1, 5, 6]]))


def test_sample_layout_and_first_word_frequencies_follow_the_model():
    model = _decoder()
    feats = torch.randn(2, 4, 16)
    torch.manual_seed(1)
    seqs = captioning.sample(model, feats, bos=1, eos=2, pad=0, k=3000, max_len=6)
    assert seqs.shape[0] == 6000 and seqs.shape[1] <= 7 and (seqs[:, 0] == 1).all()
    for row in seqs.tolist()[:200]:                         # after <eos> only padding
        if 2 in row[1:]:
            assert all(t == 0 for t in row[row.index(2, 1) + 1:])
    with torch.no_grad():                                   # rows 0..2999 are image 0: their first words
        p = model(feats[:1], torch.tensor([[1]]))[0, -1].softmax(-1)    # follow p(w_1 | image 0)
    freq = torch.bincount(seqs[:3000, 1], minlength=12).double() / 3000
    p[[0, 1]] = 0                                          # <pad> and <bos> are never drawn
    assert (freq - p.double() / p.sum()).abs().max() < 0.04 and freq[:2].sum() == 0


def test_cider_d_scorer_keeps_the_corpus_document_frequencies():
    refs = [["a dog runs on the grass", "a brown dog runs"], ["a man rides a bike", "a cyclist on a road"],
            ["two children play in the water", "kids splash in a pool"]]
    hyps = ["a dog runs", "a man on a bike", "children in the water"]
    scorer = metrics.CiderD(refs)
    assert scorer(hyps, [0, 1, 2]) == pytest.approx(metrics.cider_d(hyps, refs)[1], abs=1e-12)
    # one image scored alone keeps the corpus df: the same reward as in the full set ...
    assert scorer(hyps[:1], [0]) == pytest.approx(scorer(hyps, [0, 1, 2])[:1])
    # ... while cider_d on that image alone is 0 (its df comes from the one image it scores)
    assert metrics.cider_d(hyps[:1], refs[:1])[0] == 0.0 and scorer(hyps[:1], [0])[0] > 0
    with pytest.raises(ValueError, match="one image per caption"):
        scorer(hyps, [0, 1])


def test_scst_loss_is_the_reinforce_estimate_with_the_mean_of_the_other_samples():
    vocab = captioning.Vocab.build(CAPTIONS, min_count=1)
    model = _decoder(vocab_size=len(vocab))
    feats, images = torch.randn(2, 4, 16), torch.tensor([0, 1])
    refs = [["a dog runs on the grass"], ["a man rides a bike"], ["two dogs play"]]
    scorer = metrics.CiderD(refs)
    torch.manual_seed(3)
    loss = captioning.scst_loss(model, (feats, images), vocab, scorer, k=4, max_len=8)
    torch.manual_seed(3)                                   # the same samples, computed by hand
    seqs = captioning.sample(model, feats, vocab.bos_id, vocab.eos_id, vocab.pad_id, k=4, max_len=8)
    r = torch.tensor(scorer([vocab.decode(s[1:]) for s in seqs.tolist()], [0] * 4 + [1] * 4)).view(2, 4)
    adv = torch.stack([r[i, j] - (r[i].sum() - r[i, j]) / 3 for i in range(2) for j in range(4)])
    logp, n = [], 0
    for s, f in zip(seqs, feats.repeat_interleave(4, 0)):
        words = [t for t in s.tolist()[1:] if t != vocab.pad_id]
        lp = model(f[None], s[None, :-1])[0].log_softmax(-1)
        logp.append(sum(lp[t, w] for t, w in enumerate(words)))
        n += len(words)
    want = -(adv * torch.stack(logp)).sum() / n
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        captioning.scst_loss(model, (feats, images), vocab, scorer, k=1)


def test_scst_raises_the_reward_of_a_decoder():
    vocab = captioning.Vocab.build(CAPTIONS, min_count=1)
    refs = [["a dog runs on the grass"] * 2, ["a man rides a bike"] * 2, ["two dogs play"] * 2]
    scorer = metrics.CiderD(refs)
    torch.manual_seed(0)
    feats = torch.randn(3, 4, 16)
    model = captioning.CaptionDecoder(len(vocab), d_visual=16, n_visual=4, d_model=32, n_layers=1, n_heads=2,
                                      dropout=0.0, max_len=10)

    def greedy_reward() -> float:
        texts, _ = captioning.caption(model, feats, vocab, beam=1, max_len=8)
        return float(np.mean(scorer(texts, [0, 1, 2])))

    before = greedy_reward()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):            # seeds 0, 1, 2 reach 1.8, 2.2, 3.5 (from below 0.1)
        loss = captioning.scst_loss(model, (feats, torch.arange(3)), vocab, scorer, k=16, max_len=8)
        opt.zero_grad(); loss.backward(); opt.step()
    assert greedy_reward() > before + 1.0


def test_cross_attention_maps_and_their_sanity_check():
    """Notebook 12 §6.2: the maps average the last layer's weights over heads and real words; randomising
    what comes after the cross-attention leaves them as they were, randomising it does not."""
    from mmcourse import gradcam

    torch.manual_seed(0)
    model = captioning.CaptionDecoder(40, n_visual=9, d_visual=16, d_model=32, n_layers=2, n_heads=4, max_len=8)
    feats = torch.rand(3, 9, 16)
    tokens = torch.tensor([[1, 5, 6, 7, 2, 0, 0, 0], [1, 8, 2, 0, 0, 0, 0, 0], [1, 9, 10, 11, 12, 13, 14, 2]])
    maps = captioning.cross_attention_maps(model, feats, tokens)
    assert maps.shape == (3, 9) and np.allclose(maps.sum(1), 1, atol=1e-6)
    model.eval()
    model.keep_attention(True)
    model(feats[1:2], tokens[1:2, :-1])
    by_hand = model.layers[-1].cross_weights[0].mean(0)[:2].mean(0)  # 2 real input positions: <bos>, word 8
    model.keep_attention(False)
    assert np.allclose(maps[1], by_hand.numpy(), atol=1e-6)
    rows = gradcam.sanity_check_maps(model, lambda m: captioning.cross_attention_maps(m, feats, tokens),
                                     [("norm", ["norm"]), ("+ mlp", ["norm", "layers.1.mlp"]),
                                      ("+ cross", ["norm", "layers.1.mlp", "layers.1.cross_attn"])])
    assert [r["step"] for r in rows] == ["original", "norm", "+ mlp", "+ cross"]
    assert rows[1]["mean_spearman"] == pytest.approx(1) and rows[2]["mean_spearman"] == pytest.approx(1)
    assert rows[3]["mean_spearman"] < 0.9
