"""mmcourse.mllm: the LLaVA-style multimodal LM (notebooks 08, 10, 11).

The plumbing (merge, collate, gradients, generation) runs on a tiny random LlamaForCausalLM;
the real SmolLM2 (loaded once for the module) checks the chat template, the labels and HF's
generate from ``inputs_embeds``.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mmcourse import mllm
from mmcourse.mllm import IGNORE, PLACEHOLDER, MultimodalLM, Projector

IMG, AUD = PLACEHOLDER["image"], PLACEHOLDER["audio"]
D_IMG, D_AUD, N_IMG, N_AUD = 8, 6, 3, 2


def tiny_lm() -> nn.Module:
    """A random 2-layer Llama (hidden 32, vocab 100; eos = pad = 2), untied and with a wide init so
    that greedy decoding does not just repeat the last token."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=False,
                      initializer_range=0.3)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture
def model() -> MultimodalLM:
    torch.manual_seed(1)
    return MultimodalLM(tiny_lm(), {"image": Projector(D_IMG, 32), "audio": Projector(D_AUD, 32)})


def random_examples(seed: int = 0) -> list[dict]:
    """Image only, audio only, both (with answers and labels), of different lengths."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, (img, aud) in enumerate([(True, False), (False, True), (True, True)]):
        ids = [1] + torch.randint(3, 100, (3 + i,), generator=g).tolist()
        feats = {}
        if img:
            ids = ids[:2] + [IMG] * N_IMG + ids[2:]
            feats["image"] = torch.randn(N_IMG, D_IMG, generator=g)
        if aud:
            ids = ids + [AUD] * N_AUD + [7]
            feats["audio"] = torch.randn(N_AUD, D_AUD, generator=g)
        answer = torch.randint(3, 100, (2 + i,), generator=g).tolist() + [2]
        out.append({"input_ids": ids + answer, "labels": [IGNORE] * len(ids) + answer, "features": feats})
    return out


# ---------------------------------------------------------------- §Projector

def test_pool_grid_equals_the_manual_block_average():
    x = torch.randn(2, 16, 5)
    grid = x.reshape(2, 4, 4, 5)
    manual = torch.stack([grid[:, r:r + 2, c:c + 2].mean(dim=(1, 2)) for r in (0, 2) for c in (0, 2)], dim=1)
    torch.testing.assert_close(mllm.pool_grid(x, (4, 4), (2, 2)), manual)
    # 7 -> 3 with overlapping windows: rows [0, 3), [2, 5), [4, 7) (floor(i*7/3) .. ceil((i+1)*7/3))
    x = torch.randn(1, 49, 3)
    grid, spans = x.reshape(1, 7, 7, 3), [(0, 3), (2, 5), (4, 7)]
    manual = torch.stack([grid[:, r0:r1, c0:c1].mean(dim=(1, 2)) for r0, r1 in spans for c0, c1 in spans], dim=1)
    torch.testing.assert_close(mllm.pool_grid(x, (7, 7), (3, 3)), manual)
    with pytest.raises(ValueError, match="h\\*w"):
        mllm.pool_grid(x, (6, 6), (3, 3))


def test_stack_frames_concatenates_consecutive_frames_and_drops_the_rest():
    x = torch.arange(2 * 10 * 3, dtype=torch.float32).reshape(2, 10, 3)
    y = mllm.stack_frames(x, 3)
    assert y.shape == (2, 3, 9)
    for t in range(3):
        for j in range(3):
            assert torch.equal(y[:, t, 3 * j:3 * j + 3], x[:, 3 * t + j])
    assert torch.equal(mllm.stack_frames(x, 1), x)
    with pytest.raises(ValueError, match="k <= T"):
        mllm.stack_frames(x, 11)


def test_projector_normalises_its_input_and_without_norm_is_llava_mlp():
    torch.manual_seed(0)
    proj, x = Projector(12, 7, hidden=5), torch.rand(2, 4, 12) * 6  # post-ReLU6-like
    assert proj(x).shape == (2, 4, 7)
    torch.testing.assert_close(proj(x * 50 + 3), proj(x), atol=1e-4, rtol=1e-4)  # the LayerNorm's effect
    plain = Projector(12, 7, norm=False)
    lin1, lin2 = plain.net[0], plain.net[3]
    torch.testing.assert_close(plain(x), lin2(torch.nn.functional.gelu(lin1(x))))
    with pytest.raises(ValueError, match="d_in=3"):
        proj(torch.zeros(1, 2, 3))


def test_grid_projector_makes_16_tokens_of_a_7x7_grid_each_from_its_neighbourhood_only():
    torch.manual_seed(0)
    proj = mllm.GridProjector(12, 8, grid=(7, 7))
    x = torch.randn(2, 49, 12)
    y = proj(x)
    assert y.shape == (2, 16, 8) and proj.n_tokens == 16 and proj.out_grid == (4, 4)
    # cell (0, 0) reaches the stride-1 outputs of rows/cols 0-1; a stride-2 output (i, j) reads rows 2i-1..2i+1:
    # only tokens (0..1, 0..1) = 0, 1, 4, 5 can change (per-cell norms: no statistics over the grid)
    x2 = x.clone()
    x2[:, 0] = torch.randn(2, 12)  # (a constant shift would vanish in the LayerNorm)
    changed = (proj(x2) - y).abs().amax(dim=(0, 2)) > 1e-6
    assert changed.nonzero().flatten().tolist() == [0, 1, 4, 5]
    assert not torch.allclose(proj(x.flip(1)), y.flip(1))  # the tokens know where they are, unlike a mean
    y.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in proj.parameters())
    with pytest.raises(ValueError, match="grid=\\(h, w\\)"):
        proj(torch.zeros(1, 36, 12))


def test_a_grid_projector_in_the_model_fills_its_16_placeholders():
    torch.manual_seed(0)
    m = MultimodalLM(tiny_lm(), {"image": mllm.GridProjector(D_IMG, 32, grid=(3, 3))})  # 3 x 3 -> 2 x 2 = 4 tokens
    ex = {"input_ids": [1, 5] + [IMG] * 4 + [6, 7], "labels": [IGNORE] * 6 + [6, 7],
          "features": {"image": torch.randn(9, D_IMG)}}
    with pytest.raises(ValueError, match="tokens="):
        mllm.collate([ex], pad_id=2)
    b = mllm.collate([ex, ex], pad_id=2, tokens={"image": 4})
    assert b["features"]["image"].shape == (2, 9, D_IMG)
    assert torch.isfinite(mllm.loss_fn(m, b))


# ---------------------------------------------------------------- §Modality dropout (notebook 11)

def test_without_removes_only_the_named_markers():
    assert mllm.without("<image><audio>Could this sound come from this scene?", ["audio"]) == \
        "<image>Could this sound come from this scene?"
    assert mllm.without("<image>Is there a dog?", []) == "<image>Is there a dog?"
    with pytest.raises(ValueError, match="unknown modality"):
        mllm.without("x", ["video"])


def test_drop_modalities_drops_each_with_probability_p_but_never_all():
    g = torch.Generator().manual_seed(0)
    assert mllm.drop_modalities(["image", "audio"], 0.0, g) == []
    assert all(mllm.drop_modalities(["image"], 1.0, g) == [] for _ in range(20))  # one modality always stays
    both = [tuple(mllm.drop_modalities(["image", "audio"], 1.0, g)) for _ in range(400)]
    assert set(both) == {("image",), ("audio",)} and 150 < both.count(("image",)) < 250
    draws = [tuple(mllm.drop_modalities(["image", "audio"], 0.3, g)) for _ in range(4000)]
    # P(drop image only) = 0.3 * 0.7 + 0.3 * 0.3 / 2 = 0.255; P(keep both) = 0.49
    assert abs(draws.count(("image",)) / 4000 - 0.255) < 0.03 and abs(draws.count(()) / 4000 - 0.49) < 0.03
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        mllm.drop_modalities(["image"], 1.5)


class _Tok:
    """Enough of a tokenizer for example(): a chat template and one id per character."""
    eos_token_id, pad_token_id = 2, 2

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(f"[{m['role']}]{m['content']}" for m in messages) + "[assistant]"

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [3 + ord(c) % 90 for c in text]}


def test_drop_example_removes_marker_and_features_together_and_the_batch_follows():
    raw = [{"prompt": "<image><audio>match?", "answer": "yes", "features": {"image": torch.randn(9, 4),
                                                                               "audio": torch.randn(5, 3)}},
           {"prompt": "<image>dog?", "answer": "no", "features": {"image": torch.randn(9, 4)}}]
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(30):
        dropped = [mllm.drop_example(e, 0.5, g) for e in raw]
        assert raw[0]["prompt"] == "<image><audio>match?" and len(raw[0]["features"]) == 2  # input untouched
        built = [{**mllm.example(_Tok(), e["prompt"], e["answer"], {m: 4 if m == "image" else len(f)
                                                                     for m, f in e["features"].items()}),
                  "features": e["features"]} for e in dropped]
        ids = mllm.collate(built, 2, tokens={"image": 4})["input_ids"]
        n_img, n_aud = (ids == IMG).sum(1).tolist(), (ids == AUD).sum(1).tolist()
        assert n_img[1] == 4 and n_aud[1] == 0  # the image-only example keeps its image
        assert (n_img[0] > 0) == ("image" in dropped[0]["features"]) and (n_aud[0] > 0) == ("audio" in dropped[0]["features"])
        seen.add((n_img[0], n_aud[0]))
    assert seen == {(4, 5), (4, 0), (0, 5)}  # both, image only, audio only; never neither
    assert mllm.drop_example(raw[0], 0.0)["prompt"] == raw[0]["prompt"]


# ---------------------------------------------------------------- §Placeholders: collate

def test_collate_pads_and_stacks_features_over_the_examples_that_have_them():
    exs = random_examples()
    lengths = [len(e["input_ids"]) for e in exs]
    for side in ("right", "left"):
        b = mllm.collate(exs, pad_id=2, side=side)
        assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape == (3, max(lengths))
        for i, (ex, n) in enumerate(zip(exs, lengths)):
            real = slice(0, n) if side == "right" else slice(max(lengths) - n, None)
            pads = slice(n, None) if side == "right" else slice(0, max(lengths) - n)
            assert b["input_ids"][i, real].tolist() == ex["input_ids"]
            assert b["labels"][i, real].tolist() == ex["labels"]
            assert b["attention_mask"][i, real].eq(1).all() and b["attention_mask"][i, pads].eq(0).all()
            assert b["input_ids"][i, pads].eq(2).all() and b["labels"][i, pads].eq(IGNORE).all()
        # image in examples 0 and 2, audio in 1 and 2: stacked in batch order
        for m, rows in {"image": [0, 2], "audio": [1, 2]}.items():
            assert torch.equal(b["features"][m], torch.stack([exs[i]["features"][m] for i in rows]))
    text_only = mllm.collate([{"input_ids": [1, 5, 6]}], pad_id=2)
    assert text_only["features"] == {} and "labels" not in text_only


def test_collate_rejects_features_that_do_not_match_the_placeholders():
    ex = random_examples()[0]
    bad = dict(ex, features={"image": torch.zeros(N_IMG + 1, D_IMG)})
    with pytest.raises(ValueError, match="3 image placeholders"):
        mllm.collate([bad], pad_id=2)
    with pytest.raises(ValueError, match="side"):
        mllm.collate([ex], pad_id=2, side="middle")


def variable_audio_examples(seed: int = 0) -> list[dict]:
    """Audio clips of 1, 4 and 2 tokens (notebook 10), with answers and labels."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in (1, 4, 2):
        ids = [1, 5] + [AUD] * n + torch.randint(3, 100, (2,), generator=g).tolist()
        answer = torch.randint(3, 100, (2,), generator=g).tolist() + [2]
        out.append({"input_ids": ids + answer, "labels": [IGNORE] * len(ids) + answer,
                    "features": {"audio": torch.randn(n, D_AUD, generator=g)}})
    return out


