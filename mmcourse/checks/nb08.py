"""Checks for notebook 08_image_captioning: teacher-forcing labels (exercise 8.1), BLEU's clipped
n-gram precision (8.2) and brevity penalty (8.3), beam search for one caption (8.4), the quizzes.

Each check compares the learner's function with the library version in :mod:`mmcourse.captioning`
or :mod:`mmcourse.metrics` and recognises the typical mistakes to give a specific hint. Beam search
is checked on toy language models over six tokens whose best caption is known by enumeration.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch

from mmcourse import checks, metrics
from mmcourse.captioning import beam_search, shift_labels


# --------------------------------------------------------------------------- exercise 8.1: labels

def reference_make_labels(tokens: torch.Tensor, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher forcing (notebook 08, §2): inputs ``tokens[:, :-1]``, labels ``tokens[:, 1:]``, −100 on padding."""
    return shift_labels(tokens, pad_id)


def label_batch() -> torch.Tensor:
    """Three encoded captions ``<bos>=1 … <eos>=2``, right-padded with ``<pad>=0``; the last one fills the row."""
    return torch.tensor([[1, 7, 4, 9, 5, 2, 0, 0],
                         [1, 6, 8, 2, 0, 0, 0, 0],
                         [1, 4, 5, 6, 7, 8, 9, 2]])


def _same(found: Any, want: torch.Tensor) -> bool:
    """Same shape and values (any numeric dtype)."""
    return torch.is_tensor(found) and found.shape == want.shape and bool((found.double() == want.double()).all())


def _row(x: torch.Tensor) -> str:
    """Row 1 of a batch (the most padded caption) for a verdict line."""
    return f"row 1 = {x[1].tolist()}" if x.ndim == 2 else f"shape {tuple(x.shape)}"


def _label_mistakes(tokens: torch.Tensor, pad_id: int) -> list[tuple[torch.Tensor | None, torch.Tensor, str]]:
    """``(inputs or None for any, labels, hint)`` that typical mistakes return."""
    def masked(t: torch.Tensor) -> torch.Tensor:
        return t.masked_fill(t == pad_id, -100)

    first, rest = tokens[:, :-1], tokens[:, 1:]
    unshifted = "the labels are not shifted: labels = tokens[:, 1:] (T − 1 columns, like the inputs), with -100 " \
                "where the label is <pad>"
    att = "the labels are the attention mask (1 on words, 0 on padding), not the words to predict: labels are " \
          "the next token ids, tokens[:, 1:], with -100 where the label is <pad>"
    return [
        (first, rest, "the padding is still in the labels: set the positions where the label is <pad> to -100 "
                      "(cross_entropy's ignore_index), or the model learns to predict <pad>"),
        (first, masked(first), "the labels are not shifted: position t sees tokens 0..t and must predict the NEXT "
                               "token, so labels = tokens[:, 1:] (with -100 on <pad>)"),
        (rest, masked(first), "shifted the wrong way: the inputs are tokens[:, :-1] (they start with <bos>) and the "
                              "labels tokens[:, 1:] (they end with <eos>)"),
        (rest, first, "shifted the wrong way: the inputs are tokens[:, :-1] (they start with <bos>) and the "
                      "labels tokens[:, 1:] (they end with <eos>), with -100 on <pad>"),
        (masked(first), masked(rest), "-100 only goes into the labels: the inputs are ids for the word embedding, "
                                      "which fails on -100; keep <pad> in the inputs"),
        (masked(first), rest, "-100 goes into the labels, not the inputs: the inputs keep <pad>, the labels get "
                              "-100 where they are <pad>"),
        (None, tokens, unshifted),
        (None, masked(tokens), unshifted),
        (None, (tokens != pad_id).long(), att),
        (None, (rest != pad_id).long(), att),
        (None, (first != pad_id).long(), att),
    ]


