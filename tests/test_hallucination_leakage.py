"""mmcourse.hallucination (CHAIR) and mmcourse.leakage (grouped folds), notebook 12.

CHAIR is checked on captions whose hallucinations are counted here by hand; the grouped folds
against sklearn's GroupKFold and by the property that matters (no group crosses folds), and the
random folds by the leak they are there to show.
"""
from __future__ import annotations

import numpy as np
import pytest

from mmcourse import hallucination, leakage

REFS = [["A brown dog runs on the beach .", "A dog chases a ball .", "dog", "a dog", "puppy"],
        ["Two men ride bikes down a hill .", "Cyclists on a road", "men", "bikes", "a road"],
        ["A girl sits on a bench .", "girl", "bench", "a girl", "a park"]]


def test_objects_in_maps_synonyms_and_plurals_to_one_object_and_needs_whole_words():
    assert hallucination.objects_in("Two puppies chase a red ball and a Dog") == {"dog", "ball"}
    assert hallucination.objects_in("A hotdog stand near the carousel") == set()  # no dog, no car
    assert hallucination.objects_in("A man on a motorbike") == {"motorcycle"}


def test_chair_counts_hallucinated_objects_per_mention_and_per_caption():
    captions = ["A dog plays with a ball on the beach .",     # dog, ball: both in the references
                "A man rides a bike next to a car and a dog .",  # bicycle ok; car and dog hallucinated
                "A girl sits on a bench ."]                    # bench ok
    out = hallucination.chair(captions, REFS)
    # mentions: {dog, ball} + {bicycle, car, dog} + {bench} = 6; hallucinated: car and dog in caption 1
    assert out["mentions"] == 6 and out["hallucinated_mentions"] == 2
    assert out["CHAIR_i"] == pytest.approx(2 / 6) and out["CHAIR_s"] == pytest.approx(1 / 3)
    assert out["hallucinated"] == [(1, "car"), (1, "dog")]


def test_chair_counts_an_object_once_per_caption_and_handles_captions_without_objects():
    out = hallucination.chair(["A cat and another cat and a kitten .", "Someone somewhere ."], REFS[:2])
    assert out["mentions"] == 1 and out["CHAIR_i"] == 1.0 and out["CHAIR_s"] == 0.5
    none = hallucination.chair(["Someone ."], REFS[:1])
    assert none["mentions"] == 0 and none["CHAIR_i"] == 0.0 and none["CHAIR_s"] == 0.0
    with pytest.raises(ValueError, match="one list of reference captions per generated caption"):
        hallucination.chair(["a dog"], REFS)


def test_grouped_folds_keep_every_group_in_one_fold_like_sklearn():
    from sklearn.model_selection import GroupKFold

    rng = np.random.default_rng(0)
    groups = rng.integers(0, 40, 500)
    folds = leakage.grouped_folds(groups, 5, seed=3)
    assert leakage.crossing_groups(groups, folds) == []
    assert set(folds) == set(range(5)) and max(np.bincount(folds)) < 1.5 * min(np.bincount(folds))
    for k, (_, test) in enumerate(GroupKFold(5, shuffle=True, random_state=3).split(groups, groups=groups)):
        assert set(np.flatnonzero(folds == k)) == set(test)
    assert np.array_equal(folds, leakage.grouped_folds(groups, 5, seed=3))
    with pytest.raises(ValueError, match="n_folds <= 3"):
        leakage.grouped_folds([0, 0, 1, 2], 5)


def test_random_folds_cut_groups_the_grouped_split_keeps_together():
    groups = np.repeat(np.arange(20), 10)  # 20 speakers, 10 recordings each
    random = leakage.random_folds(len(groups), 5, seed=0)
    assert len(leakage.crossing_groups(groups, random)) == 20  # every speaker on both sides
    assert np.bincount(random).tolist() == [40] * 5
    assert leakage.crossing_groups(groups, leakage.grouped_folds(groups, 5)) == []
