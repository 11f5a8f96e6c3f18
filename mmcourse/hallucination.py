"""Hallucinated objects in generated captions: CHAIR (notebook 12, §Generation harms).

Rohrbach et al. 2018 ("Object Hallucination in Image Captioning", EMNLP) count the objects a
caption names that are not in the image:

    CHAIR_i = hallucinated object mentions / all object mentions   (per object, over the set)
    CHAIR_s = captions with at least one hallucinated object / all captions

Each caption's objects are a *set* (a dog named twice is one mention). An object counts as in the
image when any reference caption names it; the paper also uses COCO's segmentations, which
Flickr8k does not have, so a true object that no annotator mentioned counts as hallucinated here
— the number is an upper bound, and the notebook says so. Objects are whole words from
:data:`OBJECTS` (concrete things annotators reliably name; synonyms and plurals map to one object).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

OBJECTS: dict[str, str] = {  # object -> its words in a caption (regex alternatives, whole words, any case)
    "dog": r"dogs?|pupp(?:y|ies)", "cat": r"cats?|kittens?", "horse": r"horses?|pon(?:y|ies)",
    "bird": r"birds?|ducks?|geese|goose|seagulls?|pigeons?", "cow": r"cows?|cattle|bulls?", "sheep": r"sheep",
    "ball": r"balls?|football|soccer ball|basketball|volleyball", "bicycle": r"bicycles?|bikes?",
    "motorcycle": r"motorcycles?|motorbikes?", "car": r"cars?", "truck": r"trucks?", "bus": r"bus(?:es)?",
    "boat": r"boats?|kayaks?|canoes?", "skateboard": r"skateboards?", "surfboard": r"surfboards?",
    "frisbee": r"frisbees?", "kite": r"kites?", "umbrella": r"umbrellas?", "bench": r"benches|bench",
    "guitar": r"guitars?", "tent": r"tents?", "camera": r"cameras?",
}


def _patterns(vocabulary: Mapping[str, str]) -> dict[str, re.Pattern]:
    return {obj: re.compile(rf"\b(?:{words})\b", re.IGNORECASE) for obj, words in vocabulary.items()}


def objects_in(text: str, vocabulary: Mapping[str, str] = OBJECTS) -> set[str]:
    """The vocabulary objects a text names ("Two puppies chase a ball" -> {"dog", "ball"})."""
    return {obj for obj, rx in _patterns(vocabulary).items() if rx.search(text)}


def chair(captions: Sequence[str], refs: Sequence[Sequence[str]], vocabulary: Mapping[str, str] = OBJECTS) -> dict:
    """CHAIR_i and CHAIR_s of generated ``captions`` against each image's reference captions ``refs``.

    Returns ``{"CHAIR_i", "CHAIR_s", "mentions", "hallucinated_mentions", "captions",
    "hallucinated": [(caption index, object), ...]}``. CHAIR_i is 0 when no caption names an
    object (nothing named, nothing hallucinated; ``mentions`` says so).
    """
    if len(captions) != len(refs):
        raise ValueError(f"{len(captions)} captions but {len(refs)} reference lists: give one list of "
                         "reference captions per generated caption")
    if not captions:
        raise ValueError("no captions to score")
    pats = _patterns(vocabulary)
    mentions, bad, bad_captions, hallucinated = 0, 0, 0, []
    for i, (caption, ref) in enumerate(zip(captions, refs)):
        named = {obj for obj, rx in pats.items() if rx.search(caption)}
        present = {obj for obj, rx in pats.items() if any(rx.search(r) for r in ref)}
        wrong = sorted(named - present)
        mentions += len(named)
        bad += len(wrong)
        bad_captions += bool(wrong)
        hallucinated += [(i, obj) for obj in wrong]
    return {"CHAIR_i": bad / mentions if mentions else 0.0, "CHAIR_s": bad_captions / len(captions),
            "mentions": mentions, "hallucinated_mentions": bad, "captions": len(captions),
            "hallucinated": hallucinated}