def check_make_labels(fn: Callable) -> None:
    """Check ``make_labels(tokens, pad_id) -> (inputs, labels)`` against :func:`mmcourse.captioning.shift_labels`."""
    name = "make_labels"
    if not _check_labels_case(name, fn, label_batch(), 0):
        return
    # another tokenizer's <pad> id: the argument must be used, not a hard-coded 0
    tokens = label_batch().masked_fill(label_batch() == 0, 3)
    _check_labels_case(name + " (a tokenizer whose <pad> is 3)", fn, tokens, 3)


def _check_labels_case(name: str, fn: Callable, tokens: torch.Tensor, pad_id: int) -> bool:
    given = tokens.clone()
    found = checks.attempt(name, fn, given, pad_id, fallback="mmcourse.captioning.shift_labels",
                           shape_hint="inputs = tokens[:, :-1] and labels = tokens[:, 1:] both have T − 1 columns")
    if checks.is_pending(found):
        return False
    if not isinstance(found, (tuple, list)) or len(found) != 2:
        return checks.failed(name, "a pair (inputs, labels)", f"{type(found).__name__}",
                             "return both tensors: `return inputs, labels`")
    inputs, labels = found
    if not (torch.is_tensor(inputs) and torch.is_tensor(labels)):
        return checks.failed(name, "two torch tensors", f"{type(inputs).__name__}, {type(labels).__name__}",
                             "slice and mask the tensor itself (tokens[:, 1:], masked_fill) so the result stays "
                             "a torch tensor")
    want_in, want_lab = shift_labels(tokens, pad_id)
    if not torch.equal(given, tokens):
        return checks.failed(name, "`tokens` left unchanged", "the batch you were given was modified",
                             "tokens[:, 1:] is a view: writing -100 into it (labels[...] = -100, masked_fill_) "
                             "also changes `tokens`, and so your inputs. Copy first (tokens[:, 1:].clone()) "
                             "or use the out-of-place masked_fill")
    if _same(inputs, want_in) and _same(labels, want_lab):
        if labels.dtype != torch.long or inputs.is_floating_point():
            return checks.failed(name, "integer tensors (labels torch.long)",
                                 f"inputs {inputs.dtype}, labels {labels.dtype}",
                                 "cross_entropy wants the labels as class indices (torch.long) and the embedding "
                                 "wants integer ids: do not convert to float, and fill with the integer -100")
        return checks.passed(name, f"labels {_row(labels)}")
    if pad_id != 0 and _same(inputs, want_in) and _same(labels, tokens[:, 1:]):
        return checks.failed(name, f"-100 where the label is <pad> = {pad_id}", f"labels {_row(labels)}",
                             "use the pad_id argument, not a hard-coded 0")
    for bad_in, bad_lab, hint in _label_mistakes(tokens, pad_id):
        if (bad_in is None or _same(inputs, bad_in)) and _same(labels, bad_lab):
            return checks.failed(name, f"labels {_row(want_lab)}", f"labels {_row(labels)}", hint)
    if inputs.shape != want_in.shape or labels.shape != want_lab.shape:
        return checks.failed(name, f"inputs and labels of shape {tuple(want_in.shape)}",
                             f"inputs {tuple(inputs.shape)}, labels {tuple(labels.shape)}",
                             "both drop one column of the (B, T) batch: inputs = tokens[:, :-1], "
                             "labels = tokens[:, 1:]")
    if not _same(inputs, want_in):
        return checks.failed(name, f"inputs {_row(want_in)}", f"inputs {_row(inputs)}",
                             "the inputs are the batch without its last column, tokens[:, :-1], unchanged")
    return checks.failed(name, f"labels {_row(want_lab)}", f"labels {_row(labels)}",
                         "labels = tokens[:, 1:] with -100 wherever that label is <pad>")


# --------------------------------------------------------------------------- exercise 8.2: clipped precision

def reference_clipped_precision(hyp: list[str], refs: list[list[str]], n: int) -> tuple[int, int]:
    """(clipped n-gram matches, hypothesis n-grams) of one tokenised caption (notebook 08, §5)."""
    return metrics.clipped_precision(hyp, refs, n)


