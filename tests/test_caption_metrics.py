"""Captioning metrics of mmcourse.metrics (notebook 08, §5) against pycocoevalcap and hand-computed cases."""
from __future__ import annotations

import math
import random

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge, my_lcs

from conftest_data import need_real

from mmcourse.metrics import (bleu, brevity_penalty, caption_tokens, cider_d, clipped_precision,
                              closest_ref_length, lcs_length, ngrams, rouge_l)

TOL = 1e-6

# A few dozen hand-written (hypothesis, references) pairs in the style of Flickr8k / COCO.
HANDWRITTEN = [
    ("A dog runs across the grass.", ["A brown dog is running through the grass .", "A dog runs on a lawn .",
                                     "The dog sprints across a green field ."]),
    ("a man riding a bike down the street", ["A man rides his bicycle down a city street .",
                                            "A cyclist on a busy road .", "Man on a bike in traffic ."]),
    ("Two children play on the beach", ["Two kids are playing in the sand at the beach .",
                                        "Children building a sandcastle by the sea ."]),
    ("a woman in a red dress", ["A woman wearing a red dress stands on the sidewalk .",
                                "A lady in red poses for a photo .", "Woman in a red dress smiling ."]),
    ("A black and white dog jumps to catch a frisbee", ["A black and white dog leaps for a frisbee .",
                                                        "A dog catches a Frisbee in mid-air .",
                                                        "The border collie jumps high to catch the disc ."]),
    ("people walking in the snow", ["Several people walk through the snow .", "A group hikes up a snowy hill .",
                                    "People in winter coats walking in snow ."]),
    ("a boy swimming in a pool", ["A young boy swims in a swimming pool .", "A child splashes in the pool .",
                                  "Boy in goggles swimming underwater ."]),
    ("A man climbs a rock wall.", ["A rock climber scales a cliff .", "A man climbing a steep rock face .",
                                   "Climber hanging from a rock wall with ropes ."]),
    ("two dogs playing with a ball", ["Two dogs fight over a tennis ball .", "Two puppies play with a red ball .",
                                      "A pair of dogs chase a ball in the yard ."]),
    ("a girl with a pink umbrella", ["A little girl holds a pink umbrella in the rain .",
                                     "Girl with umbrella walking outside ."]),
    ("a skateboarder does a trick", ["A skateboarder performs a trick on a ramp .",
                                     "A boy jumping on his skateboard .", "Skater doing a kickflip at the park ."]),
    ("A crowd watches a concert", ["A large crowd at an outdoor concert .", "People watching a band play on stage .",
                                   "Fans cheering at a music festival ."]),
    ("a brown horse in a field", ["A brown horse grazes in a green field .", "A horse standing in the pasture .",
                                  "The chestnut horse eats grass ."]),
    ("a man surfing a wave", ["A surfer rides a large wave .", "A man on a surfboard in the ocean .",
                              "Surfer catching a big wave ."]),
    ("the little girl is smiling", ["A little girl smiles at the camera .", "Smiling girl with curly hair .",
                                    "A happy child grinning ."]),
    ("a group of people sitting at a table", ["People sit around a table eating dinner .",
                                              "A family gathered at the dinner table .",
                                              "Friends sitting at a restaurant table ."]),
    ("a dog in the water", ["A dog swims in a lake .", "A wet dog paddling in the water .",
                            "The black dog is swimming ."]),
    ("A man in a blue shirt is standing", ["A man wearing a blue shirt stands by a wall .",
                                           "Man in blue t-shirt waiting .", "A guy in a blue shirt ."]),
    ("children running in a park", ["Kids run across a park .", "A group of children running on grass .",
                                    "Children playing tag in the park ."]),
    ("a cat sleeping on a couch", ["A cat naps on the sofa .", "A gray cat sleeping on a couch cushion ."]),
    ("Football players on the field", ["Football players tackle each other .", "A football game in progress .",
                                       "Players in uniforms on a field ."]),
    ("a woman reading a book", ["A woman reads a book on a bench .", "A lady reading in the park .",
                                "Woman with a novel sitting outside ."]),
    ("a man and a woman dancing", ["A couple dances together .", "A man and woman dancing at a party .",
                                   "Two people dance in a ballroom ."]),
    ("a young boy in a red hat", ["A boy wearing a red cap .", "A young child in a red hat smiles .",
                                  "Kid with a red baseball cap ."]),
    ("a dog", ["A dog lies on the floor .", "A small white dog .", "The dog is resting ."]),
    ("a biker in the air", ["A motocross rider jumps over a hill .", "A dirt bike in mid-air .",
                            "A man on a motorbike flying off a ramp ."]),
    ("two men talking", ["Two men have a conversation on the street .", "Two guys chatting outside a shop ."]),
    ("a baby in a high chair", ["A baby sits in a high chair eating .", "Infant in a highchair with food ."]),
    ("a man fishing from a boat", ["A man fishes from a small boat .", "A fisherman casts his line from a boat .",
                                   "A man in a boat on a lake fishing ."]),
    ("a street at night with lights", ["A city street lit up at night .", "Cars and lights on a busy street at night .",
                                       "Night traffic downtown ."]),
]


