"""SIMULATED clinical notes for the Kermany chest X-rays (notebook 09, §6, image + clinical-text fusion).

**Nothing here is real patient data.** No real paired radiology reports can be shipped with the
course: MIMIC-CXR is credentialed and the IU X-ray (Open-i) reports are no-derivatives. So every
X-ray record gets an invented note, drawn from invented distributions, in two variants:

* ``"weak"`` — a triage line built from patient variables that are only partly informative::

      3-year-old boy with 4 days of cough. T 38.6 °C, RR 44/min (fast breathing for age),
      SpO2 95 % on room air. Crackles on auscultation.

* ``"leaky"`` — the same line plus a radiology impression whose wording is derived from the
  label itself ("Right lower lobe consolidation, consistent with bacterial pneumonia." /
  "Lungs are clear. No focal consolidation."), a few paraphrases per class. This is what text
  looks like when the labels were mined from the report (MIMIC-CXR's labels come from its
  reports, by the CheXpert and NegBio labellers): text alone then reaches AUC ≈ 1, and any "fusion" that adds it
  to the image looks perfect for the wrong reason.

The variables, given the label (invented for teaching, loosely inspired by the WHO clinical
signs of childhood pneumonia — cough, fever, fast breathing for age, low oxygen saturation,
crackles — and **not fitted to any data**)::

    variable          NORMAL (label 0)                PNEUMONIA (label 1)              then
    age, months       uniform 12–71 (both classes; Kermany's cohort is 1–5 years old)
    sex               boy / girl, 50:50 (both classes; no signal)
    temperature, °C   Normal(37.5, 0.7)               Normal(38.0, 0.8)                0.1 °C, clipped to 35.5–41.5
    cough, days       LogNormal(median 3, σlog 0.6)   LogNormal(median 3.5, σlog 0.6)  whole days, 1–21
    resp. rate, /min  base(age) + Normal(0, 5)        base(age) + Normal(4, 7)         whole, clipped to 16–80
                      base(age) = 36 − 2.5 × age in years (≈ 33/min at 1 year, ≈ 24/min at 5 years)
    fast breathing    RR ≥ 40/min at 12–59 months (WHO IMCI; ≥ 50/min below 12 months never occurs here),
                      ≥ 30/min from 60 months (a common extension, not a WHO IMCI rule);
                      written "(fast breathing for age)" in the note
    SpO2, %           Normal(97.6, 1.4)               Normal(96.5, 2.3)                whole, clipped to 80–100
    crackles          present with probability 0.20   present with probability 0.40

The class-conditional distributions overlap on purpose. A logistic regression on the seven
:data:`NUMERIC` fields reaches AUC ≈ 0.81 on a large simulated population (6,000 patients per
class) and ≈ 0.75 on the 624 Kermany test images when fitted on the official train split;
TF-IDF + logistic regression on the weak note text gets about the same, the leaky notes ≈ 1.00
(``tests/test_clinical_notes.py`` checks bands, not these figures). The test figure sits below
the population one by chance: the test set has only 427 patients, and all images of a patient
carry the same note. The pneumonia subtype (bacterial / viral) changes only the leaky wording,
never the variables, because Kermany's ``personN`` keys mix bacterial and viral files.

Determinism. Every random draw is a fixed function of ``sha256("encounter/patient key/label/
variable name")`` (read as a uniform number, then through the inverse normal CDF), so all
images of one patient in one split get the same variables and the same note, whatever the order
of the records and on any machine or library version (no RNG stream is involved). The
*encounter* is the official split (``train``, which the carved ``val`` belongs to, or ``test``): 170
of the 202 ``personN`` keys of the test set also occur in train, with other image numbers and
always the other subtype (viral on one side, bacterial on the other), so they are probably not
the same children — and if the notes were seeded by
the key alone, an exact copy of a training note would mark a test image as pneumonia (no NORMAL
key is shared), a leak of its own.

Why the "SIMULATED" label is not inside the notes: anything in the text is embedded by MiniLM.
A marker identical in every note carries no label information, but it would add the same
component to every embedding and mix bookkeeping into what §6 calls "the text". So the notes
stay clean and the notebook prints :data:`SIMULATED_BANNER` above every table or sample of them.
"""
from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from statistics import NormalDist