#: (hypothesis, references, n): the cases exercise 8.2 is checked on
PRECISION_CASES: list[tuple[str, list[str], int]] = [
    ("the the the the", ["the cat"], 1),
    ("the the the cat", ["the cat sat", "the dog"], 1),
    ("a dog on a dog on grass", ["a dog on the grass", "the dog on a lawn"], 2),
    ("a dog on the grass", ["a dog on the grass"], 3),
    ("a dog", ["a dog runs"], 4),
]


def _no_clipping(hyp: list[str], refs: list[list[str]], n: int) -> tuple[int, int]:
    h = metrics.ngrams(hyp, n)
    in_refs = set().union(*(metrics.ngrams(r, n) for r in refs))
    return sum(c for g, c in h.items() if g in in_refs), sum(h.values())


def _sum_clipping(hyp: list[str], refs: list[list[str]], n: int) -> tuple[int, int]:
    h, total = metrics.ngrams(hyp, n), Counter()
    for r in refs:
        total += metrics.ngrams(r, n)
    return sum(min(c, total[g]) for g, c in h.items()), sum(h.values())


def _unigrams(hyp: list[str], refs: list[list[str]], n: int) -> tuple[int, int]:
    return metrics.clipped_precision(hyp, refs, 1)


def _ref_totals(hyp: list[str], refs: list[list[str]], n: int) -> set[int]:
    counts = [sum(metrics.ngrams(r, n).values()) for r in refs]
    return {sum(counts), max(counts), counts[0]}


PRECISION_MISTAKES: list[tuple[Callable, str]] = [
    (_no_clipping, "no clipping: each hypothesis n-gram may count at most as often as it occurs in a reference "
                   "(\"the the the the\" against \"the cat\" has 1 match, not 4); min(count, max reference count)"),
    (_sum_clipping, "clip by the count in the reference where the n-gram is most frequent (the MAX over "
                    "references), not by the sum of the references' counts"),
    (_unigrams, "you always counted unigrams: use n-grams of order n, tuple(hyp[i:i + n]) for i in "
                "range(len(hyp) − n + 1)"),
]


def check_clipped_precision(fn: Callable) -> None:
    """Check ``clipped_precision(hyp, refs, n) -> (clipped, total)`` (notebook 08, §5) against
    :func:`mmcourse.metrics.clipped_precision`."""
    name = "clipped_precision"
    found = []
    for hyp, refs, n in PRECISION_CASES:
        got = checks.attempt(name, fn, hyp.split(), [r.split() for r in refs], n,
                             fallback="mmcourse.metrics.clipped_precision")
        if checks.is_pending(got):
            return
        if isinstance(got, float) or not isinstance(got, (tuple, list)) or len(got) != 2:
            checks.failed(name, "a pair (clipped, total)", repr(got),
                          "return the two counts, not their ratio: BLEU adds the matches and the totals over all "
                          "images before it divides")
            return
        found.append(tuple(got))
    cases = [(h.split(), [r.split() for r in rs], n) for h, rs, n in PRECISION_CASES]
    want = [metrics.clipped_precision(*c) for c in cases]
    if found == want:
        checks.passed(name, f"{len(cases)} cases, n = 1 to 4")
        return
    i = next(k for k in range(len(cases)) if found[k] != want[k])
    hyp, refs, n = PRECISION_CASES[i]
    where = f"for {hyp!r} against {refs}, n = {n}"
    for wrong, hint in PRECISION_MISTAKES:
        if found == [wrong(*c) for c in cases] or found[i] == wrong(*cases[i]):
            checks.failed(name, f"{want[i]} {where}", found[i], hint)
            return
    clipped, total = found[i]
    if clipped == want[i][0]:
        hint = "total is the number of n-grams in the hypothesis, max(0, len(hyp) − n + 1)"
        if total in _ref_totals(*cases[i]):
            hint = "you counted the references' n-grams: " + hint + " (precision is about what the model wrote)"
        elif total < 0:
            hint = "a hypothesis shorter than n has no n-grams: " + hint
    else:
        hint = "count each hypothesis n-gram, clip the count by its maximum count in any single reference, and sum"
    checks.failed(name, f"{want[i]} {where}", found[i], hint)