def test_collate_keeps_clips_of_different_lengths_as_a_list():
    exs = variable_audio_examples()
    b = mllm.collate(exs, pad_id=2)
    assert isinstance(b["features"]["audio"], list)
    assert [f.shape for f in b["features"]["audio"]] == [(1, D_AUD), (4, D_AUD), (2, D_AUD)]
    assert all(torch.equal(f, ex["features"]["audio"]) for f, ex in zip(b["features"]["audio"], exs))
    wrong_width = [exs[0], dict(exs[1], features={"audio": torch.zeros(4, D_AUD + 1)})]
    with pytest.raises(ValueError, match="differ in size"):
        mllm.collate(wrong_width, pad_id=2)


def test_variable_length_batch_equals_each_example_alone(model):
    """The loss terms, logits and generations of a batch of clips of 1, 4 and 2 tokens are each clip's own."""
    exs = variable_audio_examples()
    b = mllm.collate(exs, pad_id=2)
    logits = model(b["input_ids"], b["attention_mask"], features=b["features"]).logits
    for i, ex in enumerate(exs):
        one = mllm.collate([ex], pad_id=2)
        assert torch.is_tensor(one["features"]["audio"])  # a single clip stacks as usual
        alone = model(one["input_ids"], one["attention_mask"], features=one["features"]).logits[0]
        torch.testing.assert_close(logits[i, :len(ex["input_ids"])], alone, atol=1e-5, rtol=1e-5)
    prompts = [{"input_ids": e["input_ids"][:-3], "features": e["features"]} for e in exs]
    left = mllm.collate(prompts, pad_id=2, side="left")
    batch_gen = mllm.generate(model, left["input_ids"], left["attention_mask"], left["features"], max_new_tokens=5)
    singles = []
    for ex in prompts:
        one = mllm.collate([ex], pad_id=2)
        singles += mllm.generate(model, one["input_ids"], one["attention_mask"], one["features"], max_new_tokens=5)
    assert batch_gen == singles