from mmcourse.data.chest_xray import patient_key

SIMULATED_BANNER = ("SIMULATED clinical notes: invented from made-up distributions for teaching (notebook 09, §6); "
                    "no real patient, report or measurement is behind them.")
VARIANTS = ("leaky", "weak")
NUMERIC = ("age_months", "temperature_c", "cough_days", "resp_rate", "fast_breathing", "spo2", "crackles")
"""The numeric fields of :func:`patient_variables` (what a tabular model of the note could use)."""

# Class-conditional parameters, index 0 = NORMAL, 1 = PNEUMONIA (documented in the module docstring).
TEMPERATURE = ((37.5, 0.7), (38.0, 0.8))
COUGH_MEDIAN_DAYS = (3.0, 3.5)
COUGH_SIGMA_LOG = 0.6
RR_EXCESS = ((0.0, 5.0), (4.0, 7.0))
SPO2 = ((97.6, 1.4), (96.5, 2.3))
CRACKLES = (0.20, 0.40)

_STD_NORMAL = NormalDist()

_IMPRESSIONS = {
    "normal": ["Lungs are clear. No focal consolidation.",
               "No acute cardiopulmonary abnormality.",
               "Clear lungs; no consolidation, effusion or pneumothorax.",
               "Normal chest radiograph, no infiltrate."],
    "bacteria": ["{Side} {lobe} lobe consolidation, consistent with bacterial pneumonia.",
                 "Focal airspace opacity in the {side} {lobe} lobe, consistent with lobar pneumonia.",
                 "Dense consolidation of the {side} {lobe} lobe with air bronchograms; bacterial pneumonia."],
    "virus": ["Bilateral perihilar interstitial opacities, consistent with viral pneumonia.",
              "Diffuse peribronchial thickening and patchy opacities, suggestive of viral pneumonia.",
              "Bilateral streaky interstitial infiltrates, in keeping with viral pneumonia."],
    "pneumonia": ["Airspace opacity consistent with pneumonia.",
                  "Findings consistent with pneumonia."],
}


