"""mmcourse.data.clinical_notes: SIMULATED notes for notebook 09, §6 — determinism, per-patient
variables, plausible values, and how much a text-only classifier (TF-IDF + sklearn's logistic
regression, AUC by sklearn) gets from each variant on the real Kermany records (no image decoded)."""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from conftest_data import need_real

from mmcourse.data import chest_xray
from mmcourse.data import clinical_notes as cn


@pytest.fixture(scope="module")
def kermany() -> dict:
    """Records (paths and labels only) of the official train split (train + val) and the test split."""
    folder = need_real("chest_xray_pneumonia")
    out = {s: chest_xray.load(s, root=folder, fallback="error") for s in ("trainval", "test")}
    assert len(out["test"]) == 624
    return out


def text_auc(train_notes, y_train, test_notes, y_test) -> float:
    model = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=1000)).fit(train_notes, y_train)
    return roc_auc_score(y_test, model.predict_proba(test_notes)[:, 1])


def labels(records) -> np.ndarray:
    return np.array(records.column("label"))


def numeric(records) -> np.ndarray:
    """The :data:`NUMERIC` fields of every record's variables, one row per image."""
    return np.array([[v[k] for k in cn.NUMERIC] for v in cn.variables_for(records)], float)


def key(record: dict) -> str:
    return chest_xray.patient_key(Path(record["path"]).name)


# ------------------------------------------------------------------ determinism and per-patient variables

def test_variables_and_notes_are_a_fixed_function_of_the_patient():
    a = cn.patient_variables("person23", 1, encounter="train")
    assert a == cn.patient_variables("person23", 1, encounter="train")
    assert cn.note(a, "weak") == cn.note(cn.patient_variables("person23", 1), "weak")
    assert a != cn.patient_variables("person24", 1)
    assert a != cn.patient_variables("person23", 1, encounter="test")
    assert a != cn.patient_variables("person23", 0)


def test_notes_do_not_depend_on_record_order(kermany):
    records = kermany["test"].records
    for variant in cn.VARIANTS:
        forward = cn.notes_for(records, variant)
        assert cn.notes_for(records[::-1], variant) == forward[::-1]
        order = np.random.default_rng(0).permutation(len(records))
        assert cn.notes_for([records[i] for i in order], variant) == [forward[i] for i in order]


def test_all_images_of_one_patient_share_variables_and_weak_note(kermany):
    groups = defaultdict(set)
    variables = cn.variables_for(kermany["trainval"])
    notes = cn.notes_for(kermany["trainval"], "weak")
    for r, v, n in zip(kermany["trainval"].records, variables, notes):
        groups[key(r)].add((tuple(sorted(v.items())), n))
    assert len(groups) < len(notes)  # patients with several images exist, so this tests something
    assert all(len(g) == 1 for g in groups.values())


def test_train_and_test_keys_are_separate_encounters(kermany):
    """170 personN keys occur in both splits; their notes must not copy a training note."""
    shared = {key(r) for r in kermany["trainval"].records} & {key(r) for r in kermany["test"].records}
    assert shared
    train_notes = set(cn.notes_for(kermany["trainval"], "weak"))
    test_notes = cn.notes_for(kermany["test"], "weak")
    copied = [n for r, n in zip(kermany["test"].records, test_notes) if key(r) in shared and n in train_notes]
    assert len(copied) < 0.01 * len(test_notes)


def test_records_samples_and_lists_give_the_same_notes(kermany):
    records = kermany["test"]
    samples = [{"path": str(r["path"]), "label": r["label"], "subtype": r["subtype"]} for r in records.records]
    expected = cn.notes_for(records, "leaky")
    assert cn.notes_for(records.records, "leaky") == expected
    assert cn.notes_for(samples, "leaky") == expected  # encounter read from the test/ folder in the path


def test_synthetic_fallback_records_get_notes(no_data):
    records = chest_xray.load("test")
    assert records.info.source == "synthetic"
    notes = cn.notes_for(records, "leaky")
    assert len(notes) == len(records) and all(isinstance(n, str) and n for n in notes)


# ------------------------------------------------------------------ plausible values

