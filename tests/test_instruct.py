"""mmcourse.data.instruct: the capstone's instruction data (notebook 11, §Instruction data).

The rules are checked on hand-written captions with hand-derived answers; the real build (Flickr8k
captions, ESC-10 and FSDD labels, about 3 s) is checked for disjoint splits and balanced answers;
the cache for its manifest, its sha256 check and its refusal of synthetic stand-ins.
"""
from __future__ import annotations

import json
from collections import Counter

import pytest

from mmcourse.data import DataError, DataWarning, instruct, spoken

DOG2 = ["A black dog runs .", "A black dog on grass .", "A dog plays .", "Black dog running", "A puppy"]


# ---------------------------------------------------------------- the rules, by hand

def test_mentions_counts_captions_that_name_the_object_as_a_whole_word():
    caps = ["Two dogs play .", "A hotdog stand", "A DOG", "a puppy sleeps", "nothing"]
    assert instruct.mentions(caps, instruct.OBJECTS["dog"]) == 3  # "hotdog" is not a dog
    assert instruct.mentions(caps, instruct.OBJECTS["car"]) == 0


def test_yesno_needs_two_mentions_for_yes_none_for_no_and_balances_every_object_and_template():
    images = {"two": DOG2, "one": ["A dog", "A man", "A man", "A man", "A man"],  # one mention: never asked
              "none1": ["A man", "A girl", "A boy", "A cat", "A tree"], "none2": ["A car"] * 5,
              "two_b": ["A dog"] * 5}
    rows = [r for r in instruct.yesno(images, "test") if r["object"] == "dog"]
    assert {r["image"]: r["answer"] for r in rows} == {"two": "yes", "two_b": "yes", "none1": "no", "none2": "no"}
    by = Counter((r["template"], r["answer"]) for r in rows)
    assert by == {("is_there", "yes"): 1, ("is_there", "no"): 1, ("does_show", "yes"): 1, ("does_show", "no"): 1}
    assert rows[0]["prompt"] == "<image>Is there a dog in the picture? Answer yes or no."


@pytest.mark.parametrize("caps, colour", [
    (DOG2, "black"),
    (["A black and white dog", "A black dog", "A dog", "x", "y"], None),  # "black and white" disagrees
    (["A brown dog", "A black dog", "x", "y", "z"], None),                # captions disagree
    (["A brown dog", "A dog", "x", "y", "z"], None),                      # one caption is not enough
    (["A brown dog and a white dog", "Two dogs", "A brown dog", "x", "y"], None),  # more than one dog
    (["A grey dog", "The gray puppy", "x", "y", "z"], "gray"),
])
def test_dog_colour_only_when_the_captions_agree_on_one_dog(caps, colour):
    assert instruct.dog_colour(caps) == colour


def test_an_image_naming_two_sound_sources_is_left_out_of_the_audio_visual_task():
    images = {"dog": ["A dog", "A dog runs", "x", "y", "z"],
              "dog_beach": ["A dog on the beach", "A dog", "x", "y", "z"],  # dog and sea waves: ambiguous
              "dog_once": ["A dog", "x", "y", "z", "w"],                   # one mention: not enough
              "waves": ["Surfers ride waves", "the ocean", "x", "y", "z"]}
    assert instruct.av_images(images) == {"dog": ["dog"], "sea_waves": ["waves"]}


def test_av_sizes_cut_the_largest_class_to_the_sum_of_the_others():
    assert instruct.av_sizes({"dog": 200, "sea_waves": 53, "crying_baby": 10}) == \
        {"dog": 63, "sea_waves": 53, "crying_baby": 10}
    assert instruct.av_sizes({"dog": 200, "sea_waves": 53}, per_class=40) == {"dog": 40, "sea_waves": 40}


def test_av_pairs_balance_yes_and_no_for_every_image_and_every_sound_class():
    images = {f"d{i}": ["A dog", "A dog"] for i in range(7)} | {f"w{i}": ["waves", "the ocean"] for i in range(3)} \
        | {f"b{i}": ["a baby", "a baby cries"] for i in range(2)}
    esc = [{"path": f"1-{k}-A-0.flac", "fold": 1, "category": c, "label": 0}
           for k, c in enumerate(["dog", "sea_waves", "crying_baby"] * 2)]
    rows = instruct.av_pairs(images, esc, "test", ["dog", "sea_waves", "crying_baby"])
    assert len(rows) == 2 * (5 + 3 + 2)  # dog cut to 3 + 2 = 5 images
    for key in ("image", "sound_class", "image_class"):
        per = Counter((r[key], r["answer"]) for r in rows)
        assert all(per[(k, "yes")] == per[(k, "no")] for k, _ in per), (key, per)
    assert all((r["image_class"] == r["sound_class"]) == (r["answer"] == "yes") for r in rows)
    assert all(r["audio"]["source"] == "esc10" and r["prompt"].startswith("<image><audio>") for r in rows)