def _uniform(*parts: object) -> float:
    """A number in (0, 1) that is a fixed function of ``parts`` (sha256, first 8 bytes)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return (int.from_bytes(digest[:8], "big") + 0.5) / 2**64


def _normal(mean: float, sd: float, *parts: object) -> float:
    return mean + sd * _STD_NORMAL.inv_cdf(_uniform(*parts))


def fast_breathing_cutoff(age_months: int) -> int:
    """WHO fast-breathing threshold in breaths/min: 50 below 12 months, 40 to 59 months, 30 from 5 years."""
    return 50 if age_months < 12 else 40 if age_months < 60 else 30


def _check_label(label: int) -> int:
    if label not in (0, 1) or isinstance(label, bool):
        raise ValueError(f"label must be 0 (NORMAL) or 1 (PNEUMONIA), got {label!r}")
    return int(label)


def patient_variables(patient_key: str, label: int, *, encounter: str = "train") -> dict:
    """The simulated variables of one patient (notebook 09, §6): a dict of :data:`NUMERIC` fields + sex.

    A fixed function of ``(encounter, patient_key, label)`` (see the module docstring), so every
    image of the patient gets the same dict. ``encounter`` is the official split, ``"train"`` or
    ``"test"``. The dict also keeps ``patient``, ``encounter`` and ``label``, which :func:`note`
    needs for the leaky wording.
    """
    y = _check_label(label)
    if encounter not in ("train", "test"):
        raise ValueError(f"encounter must be the official split 'train' (val included) or 'test', got {encounter!r}")
    seed = (encounter, patient_key, y)
    age = 12 + int(_uniform(*seed, "age") * 60)
    rr_mean, rr_sd = RR_EXCESS[y]
    rr = min(80, max(16, round(36 - 2.5 * age / 12 + _normal(rr_mean, rr_sd, *seed, "rr"))))
    cough = _normal(0.0, COUGH_SIGMA_LOG, *seed, "cough")
    return {
        "patient": patient_key, "encounter": encounter, "label": y,
        "age_months": age,
        "sex": "boy" if _uniform(*seed, "sex") < 0.5 else "girl",
        "temperature_c": round(min(41.5, max(35.5, _normal(*TEMPERATURE[y], *seed, "temperature"))), 1),
        "cough_days": int(min(21, max(1, round(COUGH_MEDIAN_DAYS[y] * math.exp(cough))))),
        "resp_rate": rr,
        "fast_breathing": int(rr >= fast_breathing_cutoff(age)),
        "spo2": int(min(100, max(80, round(_normal(*SPO2[y], *seed, "spo2"))))),
        "crackles": int(_uniform(*seed, "crackles") < CRACKLES[y]),
    }


def _age_text(months: int) -> str:
    return f"{months}-month-old" if months < 24 else f"{months // 12}-year-old"


def _triage(v: dict) -> str:
    days = "1 day" if v["cough_days"] == 1 else f"{v['cough_days']} days"
    fast = " (fast breathing for age)" if v["fast_breathing"] else ""
    chest = "Crackles on auscultation." if v["crackles"] else "No crackles on auscultation."
    return (f"{_age_text(v['age_months'])} {v['sex']} with {days} of cough. T {v['temperature_c']:.1f} °C, "
            f"RR {v['resp_rate']}/min{fast}, SpO2 {v['spo2']} % on room air. {chest}")


def _impression(v: dict, subtype: str | None) -> str:
    kind = "normal" if v["label"] == 0 else subtype if subtype in ("bacteria", "virus") else "pneumonia"
    seed = (v["encounter"], v["patient"], v["label"], kind)
    options = _IMPRESSIONS[kind]
    text = options[int(_uniform(*seed, "template") * len(options))]
    side = "right" if _uniform(*seed, "side") < 0.6 else "left"
    lobes = ("lower", "middle", "upper") if side == "right" else ("lower", "upper")
    lobe = lobes[int(_uniform(*seed, "lobe") * len(lobes))]
    return text.format(side=side, Side=side.capitalize(), lobe=lobe)


def note(variables: dict, variant: str, subtype: str | None = None) -> str:
    """One SIMULATED note from :func:`patient_variables` (notebook 09, §6).

    ``variant="weak"``: the triage line only. ``variant="leaky"``: the triage line plus a chest
    X-ray impression worded from the label (and from ``subtype``, ``"bacteria"`` or ``"virus"``,
    when given). Print :data:`SIMULATED_BANNER` wherever notes are shown.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown note variant {variant!r}: use one of {VARIANTS}")
    text = _triage(variables)
    return text if variant == "weak" else f"{text} CXR impression: {_impression(variables, subtype)}"


def _encounter(record: dict) -> str:
    """The official split of a loader record: its ``split`` field, else the folder above the class folder."""
    split = record.get("split") or Path(record["path"]).parent.parent.name
    return "test" if split == "test" else "train"


def variables_for(records: Iterable[dict] | object) -> list[dict]:
    """:func:`patient_variables` of every record (``data.load("chest_xray", ...)`` or its ``.records``)."""
    rows = getattr(records, "records", records)
    return [patient_variables(patient_key(Path(r["path"]).name), r["label"], encounter=_encounter(r)) for r in rows]


def notes_for(records: Iterable[dict] | object, variant: str) -> list[str]:
    """One SIMULATED note per X-ray record, in order (notebook 09, §6). Reads no image.

    ``records``: what ``mmcourse.data.load("chest_xray", split)`` returns, its ``.records`` (dicts
    with ``path``, ``label``, ``subtype`` and ``split``) or sample dicts read from it.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown note variant {variant!r}: use one of {VARIANTS}")
    rows = list(getattr(records, "records", records))
    return [note(v, variant, r.get("subtype")) for v, r in zip(variables_for(rows), rows)]


def shuffled(notes: Sequence[str], seed: int = 0) -> list[str]:
    """The shuffled-text control (notebook 09, §6): the notes, permuted so that none stays at its index.

    Sattolo's algorithm draws a random single cycle, so for ``n > 1`` no note is left at its own
    position (an identical note of the same patient may still land there). Any note–label
    association is broken, so a model that still scores above chance on shuffled text learned
    something other than the text.
    """
    out = list(notes)
    rng = random.Random(seed)
    for i in range(len(out) - 1, 0, -1):
        j = rng.randrange(i)
        out[i], out[j] = out[j], out[i]
    return out