# --------------------------------------------------------------------------- exercise 8.3: brevity penalty

def reference_brevity_penalty(hyp_len: int, ref_len: int) -> float:
    """BLEU's brevity penalty: 1 if c ≥ r else exp(1 − r/c) (notebook 08, §5)."""
    return metrics.brevity_penalty(hyp_len, ref_len)


#: (hypothesis length c, reference length r)
PENALTY_CASES: list[tuple[int, int]] = [(5, 8), (3, 9), (9, 12), (12, 10), (10, 10), (20, 7)]


def check_brevity_penalty(fn: Callable) -> None:
    """Check ``brevity_penalty(hyp_len, ref_len)`` against :func:`mmcourse.metrics.brevity_penalty`."""
    name = "brevity_penalty"
    found = []
    for c, r in PENALTY_CASES:
        got = checks.attempt(name, fn, c, r, fallback="mmcourse.metrics.brevity_penalty")
        if checks.is_pending(got):
            return
        try:
            found.append(float(got))
        except (TypeError, ValueError):
            checks.failed(name, "a number", repr(got), "return the penalty as a float")
            return
    want = [metrics.brevity_penalty(c, r) for c, r in PENALTY_CASES]

    def curve(f: Callable[[int, int], float]) -> list[float]:
        return [f(c, r) for c, r in PENALTY_CASES]

    mistakes = [
        (curve(lambda c, r: 1.0), "there is no penalty: a hypothesis shorter than the reference (c < r) gets "
                                  "exp(1 − r/c) < 1"),
        (curve(lambda c, r: math.exp(1 - c / r) if c < r else 1.0),
         "inverted: the penalty is exp(1 − r/c) (reference length over hypothesis length), which is < 1 when c < r"),
        (curve(lambda c, r: math.exp(1 - c / r)),
         "inverted: the penalty is exp(1 − r/c) for c < r, and 1 when c ≥ r"),
        (curve(lambda c, r: min(1.0, math.exp(1 - c / r))),
         "inverted: the penalty is exp(1 − r/c) for c < r, and 1 when c ≥ r"),
        (curve(lambda c, r: math.exp(1 - r / c)),
         "a hypothesis longer than the reference is neither penalised nor rewarded: BP = 1 when c ≥ r "
         "(you get values above 1); use exp(1 − r/c) only when c < r"),
        (curve(lambda c, r: math.exp(1 - max(c, r) / min(c, r))),
         "BLEU penalises only short hypotheses: BP = 1 when c ≥ r (extra words already lower the precision)"),
        (curve(lambda c, r: min(1.0, c / r)),
         "the penalty is exponential, exp(1 − r/c), not the length ratio min(1, c/r)"),
    ]
    short = [k for k, (c, r) in enumerate(PENALTY_CASES) if c < r]
    wrong_short = any(abs(found[k] - want[k]) > 1e-6 for k in short)
    hint = ("for c < r the penalty is exp(1 − r/c)" if wrong_short else
            "BP = 1 when the hypothesis is at least as long as the reference (c ≥ r)")
    checks.close(name + " (c, r) = " + ", ".join(f"({c}, {r})" for c, r in PENALTY_CASES),
                 found, want, atol=1e-6, rtol=1e-6, mistakes=mistakes, hint=hint)


# --------------------------------------------------------------------------- exercise 8.4: beam search

def reference_beam_search_one(step: Callable[[torch.Tensor], torch.Tensor], bos: int, eos: int, beam: int = 3,
                              max_len: int = 20, alpha: float = 0.0) -> list[int]:
    """The best caption of one image by beam search (notebook 08, §6), without ``<bos>``/``<eos>``."""
    return beam_search(step, 1, bos, eos, beam=beam, max_len=max_len, alpha=alpha)[0][0]


PAD, BOS, EOS, A, B, C = range(6)
TOY_WORDS = ["<pad>", "<bos>", "<eos>", "a", "b", "c"]
_LM = Callable[[tuple[int, ...]], list[float]]