def test_spoken_questions_are_the_typed_ones_read_aloud_in_split_specific_voices():
    typed = instruct.yesno({"a": DOG2, "b": ["A cat"] * 5}, "val")
    said = instruct.spoken_questions(typed, "val")
    assert [s["answer"] for s in said] == [t["answer"] for t in typed]
    assert [s["typed"] for s in said] == [t["id"] for t in typed]
    assert said[0]["audio"]["text"] == "Is there a dog in the picture?"
    assert {s["audio"]["variant"] for s in said} <= set(instruct.SPOKEN_VARIANTS["val"])
    assert set(instruct.SPOKEN_VARIANTS["val"]) <= set(spoken.VARIANTS)
    assert all(not set(instruct.SPOKEN_VARIANTS[a]) & set(instruct.SPOKEN_VARIANTS[b])
               for a in instruct.SPLITS for b in instruct.SPLITS if a < b)


# ---------------------------------------------------------------- the real build

@pytest.fixture
def real_build(real_data):
    src = instruct.sources_of()
    return src, instruct.build(*src)


def test_real_splits_share_no_image_clip_or_speaker(real_build):
    _, b = real_build
    def used(split, what):
        rows = b[split]
        if what == "image":
            return {r["image"] for r in rows if r["image"]}
        if what == "speaker":
            return {r["speaker"] for r in rows if "speaker" in r}
        return {json.dumps(r["audio"], sort_keys=True) for r in rows if r["audio"] and r["audio"]["source"] == what}
    for what in ("image", "esc10", "fsdd", "spoken", "speaker"):
        sets = {s: used(s, what) for s in instruct.SPLITS}
        assert all(sets.values()), (what, {s: len(v) for s, v in sets.items()})
        for a in instruct.SPLITS:
            for c in instruct.SPLITS:
                if a < c:
                    assert not sets[a] & sets[c], (what, a, c, sorted(sets[a] & sets[c])[:3])


def test_real_answers_are_balanced_per_template(real_build):
    _, b = real_build
    for split, rows in b.items():
        per = Counter((r["task"], r["template"], r.get("object"), r["answer"]) for r in rows if r["task"] != "describe")
        groups: dict[tuple, list[int]] = {}
        for (task, template, obj, _), n in per.items():
            groups.setdefault((task, template, obj), []).append(n)
        for group, ns in groups.items():
            assert len(ns) >= 2 and len(set(ns)) == 1, (split, group, ns)  # every answer equally often
        av = [r for r in rows if r["task"] == "av"]
        sound = Counter((r["sound_class"], r["answer"]) for r in av)
        assert all(sound[(c, "yes")] == sound[(c, "no")] for c, _ in sound), (split, sound)


def test_real_audio_visual_classes_and_counts_are_reported(real_build):
    src, b = real_build
    counts = instruct.av_counts(src[0])
    kept = instruct.av_kept(counts)
    assert set(counts) == set(instruct.AV_SOURCES) and {"dog", "sea_waves"} <= set(kept)
    assert "clock_tick" not in kept  # Flickr8k has no clocks worth the name
    assert {r["image_class"] for r in b["test"] if r["task"] == "av"} == set(kept)


# ---------------------------------------------------------------- the cache

def tiny_sources():
    images = {s: {f"{s}{i}.jpg": (DOG2 if i % 2 else ["A car", "A red car", "a", "b", "c"]) for i in range(24)}
              | {f"{s}w{i}.jpg": ["waves", "the ocean", "a", "b", "c"] for i in range(12)} for s in instruct.SPLITS}
    esc = [{"path": f"{f}-{k}-A-0.flac", "fold": f, "category": c, "label": 0 if c == "dog" else 3}
           for f in (1, 2, 3) for k, c in enumerate(["dog", "sea_waves"] * 2)]
    fsdd = [{"path": f"{d}_{who}_0.flac", "speaker": who, "label": d} for d in range(3)
            for who in ("george", "lucas", "theo")]
    return images, esc, fsdd


def test_examples_are_cached_with_a_manifest_and_rebuilt_when_a_file_changed(tmp_path, monkeypatch):
    monkeypatch.setenv("MMCOURSE_CACHE_DIR", str(tmp_path))
    src = tiny_sources()
    first = instruct.examples("test", sources=src)
    (where,) = (tmp_path / "instruct").iterdir()
    manifest = json.loads((where / "manifest.json").read_text())
    assert manifest["splits"]["test"]["examples"] == len(first)
    assert manifest["splits"]["test"]["answers"]["av"] == {"yes": 24, "no": 24}
    monkeypatch.setattr(instruct, "build", lambda *a, **k: pytest.fail("built again from an intact cache"))
    assert instruct.examples("test", sources=src) == first
    assert {r["task"] for r in instruct.examples("test", sources=src, tasks=("digit",))} == {"digit"}
    (where / "test.json").write_text("[]\n")
    monkeypatch.undo()
    monkeypatch.setenv("MMCOURSE_CACHE_DIR", str(tmp_path))
    with pytest.warns(DataWarning, match="does not match its sha256"):
        assert instruct.examples("test", sources=src) == first


def test_unknown_split_or_task_is_refused():
    with pytest.raises(ValueError, match="split must be one of"):
        instruct.examples("dev", sources=tiny_sources())
    with pytest.raises(ValueError, match="unknown instruction task"):
        instruct.examples("test", tasks=("vqa",), sources=tiny_sources())


def test_a_synthetic_stand_in_is_refused(no_data):
    with pytest.raises(DataError, match="needs the real flickr8k"):
        instruct.sources_of()
