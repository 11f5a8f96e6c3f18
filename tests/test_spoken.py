"""mmcourse.data.spoken: spoken instructions synthesised by the tts voice (notebook 10, §"Spoken instructions").

Templates and splits are checked without a model (hand-computed answers and counts); the storage
tests synthesise a handful of clips with the real Piper voice into a temporary cache and check the
FLACs, the manifest's sha256 (against hashlib), lazy generation, repair and interruption.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest
import soundfile as sf

from mmcourse import config, data, pretrained
from mmcourse.data import DataError, DataWarning, fetch
from mmcourse.data import spoken


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty MMCOURSE_CACHE_DIR for the clips; the models stay where `make models` put them."""
    monkeypatch.setenv("MMCOURSE_MODEL_DIR", str(config.model_dir()))
    monkeypatch.delenv("MMCOURSE_MODEL_TTS", raising=False)
    monkeypatch.setenv("MMCOURSE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def no_synthesis(monkeypatch):
    """From now on any synthesis (or even loading the voice) fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("synthesised or loaded the voice although every clip is stored")
    monkeypatch.setattr(spoken, "synthesize", refuse)
    monkeypatch.setattr(pretrained, "load", refuse)
    monkeypatch.setattr(spoken, "_VOICES", {})


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest(where) -> dict:
    return json.loads((where / "manifest.json").read_text())


# ---------------------------------------------------------------- templates and splits (no model)

def test_templates_give_the_hand_checked_answers_and_counts():
    answers = {q["text"]: (q["answer"], q["task"]) for q in spoken.questions()}
    assert answers["What number comes after four?"] == ("five", "next")
    assert answers["What number comes after eight?"] == ("nine", "next")
    assert answers["What number comes before one?"] == ("zero", "previous")
    assert answers["What is two plus three?"] == ("five", "plus")
    assert answers["What is zero plus nine?"] == ("nine", "plus")
    assert answers["What is nine minus four?"] == ("five", "minus")
    assert answers["What is seven minus seven?"] == ("zero", "minus")
    assert answers["Say the word helicopter."] == ("helicopter", "say")
    for absent in ("What number comes after nine?", "What number comes before zero?", "What is five plus five?",
                   "What is three minus four?"):
        assert absent not in answers  # answers stay one digit word, never negative
    assert Counter(q["task"] for q in spoken.questions()) == {"next": 9, "previous": 9, "plus": 55, "minus": 55,
                                                              "say": 10}
    assert len(answers) == 138  # every text is unique
    assert {a for a, _ in answers.values()} == set(spoken.ANSWERS) and len(spoken.ANSWERS) == 20
    grid = {(v["length_scale"], v["noise_scale"], v["noise_w_scale"]) for v in spoken.VARIANTS.values()}
    assert grid == {(ls, ns, nw) for ls in (0.8, 1.0, 1.25) for ns, nw in ((0.333, 0.4), (0.667, 0.8), (1.0, 1.2))}
    first3 = [spoken.VARIANTS[v] for v in spoken.variant_names(3)]
    assert {v["length_scale"] for v in first3} == {0.8, 1.0, 1.25}  # a smoke run hears every speed
    with pytest.raises(ValueError, match="variants are"):
        spoken.variant_names(["medium-defualt"])
    with pytest.raises(ValueError, match="tasks are"):
        spoken.select("train", tasks=["times"])


def test_splits_are_by_text_stratified_and_stable():
    qs = spoken.questions()
    assert qs == spoken.questions()
    by_split = {s: {q["text"] for q in qs if q["split"] == s} for s in spoken.SPLITS}
    assert sum(map(len, by_split.values())) == 138  # each text in exactly one split
    assert not (by_split["train"] & by_split["test"]) and not (by_split["train"] & by_split["val"])
    for task in spoken.TASKS:
        n = Counter(q["split"] for q in qs if q["task"] == task)
        assert set(n) == {"train", "val", "test"}, task
        total = sum(n.values())
        assert abs(n["train"] / total - 0.7) < 0.05 and abs(n["test"] / total - 0.2) < 0.05, (task, n)
    share = {s: len(v) / 138 for s, v in by_split.items()}
    assert abs(share["train"] - 0.7) < 0.02 and abs(share["val"] - 0.1) < 0.02 and abs(share["test"] - 0.2) < 0.02
    # per_task takes a prefix of a fixed order: the smoke subset is part of the full set
    small = spoken.select("test", per_task=1)
    assert [q["task"] for q in small] == list(spoken.TASKS)
    assert all(q in spoken.select("test") for q in small)
    assert spoken.select("train", per_task=3)[:3] == spoken.select("train", per_task=5)[:3]


# ---------------------------------------------------------------- storage (the real voice, a few clips)

@pytest.mark.models
def test_generate_writes_flacs_and_a_manifest_and_a_second_load_synthesises_nothing(models_ready, cache,
                                                                                 monkeypatch):
    where = spoken.generate(splits="val", variants=2, tasks=["next", "say"], per_task=1, progress=False)
    key = pretrained.role_key("tts")
    assert where == cache / "spoken" / key.split(":")[1][:12]
    doc = manifest(where)
    assert doc["voice_sha256"] == pretrained.ARTIFACTS["tts"].files[pretrained.ARTIFACTS["tts"].weights]
    assert doc["sample_rate"] == 22050 and "joe" in doc["voice"]
    clips = doc["clips"]
    assert len(clips) == 4 and len(list(where.glob("*.flac"))) == 4
    for cid, c in clips.items():
        path = where / c["file"]
        assert path.name == f"{cid}.flac" and c["sha256"] == sha256(path)
        info = sf.info(path)
        assert (info.samplerate, info.subtype, info.format) == (22050, "PCM_16", "FLAC")
        assert abs(info.frames / 22050 - c["seconds"]) < 1e-3 and 0.5 < c["seconds"] < 4
        assert c["split"] == "val" and c["length_scale"] == spoken.VARIANTS[c["variant"]]["length_scale"]

    no_synthesis(monkeypatch)
    ds = spoken.load("val", variants=2, tasks=["next", "say"], per_task=1, progress=False)
    assert len(ds) == 4 and ds.info.source == "tts" and "SYNTHESISED" in str(ds.info)
    assert "CC0" in ds.info.licence and any("en_US-joe-medium" in n for n in ds.info.notes)
    s = ds[0]
    assert s["audio"].dtype.is_floating_point and s["audio"].ndim == 1 and s["sample_rate"] == 16000
    seconds = clips[s["path"].rsplit("/", 1)[1][:-5]]["seconds"]
    assert abs(len(s["audio"]) / 16000 - seconds) < 0.01
    assert s["answer"] in spoken.ANSWERS and s["task"] in ("next", "say") and s["split"] == "val"
    with pytest.raises(DataError, match="fetch data spoken"):
        spoken.load("test", per_task=1, variants=1, generate=False)  # not made yet, and not allowed to


@pytest.mark.models
def test_speak_reads_any_text_once_per_text_and_variant_in_the_order_asked(models_ready, cache, monkeypatch):
    asked = [("Is there a dog in the picture?", "medium-steady"), ("Is there a car in the picture?", "medium-steady"),
             ("Is there a dog in the picture?", "medium-steady"), ("Is there a dog in the picture?", "fast-default")]
    ds = spoken.speak(asked, task="image question", split="test", progress=False)
    assert [(ds.records[i]["text"], ds.records[i]["variant"]) for i in range(4)] == asked
    assert ds.records[0]["path"] == ds.records[2]["path"] != ds.records[3]["path"]
    where = spoken.folder()
    clips = manifest(where)["clips"]
    assert len(clips) == 3 and {c["task"] for c in clips.values()} == {"image question"}
    assert all(c["sha256"] == sha256(where / c["file"]) for c in clips.values())
    no_synthesis(monkeypatch)
    again = spoken.speak(asked[:2], task="image question", split="test", progress=False)
    s = again[1]
    assert s["text"] == "Is there a car in the picture?" and s["answer"] == "" and s["sample_rate"] == 16000
    with pytest.raises(ValueError, match="unknown spoken variant"):
        spoken.speak([("Hello.", "robot")], task="x", split="test")


def test_a_corrupted_or_missing_clip_is_named_and_made_again(models_ready, cache):
    where = spoken.generate(splits="test", variants=["fast-lively"], tasks=["plus", "minus"], per_task=1,
                            progress=False)
    before = manifest(where)["clips"]
    (bad, bad_entry), (gone, _) = sorted(before.items())
    path = where / bad_entry["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    (where / f"{gone}.flac").unlink()
    with pytest.warns(DataWarning) as caught:
        ds = spoken.load("test", variants=["fast-lively"], tasks=["plus", "minus"], per_task=1, progress=False)
    said = " ".join(str(w.message) for w in caught)
    assert f"{bad}.flac" in said and "changed" in said and f"{gone}.flac" in said and "missing" in said
    after = manifest(where)["clips"]
    assert set(after) == set(before)
    for entry in after.values():
        assert entry["sha256"] == sha256(where / entry["file"])
    assert len(ds) == 2 and all(len(ds[i]["audio"]) > 0 for i in range(2))


@pytest.mark.models
def test_an_interrupted_generation_keeps_the_clips_of_finished_batches(models_ready, cache, monkeypatch):
    monkeypatch.setattr(spoken, "BATCH", 2)
    real = spoken.synthesize
    calls = []

    def crash_on_the_third(voice, syn_config, text, variant):
        calls.append(text)
        if len(calls) == 3:
            stored = manifest(spoken.folder())["clips"]  # on disk before the crash: the first batch
            assert len(stored) == 2, stored
            raise KeyboardInterrupt
        return real(voice, syn_config, text, variant)

    monkeypatch.setattr(spoken, "synthesize", crash_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        spoken.generate(splits="train", variants=2, tasks=["previous", "say"], per_task=1, progress=False)
    where = spoken.folder()
    kept = manifest(where)["clips"]
    assert len(kept) == 2 and all(c["sha256"] == sha256(where / c["file"]) for c in kept.values())

    calls.clear()
    monkeypatch.setattr(spoken, "synthesize", lambda *a: (calls.append(a[2]), real(*a))[1])
    spoken.generate(splits="train", variants=2, tasks=["previous", "say"], per_task=1, progress=False)
    assert len(calls) == 2 and len(manifest(where)["clips"]) == 4  # only the two missing clips were made


@pytest.mark.models
def test_variants_really_differ_slow_clips_are_longer(models_ready, cache):
    ds = data.load("spoken", "train", variants=["fast-default", "slow-default"], tasks=["plus"], per_task=3,
                   progress=False)
    seconds = {(r["text"], r["variant"]): r["seconds"] for r in ds.records}
    for text in {r["text"] for r in ds.records}:
        assert seconds[text, "slow-default"] > 1.15 * seconds[text, "fast-default"], (text, seconds)


def test_fetch_data_spoken_generates_through_the_registry(cache, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(spoken, "generate", lambda **kw: calls.append(kw) or cache / "spoken" / "x")
    assert fetch.main(["spoken", "--no-progress"]) == 0
    assert calls == [{"progress": False}]
    assert "spoken: ready at" in capsys.readouterr().out
    assert "spoken" in fetch.DEFAULT and fetch.integrity(cache / "data", ["spoken"]) == []  # nothing to download