def _dist(**probs: float) -> list[float]:
    """Log-probabilities over the 6 toy tokens: the given ones (keys eos, a, b, c), the rest of the mass
    spread evenly over the other words; <pad> and <bos> get 1e-6."""
    ids = {"eos": EOS, "a": A, "b": B, "c": C}
    p = [1e-6] * len(TOY_WORDS)
    for word, value in probs.items():
        p[ids[word]] = value
    rest = [i for word, i in ids.items() if word not in probs]
    for i in rest:
        p[i] = (1 - sum(probs.values())) / len(rest)
    total = sum(p)
    return [math.log(x / total) for x in p]


def _tree(table: dict[tuple[int, ...], list[float]], default: list[float]) -> _LM:
    """A language model that looks up the words after <bos>."""
    return lambda prefix: table.get(tuple(prefix[1:]), default)


def _markov(table: dict[int, list[float]], default: list[float]) -> _LM:
    """A language model that looks at the last token only."""
    return lambda prefix: table.get(prefix[-1], default)


#: toy language models; each case of exercise 8.4 uses one of them
TOY_MODELS: dict[str, _LM] = {
    # greedy: b → c → a → <eos>
    "greedy": _markov({BOS: _dist(b=.5, a=.3), B: _dist(c=.6), C: _dist(a=.5), A: _dist(eos=.7)}, _dist()),
    # "a" is the likelier first word but a poor start: p(a <eos>) = .15 < p(b <eos>) = .225, and "b <eos>"
    # stays the best with alpha = 1 too; beam 2 ends with [b <eos>, b c <eos>]
    "beam": _tree({(): _dist(a=.5, b=.45, c=.03, eos=.02), (A,): _dist(eos=.3, b=.26, c=.24, a=.2),
                   (B,): _dist(eos=.5, c=.45, a=.03, b=.02), (B, C): _dist(eos=.4)}, _dist(eos=.5)),
    # "a <eos>" has the higher probability (.3), "b c c <eos>" the higher probability per token
    "alpha": _tree({(): _dist(a=.6, b=.2), (A,): _dist(eos=.5, a=.2), (B,): _dist(c=.95), (B, C): _dist(c=.95),
                    (B, C, C): _dist(eos=.95)}, _dist()),
    # never wants to stop: "a a a …"
    "loop": _markov({BOS: _dist(a=.9, b=.06, c=.03, eos=.01), A: _dist(a=.9, eos=.04)}, _dist()),
}


#: (toy model, beam, max_len, alpha, what the case shows), checked in this order
BEAM_CASES: list[tuple[str, int, int, float, str]] = [
    ("greedy", 1, 5, 0.0, " (beam 1 is greedy search)"),
    ("beam", 2, 5, 0.0, " (beam 2 finds a better caption than greedy)"),
    ("alpha", 2, 6, 0.0, " (alpha = 0: the raw log-probability)"),
    ("alpha", 2, 6, 1.0, " (alpha = 1: log-probability per token)"),
    ("loop", 2, 5, 0.0, " (max_len = 5, a model that never stops)"),
]