def coco(hyps, refs):
    """pycocoevalcap's scores on our tokens: corpus and per-image, for Bleu(4), Rouge() and Cider()."""
    gts = {i: [" ".join(caption_tokens(r)) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [" ".join(caption_tokens(h))] for i, h in enumerate(hyps)}
    b, b_img = Bleu(4).compute_score(gts, res, verbose=0)
    r, r_img = Rouge().compute_score(gts, res)
    c, c_img = Cider().compute_score(gts, res)
    return {"bleu": b, "bleu_img": [list(x) for x in zip(*b_img)], "rouge": float(r), "rouge_img": list(r_img),
            "cider": float(c), "cider_img": list(c_img)}


def assert_matches_coco(hyps, refs):
    """Our corpus and per-image BLEU-1..4, ROUGE-L and CIDEr-D equal pycocoevalcap's within 1e-6."""
    want = coco(hyps, refs)
    assert bleu(hyps, refs) == pytest.approx(want["bleu"], abs=TOL)
    assert rouge_l(hyps, refs) == pytest.approx(want["rouge"], abs=TOL)
    c, c_img = cider_d(hyps, refs)
    assert c == pytest.approx(want["cider"], abs=TOL)
    assert c_img == pytest.approx(want["cider_img"], abs=TOL)
    for h, rs, b_img, r_img in zip(hyps, refs, want["bleu_img"], want["rouge_img"]):
        assert bleu([h], [rs]) == pytest.approx(b_img, abs=TOL)  # one image alone = its per-image score
        assert rouge_l([h], [rs]) == pytest.approx(r_img, abs=TOL)
    return want


# ------------------------------------------------------------------ building blocks, hand-computed

def test_caption_tokens_rule():
    assert caption_tokens("A dog's T-shirt.") == ["a", "dog", "s", "t", "shirt"]
    assert caption_tokens("  Two\tdogs,\nrunning!! ") == ["two", "dogs", "running"]
    assert caption_tokens("Café No.5 (2 cats)") == ["café", "no", "5", "2", "cats"]
    assert caption_tokens("") == [] and caption_tokens(" ... ") == []


def test_ngrams_counts():
    assert ngrams(["a", "b", "a", "b"], 2) == {("a", "b"): 2, ("b", "a"): 1}
    assert ngrams(["a"], 2) == {}
    with pytest.raises(ValueError, match="positive"):
        ngrams(["a"], 0)


def test_clipped_precision_hand_computed():
    the4, cat = "the the the the".split(), "the cat".split()
    assert clipped_precision(the4, [cat], 1) == (1, 4)
    assert clipped_precision(the4, [cat], 2) == (0, 3)
    assert clipped_precision(the4, [cat, "the the cat".split()], 1) == (2, 4)  # clip = max over references
    assert clipped_precision("the cat sat".split(), [cat], 2) == (1, 2)
    assert clipped_precision([], [cat], 1) == (0, 0)


def test_closest_ref_length_ties_to_shorter():
    assert closest_ref_length(5, [4, 6]) == 4
    assert closest_ref_length(5, [6, 4]) == 4
    assert closest_ref_length(5, [7, 3, 6]) == 6
    assert closest_ref_length(10, [3, 4]) == 4
    assert closest_ref_length(0, [2, 1]) == 1


def test_brevity_penalty_hand_computed():
    assert brevity_penalty(6, 5) == 1.0
    assert brevity_penalty(5, 5) == pytest.approx(1.0, abs=1e-8)  # pycocoevalcap's guards: 1 - ~2e-10
    assert brevity_penalty(3, 4) == pytest.approx(math.exp(1 - 4 / 3), rel=1e-8)
    assert brevity_penalty(1, 10) == pytest.approx(math.exp(-9), rel=1e-8)
    assert brevity_penalty(0, 4) == 0.0
    assert brevity_penalty(0, 0) == 0.0  # pycocoevalcap: ratio 1e-15 / 1e-9 < 1


def test_lcs_length_hand_and_against_pycocoevalcap():
    assert lcs_length("a b c d".split(), "a c d".split()) == 3
    assert lcs_length("a b".split(), "b a".split()) == 1
    assert lcs_length([], ["a"]) == 0
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 9))]
        b = [rng.choice("abcd") for _ in range(rng.randint(1, 9))]
        assert lcs_length(a, b) == lcs_length(b, a) == my_lcs(b, a)