def test_values_are_plausible_and_match_the_note(kermany):
    rows = kermany["trainval"].records + kermany["test"].records
    variables = cn.variables_for(rows)
    for v, text in zip(variables, cn.notes_for(rows, "weak")):
        assert 80 <= v["spo2"] <= 100 and 35.5 <= v["temperature_c"] <= 41.5
        assert 12 <= v["age_months"] <= 71 and 1 <= v["cough_days"] <= 21 and 16 <= v["resp_rate"] <= 80
        assert v["fast_breathing"] == int(v["resp_rate"] >= cn.fast_breathing_cutoff(v["age_months"]))
        assert set(v) >= set(cn.NUMERIC)
        m = re.fullmatch(r"(\d+)-(month|year)-old (boy|girl) with (\d+) days? of cough\. T (\d+\.\d) °C, "
                         r"RR (\d+)/min( \(fast breathing for age\))?, SpO2 (\d+) % on room air\. "
                         r"(No crackles|Crackles) on auscultation\.", text)
        assert m, text
        assert int(m[4]) == v["cough_days"] and float(m[5]) == v["temperature_c"] and int(m[6]) == v["resp_rate"]
        assert int(m[8]) == v["spo2"] and (m[9] == "Crackles") == bool(v["crackles"])
        assert bool(m[7]) == bool(v["fast_breathing"])
    X = np.array([[v[k] for k in cn.NUMERIC] for v in variables], float)
    y = np.array([r["label"] for r in rows])
    assert X[y == 1, 1].mean() > X[y == 0, 1].mean()  # pneumonia: warmer
    assert X[y == 1, 5].mean() < X[y == 0, 5].mean()  # and lower SpO2


def test_who_fast_breathing_cutoffs():
    assert [cn.fast_breathing_cutoff(m) for m in (2, 11, 12, 59, 60, 71)] == [50, 50, 40, 40, 30, 30]


def test_leaky_wording_follows_the_label(kermany):
    records = kermany["test"].records
    for r, text in zip(records, cn.notes_for(records, "leaky")):
        impression = text.split("CXR impression: ")[1]
        if r["label"] == 0:
            assert "pneumonia" not in impression and re.search(r"(?i)clear|no acute|normal", impression), impression
        else:
            assert {"bacteria": "bacterial", "virus": "viral"}[r["subtype"]] in impression or (
                r["subtype"] == "bacteria" and "lobar pneumonia" in impression)


# ------------------------------------------------------------------ what text alone can do

def test_leaky_notes_alone_are_near_perfect(kermany):
    tr, te = kermany["trainval"], kermany["test"]
    auc = text_auc(cn.notes_for(tr, "leaky"), labels(tr), cn.notes_for(te, "leaky"), labels(te))
    assert auc > 0.98


def test_weak_notes_alone_are_modest_and_well_below_leaky(kermany):
    tr, te = kermany["trainval"], kermany["test"]
    weak = text_auc(cn.notes_for(tr, "weak"), labels(tr), cn.notes_for(te, "weak"), labels(te))
    leaky = text_auc(cn.notes_for(tr, "leaky"), labels(tr), cn.notes_for(te, "leaky"), labels(te))
    assert 0.62 < weak < 0.90 and weak < leaky - 0.08
    tabular = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(numeric(tr), labels(tr))
    assert 0.65 < roc_auc_score(labels(te), tabular.predict_proba(numeric(te))[:, 1]) < 0.88


@pytest.mark.parametrize("variant", cn.VARIANTS)
def test_shuffled_notes_are_at_chance(kermany, variant):
    tr, te = kermany["trainval"], kermany["test"]
    model = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=1000))
    model.fit(cn.notes_for(tr, variant), labels(tr))
    auc = roc_auc_score(labels(te), model.predict_proba(cn.shuffled(cn.notes_for(te, variant), seed=0))[:, 1])
    assert abs(auc - 0.5) < 0.08


def test_shuffled_is_a_seeded_permutation_without_fixed_points():
    for n in range(2, 40):
        items = [f"note {i}" for i in range(n)]
        for seed in range(5):
            out = cn.shuffled(items, seed)
            assert sorted(out) == sorted(items) and all(a != b for a, b in zip(out, items))
            assert out == cn.shuffled(items, seed)
    assert cn.shuffled([], 0) == [] and cn.shuffled(["only"], 0) == ["only"]
    items = [f"note {i}" for i in range(30)]
    assert cn.shuffled(items, 0) != cn.shuffled(items, 1) and items == [f"note {i}" for i in range(30)]


# ------------------------------------------------------------------ errors

def test_clear_errors():
    v = cn.patient_variables("IM-0001", 0)
    with pytest.raises(ValueError, match="leaky"):
        cn.note(v, "strong")
    with pytest.raises(ValueError, match="leaky"):
        cn.notes_for([{"path": Path("test/NORMAL/IM-0001-0001.jpeg"), "label": 0}], "Leaky")
    with pytest.raises(ValueError, match="0 .NORMAL. or 1"):
        cn.patient_variables("IM-0001", 2)
    with pytest.raises(ValueError, match="official split"):
        cn.patient_variables("IM-0001", 0, encounter="val")


def test_banner_says_simulated():
    assert "SIMULATED" in cn.SIMULATED_BANNER and "\n" not in cn.SIMULATED_BANNER
    assert "SIMULATED" not in cn.note(cn.patient_variables("person1", 1), "leaky", "virus")