def test_merge_checks_each_clip_of_a_list():
    ids = torch.tensor([[5, AUD, AUD, 6], [AUD, 8, 9, 10]])
    embeds = torch.zeros(2, 4, 3)
    out = mllm.merge(embeds, ids, {"audio": [torch.ones(2, 3), 2 * torch.ones(1, 3)]})
    assert out[0, 1:3].eq(1).all() and out[1, 0].eq(2).all() and out[0, 0].eq(0).all()
    with pytest.raises(ValueError, match=r"\[2, 1\] per example.*\[1, 2\] = 3"):
        mllm.merge(embeds, ids, {"audio": [torch.ones(1, 3), torch.ones(2, 3)]})  # right total, wrong clips
    with pytest.raises(ValueError, match="one \\(N_i, 3\\) tensor per example"):
        mllm.merge(embeds, ids, {"audio": [torch.ones(2, 3), torch.ones(1, 4)]})


# ---------------------------------------------------------------- §Merge

def test_merged_positions_hold_exactly_the_projected_features(model):
    b = mllm.collate(random_examples(), pad_id=2)
    embeds = model.embed(b["input_ids"], b["features"])
    table = model.lm.get_input_embeddings().weight
    projected = {m: model.projectors[m](f) for m, f in b["features"].items()}
    rows_with = {"image": [0, 2], "audio": [1, 2]}
    for i in range(3):
        for t, tok in enumerate(b["input_ids"][i].tolist()):
            if tok >= 0:  # every other position (pads included) holds the token embedding
                assert torch.equal(embeds[i, t], table[tok])
    for m, rows in rows_with.items():
        for k, i in enumerate(rows):  # row-major: example order, then token order
            where = (b["input_ids"][i] == PLACEHOLDER[m]).nonzero().squeeze(1)
            assert torch.equal(embeds[i, where], projected[m][k])