# ------------------------------------------------------------------ realistic batches against pycocoevalcap

def test_handwritten_batch_matches_pycocoevalcap():
    hyps, refs = [h for h, _ in HANDWRITTEN], [r for _, r in HANDWRITTEN]
    want = assert_matches_coco(hyps, refs)
    b = bleu(hyps, refs)
    assert 0 < b[3] < b[2] < b[1] < b[0] < 1  # cumulative geometric means of falling precisions
    assert 0 < rouge_l(hyps, refs) < 1 and want["cider"] > 0


def perturb(caption: str, rng: random.Random, vocab: list[str]) -> str:
    """Drop, swap or replace words of a caption (a stand-in for a model's imperfect output)."""
    words = [w for w in caption.split() if rng.random() > 0.15]
    for i in range(len(words) - 1):
        if rng.random() < 0.1:
            words[i], words[i + 1] = words[i + 1], words[i]
    words = [rng.choice(vocab) if rng.random() < 0.1 else w for w in words]
    return " ".join(words)


def test_flickr8k_batch_matches_pycocoevalcap(real_data):
    from mmcourse.data.errors import SkipLog
    from mmcourse.data.flickr8k import SPLIT_FILES, TOKEN_FILE, read_captions, read_split
    folder = need_real("flickr8k", TOKEN_FILE).parent
    captions = read_captions(folder / TOKEN_FILE, SkipLog("flickr8k test", strict=True))
    names = [n for n in read_split(folder / SPLIT_FILES["test"]) if len(captions.get(n, [])) == 5][:200]
    assert len(names) == 200
    vocab = sorted({w for n in names for c in captions[n] for w in caption_tokens(c)})
    rng = random.Random(8)
    hyps = [perturb(captions[n][0], rng, vocab) for n in names]
    refs = [captions[n][1:] for n in names]
    want = assert_matches_coco(hyps, refs)
    assert 0 < want["bleu"][3] < want["bleu"][0] < 1 and want["cider"] > 0


# ------------------------------------------------------------------ edge cases

def test_empty_hypothesis_scores_zero_and_matches():
    hyps = ["", "a dog runs on the grass", "..."]
    refs = [["a dog runs"], ["a dog runs across the grass", "a brown dog"], ["a cat"]]
    assert_matches_coco(hyps, refs)
    assert bleu([""], [["a dog"]]) == [0.0] * 4
    assert rouge_l([""], [["a dog"]]) == 0.0
    assert cider_d(hyps, refs)[1][0] == 0.0 and cider_d(hyps, refs)[1][2] == 0.0