def toy_step(lm: _LM, max_len: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``step(prefixes (k, t)) → log-probs (k, 6)`` of a toy model, for any k ≥ 1 (notebook 08, §6).

    It refuses prefixes longer than ``<bos>`` + ``max_len`` tokens, so a search that never stops
    gets an error instead of running forever.
    """
    def step(prefixes: torch.Tensor) -> torch.Tensor:
        p = torch.as_tensor(prefixes)
        if p.ndim != 2:
            raise ValueError(f"step takes a 2-D batch of prefixes (k, t), got shape {tuple(p.shape)}: "
                             "wrap one prefix as prefix[None]")
        if p.shape[1] > max_len + 1:
            raise RuntimeError(f"step was called with prefixes of {p.shape[1]} tokens, more than <bos> + max_len = "
                               f"{max_len + 1}: stop the search after max_len steps")
        rows = [[int(t) for t in row] for row in p.tolist()]
        if any(row[0] != BOS for row in rows):
            raise ValueError(f"every prefix must start with <bos> (id {BOS})")
        return torch.tensor([lm(tuple(row)) for row in rows], dtype=torch.float32)
    return step


def sequence_score(lm: _LM, words: Sequence[int], max_len: int, alpha: float) -> float:
    """``log p / length**alpha`` of a returned caption: it ended with <eos> unless it has ``max_len`` words."""
    seq = [BOS, *words] + ([EOS] if len(words) < max_len else [])
    raw = sum(lm(tuple(seq[:t]))[seq[t]] for t in range(1, len(seq)))
    return raw / (len(seq) - 1) ** alpha


def _ids(found: Any) -> list[int] | None:
    if torch.is_tensor(found):
        found = found.tolist()
    if isinstance(found, (list, tuple)) and all(isinstance(t, int) or hasattr(t, "__index__") for t in found):
        return [int(t) for t in found]
    return None


def _caption(words: Sequence[int]) -> str:
    return "[" + " ".join(TOY_WORDS[w] if 0 <= w < len(TOY_WORDS) else str(w) for w in words) + "]"


def check_beam_search_one(fn: Callable) -> None:
    """Check ``beam_search_one(step, bos, eos, beam, max_len, alpha) -> list[int]`` on toy models.

    (i) beam 1 is greedy; (ii) beam 2 finds a better caption than greedy; (iii) alpha = 1 prefers a
    longer caption that alpha = 0 rejects; (iv) a model that never stops gets max_len words.
    """
    name = "beam_search_one"
    for model, beam, max_len, alpha, what in BEAM_CASES:
        if not _check_beam_case(name + what, fn, model, beam, max_len, alpha):
            return


def _check_beam_case(name: str, fn: Callable, model: str, beam: int, max_len: int, alpha: float) -> bool:
    lm = TOY_MODELS[model]
    found = checks.attempt(name, fn, toy_step(lm, max_len), BOS, EOS, beam, max_len, alpha,
                           fallback="mmcourse.captioning.beam_search")
    if checks.is_pending(found):
        return False
    words = _ids(found)
    if words is None:
        if isinstance(found, tuple) and len(found) == 2 and _ids(found[0]) is not None:
            return checks.failed(name, "a list of token ids", f"a pair {found!r:.60}",
                                 "return only the best caption's token list, not its score")
        return checks.failed(name, "a list of token ids", f"{type(found).__name__} {found!r:.60}",
                             "return the best hypothesis as one flat list of ints, e.g. seq[1:].tolist()")
    step = toy_step(lm, max_len)
    want = reference_beam_search_one(step, BOS, EOS, beam, max_len, alpha)
    if words == want:
        return checks.passed(name, _caption(words))
    if BOS in words or EOS in words:
        return checks.failed(name, _caption(want), _caption(words),
                             "return the words only: drop the leading <bos> and cut at <eos> (not included)")
    if len(words) > max_len:
        return checks.failed(name, f"at most max_len = {max_len} tokens", f"{len(words)} tokens",
                             "stop after max_len steps; a caption that never emits <eos> has max_len words")
    if model == "loop" and words == want[:-1]:
        return checks.failed(name, _caption(want), _caption(words),
                             "off by one: max_len counts the generated tokens, <eos> included, so a caption "
                             f"that never emits <eos> has max_len = {max_len} words")
    if model == "alpha" and words == reference_beam_search_one(step, BOS, EOS, beam, max_len, 1.0 - alpha):
        how = ("alpha is ignored: divide the log-probability by length**alpha, with length = generated tokens "
               "including <eos>" if alpha else
               "with alpha = 0, length**0 = 1: the score is the raw log-probability, do not divide by the length")
        return checks.failed(name, _caption(want), _caption(words), how)
    if beam > 1 and words == reference_beam_search_one(step, BOS, EOS, 1, max_len, alpha):
        return checks.failed(name, _caption(want), f"{_caption(words)}, the greedy caption",
                             f"keep the {beam} best hypotheses at every step, extend each by every word and "
                             "choose the best among all of them: the likeliest first word is not always the "
                             "start of the likeliest caption")
    if any(not 0 <= w < len(TOY_WORDS) for w in words):
        return checks.failed(name, f"ids from the vocabulary 0..{len(TOY_WORDS) - 1}", _caption(words),
                             "the word id is the index in the step's output row (topk indices modulo V)")
    mine, best = sequence_score(lm, words, max_len, alpha), sequence_score(lm, want, max_len, alpha)
    if mine < best - 1e-6:
        return checks.failed(name, f"{_caption(want)} (score {best:.3f})", f"{_caption(words)} (score {mine:.3f})",
                             "you returned a worse hypothesis than the best one found: at the end pick the one "
                             "with the highest log p / length**alpha among all hypotheses (finished ones "
                             "included), not the last one in the beam")
    return checks.failed(name, _caption(want), _caption(words),
                         "score = sum of log-probabilities / length**alpha (length = tokens after <bos>, <eos> "
                         "included); a finished hypothesis keeps its score; a caption without <eos> after "
                         "max_len steps also counts")


# --------------------------------------------------------------------------- quizzes

def check_quiz_8_1(fn: Callable) -> None:
    """Quiz 8.1 (a number).

    Question: "MobileNetV2's last feature map at 320 × 320 px: how many visual tokens?"
    """
    checks.quiz("quiz 8.1 (visual tokens)", fn, 100,
                "MobileNetV2 downsamples by 32: a 320-px image gives a 320/32 = 10 × 10 feature map, i.e. 100 "
                "tokens of 1,280 channels (49 = 7 × 7 at 224 px). Cross-attention cost grows with their number.")


def check_quiz_8_2(fn: Callable) -> None:
    """Quiz 8.2 (a number).

    Question: "A hypothesis of 5 words, references of 8 and 12 words: BLEU's brevity penalty?"
    """
    checks.quiz("quiz 8.2 (brevity penalty)", fn, math.exp(1 - 8 / 5),
                "BLEU takes the reference length closest to the hypothesis: r = 8 (|8 − 5| < |12 − 5|). "
                "c = 5 < r, so BP = exp(1 − r/c) = exp(1 − 8/5) = exp(−0.6) ≈ 0.549 (with r = 12 it would be "
                "exp(−1.4) ≈ 0.247).")


QUIZ_8_3 = {
    "a": "with one image every n-gram is rare, so its idf is maximal and any caption that shares a word with "
         "the references gets the maximum score, 10",
    "b": "the Gaussian length penalty estimates its σ from the scored images, and one image has no spread",
    "c": "its idf weights come from the scored set: with one image, log N = 0 and every document frequency is 1, "
         "so every weight is 0 and any caption scores 0",
    "d": "nothing: the corpus score is the mean of the per-image scores, so one image's score is its CIDEr-D",
}


def check_quiz_8_3(fn: Callable) -> None:
    """Quiz 8.3 (multiple choice: return the letter).

    Question: "Why is CIDEr-D computed on a single image meaningless?"
    a) with one image every n-gram is rare, so its idf is maximal and any caption that shares a word with
       the references gets the maximum score, 10
    b) the Gaussian length penalty estimates its σ from the scored images, and one image has no spread
    c) its idf weights come from the scored set: with one image, log N = 0 and every document frequency is 1,
       so every weight is 0 and any caption scores 0
    d) nothing: the corpus score is the mean of the per-image scores, so one image's score is its CIDEr-D
    (the options are :data:`QUIZ_8_3`; a test keeps this docstring equal to them)
    """
    checks.quiz("quiz 8.3 (CIDEr-D of one image)", fn, "c",
                "CIDEr-D weighs an n-gram by log N − log df, where N is the number of scored images and df the "
                "number of them whose references contain it. With N = 1 both logs are 0, every tf-idf vector "
                "vanishes and metrics.cider_d([caption], [refs]) is 0 whatever the caption. σ = 6 is fixed. "
                "Even with many images the weights depend on which images are scored together: compare models "
                "on the same image set.",
                choices=QUIZ_8_3)