def test_merge_is_out_of_place_and_keeps_the_features_gradient():
    ids = torch.tensor([[5, IMG, IMG, 6], [7, 8, 9, 10]])
    embeds = torch.zeros(2, 4, 3, requires_grad=True)
    feats = torch.randn(1, 2, 3, requires_grad=True)
    out = mllm.merge(embeds, ids, {"image": feats})
    assert torch.equal(out[0, 1:3], feats[0]) and embeds.abs().sum() == 0
    (out * torch.arange(1.0, 4.0)).sum().backward()
    assert torch.equal(feats.grad, torch.arange(1.0, 4.0).expand(1, 2, 3))
    assert torch.equal(embeds.grad[0, 1:3], torch.zeros(2, 3))  # overwritten positions get no gradient
    assert torch.equal(embeds.grad[1, 0], torch.arange(1.0, 4.0))


def test_merge_raises_on_count_mismatch():
    ids = torch.tensor([[5, IMG, IMG, 6], [IMG, IMG, 8, 9]])
    embeds = torch.zeros(2, 4, 3)
    with pytest.raises(ValueError, match="image: input_ids have 4 placeholder positions in 2 examples"):
        mllm.merge(embeds, ids, {"image": torch.zeros(1, 2, 3)})  # one example's features missing
    with pytest.raises(ValueError, match="2 x 3 = 6"):
        mllm.merge(embeds, ids, {"image": torch.zeros(2, 3, 3)})  # 3 tokens each, 2 placeholders each
    uneven = torch.tensor([[5, IMG, IMG, 6], [IMG, 8, 9, 10]])
    with pytest.raises(ValueError, match=r"\[2, 1\] per example"):
        mllm.merge(embeds, uneven, {"image": torch.zeros(1, 3, 3)})  # the total (3) matches, the rows do not
    with pytest.raises(ValueError, match="no such entry"):
        mllm.merge(embeds, ids, {})
    with pytest.raises(ValueError, match="audio: input_ids have 0"):
        mllm.merge(embeds, ids, {"image": torch.zeros(2, 2, 3), "audio": torch.zeros(1, 2, 3)})
    with pytest.raises(ValueError, match="project the features"):
        mllm.merge(embeds, ids, {"image": torch.zeros(2, 2, 5)})