def test_one_reference_per_image():
    hyps = ["a dog runs", "a man rides a horse on the beach", "two kids play"]
    refs = [["a dog is running"], ["a man on a horse"], ["children playing football"]]
    assert_matches_coco(hyps, refs)


def test_repeated_words_are_clipped():
    hyps, refs = ["a a a a a", "a dog on grass"], [["a dog"], ["a dog on the grass", "dog on grass"]]
    assert_matches_coco(hyps, refs)
    b1 = bleu(hyps[:1], refs[:1])[0]
    assert b1 == pytest.approx(1 / 5, abs=TOL)  # clipped 1 of 5 unigrams, no brevity penalty (5 > 2)
    p, r, beta2 = 1 / 5, 1 / 2, 1.2 ** 2  # LCS 1: precision 1/5, recall 1/2
    assert rouge_l(hyps[:1], refs[:1]) == pytest.approx((1 + beta2) * p * r / (r + beta2 * p), abs=1e-12)


def test_hypothesis_longer_than_all_references():
    hyps = ["a big brown dog is running very fast across a wide green field today", "a cat"]
    refs = [["a dog runs", "a brown dog is running"], ["a cat sleeps on a mat"]]
    assert_matches_coco(hyps, refs)
    h, rs = caption_tokens(hyps[0]), [caption_tokens(r) for r in refs[0]]
    c, t = clipped_precision(h, rs, 1)
    assert bleu(hyps[:1], refs[:1])[0] == pytest.approx(c / t, abs=TOL)  # c > r: no brevity penalty


def test_punctuation_and_case_do_not_change_scores():
    clean = (["a dog s t shirt is red", "two men talk"], [["the dog s t shirt is red"], ["two men are talking"]])
    noisy = (["A Dog's T-shirt is RED!", "Two men, talk..."], [["The dog's t-shirt is red."], ["Two men are talking"]])
    assert bleu(*noisy) == bleu(*clean)
    assert rouge_l(*noisy) == rouge_l(*clean)
    assert cider_d(*noisy) == cider_d(*clean)
    assert_matches_coco(*noisy)


def test_cider_d_of_a_single_image_is_zero():
    """N = 1: every tf-idf weight is log 1 - log 1 = 0, so even a copy of the reference scores 0."""
    assert cider_d(["a dog runs on the grass"], [["a dog runs on the grass", "a dog"]]) == (0.0, [0.0])
    assert coco(["a dog runs on the grass"], [["a dog runs on the grass"]])["cider"] == 0.0
    assert bleu(["a dog runs on the grass"], [["a dog runs on the grass"]]) == pytest.approx([1.0] * 4, abs=TOL)
    assert rouge_l(["a dog runs on the grass"], [["a dog runs on the grass"]]) == pytest.approx(1.0)
    # Two images: the same perfect hypothesis now scores, but n-grams shared by every reference set weigh 0.
    hyps, refs = ["a dog runs on the grass", "a cat"], [["a dog runs on the grass"], ["a cat sleeps"]]
    assert cider_d(hyps, refs)[1][0] > 0
    assert cider_d(["a", "a"], [["a dog"], ["a cat"]]) == (0.0, [0.0, 0.0])
    assert_matches_coco(hyps, refs)


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("metric", [bleu, rouge_l, cider_d])
def test_errors_name_the_problem(metric):
    with pytest.raises(ValueError, match="2 hypotheses but 1 reference"):
        metric(["a dog", "a cat"], [["a dog"]])
    with pytest.raises(ValueError, match="image 1 has no reference"):
        metric(["a dog", "a cat"], [["a dog"], []])
    with pytest.raises(ValueError, match="not a single string"):
        metric(["a dog"], ["a dog"])
    with pytest.raises(ValueError, match="not a single string"):
        metric("a dog", [["a dog"]] * 7)
    with pytest.raises(ValueError, match=r"refs\[0\]\[1\].*no words"):
        metric(["a dog"], [["a dog", " ... "]])
    with pytest.raises(ValueError, match="empty"):
        metric([], [])