def test_gradients_reach_the_projectors_and_not_the_frozen_lm(model):
    model.freeze_lm().train()
    loss = mllm.loss_fn(model, mllm.collate(random_examples(), pad_id=2))
    loss.backward()
    for m, proj in model.projectors.items():
        grads = [p.grad for p in proj.parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0, m
    assert all(p.grad is None for p in model.lm.parameters())


def test_loss_is_the_mean_cross_entropy_of_the_answer_tokens(model):
    b = mllm.collate(random_examples(), pad_id=2)
    with torch.no_grad():
        logits = model(b["input_ids"], b["attention_mask"], features=b["features"]).logits
        loss = mllm.loss_fn(model, b)
    # hand shift: the logits at t predict the label at t + 1; -100 is ignored
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 100), b["labels"][:, 1:].reshape(-1),
                                            ignore_index=IGNORE)
    torch.testing.assert_close(loss, ref)


def test_training_the_projector_alone_overfits_two_examples(model):
    model.freeze_lm().train()
    exs = random_examples()[:2]
    batch = mllm.collate(exs, pad_id=2)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(30):
        loss = mllm.loss_fn(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses


# ---------------------------------------------------------------- §Generation

def test_generate_left_padded_batch_equals_single_examples_and_the_uncached_loop(model):
    exs = [{"input_ids": e["input_ids"][:-4], "features": e["features"]} for e in random_examples(3)]
    batch = mllm.collate(exs, pad_id=2, side="left")
    assert batch["attention_mask"].eq(0).any()  # really padded
    model.train()
    cached = mllm.generate(model, batch["input_ids"], batch["attention_mask"], batch["features"], max_new_tokens=12)
    assert model.training  # the mode is restored
    uncached = mllm.generate(model, batch["input_ids"], batch["attention_mask"], batch["features"],
                             max_new_tokens=12, use_cache=False)
    singles = []
    for ex in exs:
        one = mllm.collate([ex], pad_id=2)
        singles += mllm.generate(model, one["input_ids"], one["attention_mask"], one["features"], max_new_tokens=12)
    assert cached == uncached == singles
    assert all(len(ids) <= 12 and 2 not in ids for ids in cached)
    assert len({tuple(ids) for ids in cached}) == 3 and any(len(set(ids)) > 2 for ids in cached)  # not degenerate
    stop = cached[0][4]  # as if it were eos: the answer ends before it, in both paths
    for use_cache in (True, False):
        cut = mllm.generate(model, batch["input_ids"], batch["attention_mask"], batch["features"],
                            max_new_tokens=12, use_cache=use_cache, eos_token_id=stop)
        assert cut[0] == cached[0][:cached[0].index(stop)]
    with pytest.raises(ValueError, match="left padding"):
        right = mllm.collate(exs, pad_id=2)
        mllm.generate(model, right["input_ids"], right["attention_mask"], right["features"])


def test_beam_search_from_embeddings_returns_only_the_new_tokens(model):
    prompt = torch.tensor([[1, 17, 42, 9, 63, 5]])
    ours = mllm.generate(model, prompt, torch.ones_like(prompt), None, max_new_tokens=6, num_beams=3,
                         eos_token_id=None)
    ref = model.lm.generate(prompt, max_new_tokens=6, num_beams=3, do_sample=False, eos_token_id=None)
    assert ours == ref[:, prompt.shape[1]:].tolist() and len(ours[0]) == 6
    with pytest.raises(ValueError, match="greedy reference"):
        mllm.generate(model, prompt, torch.ones_like(prompt), None, num_beams=3, use_cache=False)


# ---------------------------------------------------------------- the real SmolLM2

@pytest.fixture(scope="module")
def smol(models_ready):
    from mmcourse import pretrained
    return pretrained.load("llm")


def test_prompt_ids_follow_the_chat_template(smol):
    _, tok = smol

    def template(messages, **kw):
        return list(tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, **kw)["input_ids"])

    user = [{"role": "user", "content": "Describe the picture."}]
    assert mllm.prompt_ids(tok, "Describe the picture.", {}) == template(user)
    assert mllm.prompt_ids(tok, "Describe the picture.", {}, system="") == \
        template([{"role": "system", "content": ""}] + user)
    ids = mllm.prompt_ids(tok, "Look: <image> Describe it.", {"image": 4}, system="Be brief.")
    assert ids.count(IMG) == 4 and ids.count(tok.bos_token_id) == 3  # one <|im_start|> per turn, none extra
    first = ids.index(IMG)
    assert ids[first:first + 4] == [IMG] * 4
    text = tok.apply_chat_template([{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Look: <image> Describe it."}],
                                   tokenize=False, add_generation_prompt=True)
    before, after = text.split("<image>")
    assert ids[:first] == tok(before, add_special_tokens=False)["input_ids"]
    assert ids[first + 4:] == tok(after, add_special_tokens=False)["input_ids"]
    both = mllm.prompt_ids(tok, "<audio> then <image>", {"image": 2, "audio": 3}, system="")
    assert both.count(AUD) == 3 and both.count(IMG) == 2 and both.index(AUD) < both.index(IMG)
    with pytest.raises(ValueError, match="no count for \\['image'\\]"):
        mllm.prompt_ids(tok, "Describe <image>.", {})
    with pytest.raises(ValueError, match="no \\['<audio>'\\] marker"):
        mllm.prompt_ids(tok, "Describe <image>.", {"image": 2, "audio": 3})


def test_labels_cover_exactly_the_answer_and_eos(smol):
    _, tok = smol
    ex = mllm.example(tok, "Caption: <image>", "A dog runs on the beach.", {"image": 5}, system="")
    prompt = mllm.prompt_ids(tok, "Caption: <image>", {"image": 5}, system="")
    answer = tok("A dog runs on the beach.", add_special_tokens=False)["input_ids"]
    assert ex["input_ids"] == prompt + answer + [tok.eos_token_id]
    assert ex["labels"] == [IGNORE] * len(prompt) + answer + [tok.eos_token_id]
    # the whole conversation as the chat template writes it (its final "\n" after <|im_end|> aside)
    ref = tok.apply_chat_template([{"role": "system", "content": ""}, {"role": "user", "content": "Caption: x"},
                                   {"role": "assistant", "content": "A dog runs on the beach."}], tokenize=True)
    ref = list(ref["input_ids"])
    n_answer = len(answer) + 1
    assert ex["input_ids"][-n_answer:] == ref[-n_answer - 1:-1]
    short = mllm.example(tok, "Caption: <image>", "A dog runs on the beach.", {"image": 5}, system="",
                         max_answer_tokens=2)
    assert short["labels"][-3:] == answer[:2] + [tok.eos_token_id]
    b = mllm.collate([ex, short], pad_id=tok.pad_token_id)
    labelled = b["labels"] != IGNORE
    assert labelled.sum(1).tolist() == [n_answer, 3]
    assert b["input_ids"][labelled].ge(0).all() and not labelled[b["input_ids"] < 0].any()
    assert not labelled[b["attention_mask"] == 0].any()


def test_generate_from_embeddings_matches_hf_text_generation(smol):
    lm, tok = smol
    model = MultimodalLM(lm, {"image": Projector(D_IMG, lm.config.hidden_size)})
    prompts = [mllm.prompt_ids(tok, "Name a colour.", {}, system=""),
               mllm.prompt_ids(tok, "<image> Say hi.", {"image": 2}, system="")]
    torch.manual_seed(0)
    exs = [{"input_ids": prompts[0]}, {"input_ids": prompts[1], "features": {"image": torch.randn(2, D_IMG)}}]
    batch = mllm.collate(exs, pad_id=tok.pad_token_id, side="left")
    out = mllm.generate(model, batch["input_ids"], batch["attention_mask"], batch["features"], max_new_tokens=8)
    # HF from input_ids returns prompt + new tokens; ours (from inputs_embeds) only the new ones
    ref = lm.generate(torch.tensor([prompts[0]]), max_new_tokens=8, do_sample=False)[0, len(prompts[0]):].tolist()
    assert out[0] and out[0] == ref[:ref.index(2) if 2 in ref else None]
    uncached = mllm.generate(model, batch["input_ids"], batch["attention_mask"], batch["features"],
                             max_new_tokens=8, use_cache=False)
    single = mllm.collate([exs[1]], pad_id=tok.pad_token_id)
    alone = mllm.generate(model, single["input_ids"], single["attention_mask"], single["features"], max_new_tokens=8)
    assert uncached == out and alone == out[1:]
    texts = mllm.decode(tok, out)
    assert texts[0] == tok.decode(out[0]).strip() and "<|im_end|>" not in "".join(texts)


def test_derangement_moves_every_example_and_is_reproducible():
    for n in (2, 3, 10, 50):
        for seed in range(10):
            perm = mllm.derangement(n, seed)
            assert sorted(perm) == list(range(n)) and all(p != i for i, p in enumerate(perm))
            assert perm == mllm.derangement(n, seed)
    assert len({tuple(mllm.derangement(10, s)) for s in range(10)}) > 5  # the seed matters
    with pytest.raises(ValueError, match="at least 2"):
        mllm.derangement(1, 0)
