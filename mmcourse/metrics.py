"""Evaluation metrics: accuracy with its uncertainty (notebooks 02–05) and captioning metrics (notebook 08).

A smoke run evaluates on a few hundred examples, so its accuracy is a noisy estimate: every
accuracy the course prints comes with n and a 95 % interval (:func:`wilson_interval`).

Captioning (notebook 08, §5): BLEU-1..4 (:func:`bleu`), ROUGE-L (:func:`rouge_l`) and CIDEr-D
(:func:`cider_d`), written out by hand and checked against ``pycocoevalcap`` (the COCO caption
evaluation code) to 1e-6 when both see the same tokens (:func:`caption_tokens`).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95 % Wilson score interval for a proportion of ``k`` successes in ``n`` trials.

    Better than the normal ("Wald") interval p ± z√(p(1−p)/n) for small n or p near 0 or 1,
    where Wald can leave [0, 1] or shrink to zero width (Wilson 1927; Brown, Cai & DasGupta 2001).
    """
    if n <= 0:
        raise ValueError("n must be positive")
    if not 0 <= k <= n:
        raise ValueError(f"k must be between 0 and n={n}, got {k}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact ends: rounding must not exclude p̂
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def accuracy_with_interval(correct: int, n: int) -> str:
    """``"0.707 (n = 300, 95 % CI 0.653–0.756)"``: an accuracy as the course prints it."""
    low, high = wilson_interval(correct, n)
    return f"{correct / n:.3f} (n = {n}, 95 % CI {low:.3f}–{high:.3f})"


def accuracy_by_group(correct: Sequence[bool], groups: Sequence) -> list[dict]:
    """Accuracy per group with its 95 % Wilson interval (notebook 12, §Group gaps).

    One row per group, sorted by accuracy (lowest first): ``{"group", "n", "correct", "accuracy",
    "low", "high"}``. What fairlearn's ``MetricFrame(metrics=accuracy, sensitive_features=groups)``
    gives (``tests/test_metrics.py`` checks the two agree), plus the intervals that say whether a gap
    between two groups could be noise.
    """
    if len(correct) != len(groups):
        raise ValueError(f"{len(correct)} results but {len(groups)} group labels: give one group per example")
    if not len(groups):
        raise ValueError("no examples to group")
    tally: dict = {}
    for ok, g in zip(correct, groups):
        n, k = tally.get(g, (0, 0))
        tally[g] = (n + 1, k + bool(ok))
    rows = [{"group": g, "n": n, "correct": k, "accuracy": k / n, **dict(zip(("low", "high"), wilson_interval(k, n)))}
            for g, (n, k) in tally.items()]
    return sorted(rows, key=lambda r: (r["accuracy"], str(r["group"])))


def largest_gap(rows: Sequence[dict]) -> dict:
    """The best and worst group of :func:`accuracy_by_group`, their gap, and whether their intervals overlap
    (overlapping intervals: the data cannot tell the two groups apart at 95 %; a conservative reading)."""
    if len(rows) < 2:
        raise ValueError("a gap needs at least two groups")
    worst, best = min(rows, key=lambda r: r["accuracy"]), max(rows, key=lambda r: r["accuracy"])
    return {"best": best["group"], "worst": worst["group"], "gap": best["accuracy"] - worst["accuracy"],
            "intervals_overlap": worst["high"] >= best["low"]}


# ---- captioning metrics (notebook 08, §5)

# pycocoevalcap's guards in BLEU: precision = (clipped + TINY) / (total + SMALL), length ratio likewise.
BLEU_TINY = 1e-15
BLEU_SMALL = 1e-9


def caption_tokens(text: str) -> list[str]:
    """Our tokenisation for every captioning metric (notebook 08, §5).

    The rule, exactly: lowercase ``text``; replace every character that is neither a letter nor a
    digit (``str.isalnum``, so Unicode letters such as "é" are kept) nor whitespace by a space;
    split on whitespace. "A dog's T-shirt." -> ["a", "dog", "s", "t", "shirt"].
    This is a simple stand-in for the Java PTBTokenizer of the COCO evaluation (which we do not
    use): that one also lowercases and drops punctuation tokens, but keeps "'s" as a token and
    "t-shirt" as one word, so scores can differ slightly from the published COCO pipeline.
    """
    return "".join(ch if ch.isalnum() or ch.isspace() else " " for ch in text.lower()).split()


def ngrams(tokens: Sequence[str], n: int) -> Counter:
    """Counts of the ``n``-gram tuples of ``tokens`` (notebook 08, §5); empty if fewer than ``n`` tokens."""
    if n <= 0:
        raise ValueError(f"n-gram order n must be positive, got {n}")
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def clipped_precision(hyp: list[str], refs: list[list[str]], n: int) -> tuple[int, int]:
    """(clipped matches, number of hypothesis n-grams) of one tokenised hypothesis (notebook 08, §5).

    Each hypothesis n-gram counts at most as often as it occurs in the reference where it is most
    frequent: "the the the the" against "the cat" gives (1, 4) for unigrams.
    """
    hyp_counts = ngrams(hyp, n)
    max_ref: Counter = Counter()
    for ref in refs:
        max_ref |= ngrams(ref, n)  # | keeps the maximum count of each n-gram
    clipped = sum(min(count, max_ref[g]) for g, count in hyp_counts.items())
    return clipped, sum(hyp_counts.values())


def closest_ref_length(hyp_len: int, ref_lens: list[int]) -> int:
    """The reference length closest to ``hyp_len``, ties to the shorter (notebook 08, §5).

    pycocoevalcap's bleu_scorer option "closest": ``min((abs(l - hyp_len), l) for l in ref_lens)[1]``.
    """
    if not ref_lens:
        raise ValueError("closest_ref_length needs at least one reference length")
    return min((abs(r - hyp_len), r) for r in ref_lens)[1]


def brevity_penalty(hyp_len: int, ref_len: int) -> float:
    """BLEU's brevity penalty for a total hypothesis length c and reference length r (notebook 08, §5).

    1 if c ≥ r, exp(1 − r/c) if 0 < c < r, and 0.0 if c = 0 (an empty output scores 0), computed as
    pycocoevalcap does: ratio = (c + 1e-15) / (r + 1e-9), penalty exp(1 − 1/ratio) when ratio < 1.
    So c = r gives exp(−~1e-9/c), i.e. 1 to about 1e-9, and c = r = 0 gives 0.0, not 1.
    """
    ratio = (hyp_len + BLEU_TINY) / (ref_len + BLEU_SMALL)
    return math.exp(1 - 1 / ratio) if ratio < 1 else 1.0


def _caption_inputs(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[list[list[str]],
                                                                                  list[list[list[str]]]]:
    """Check the (hypotheses, references) convention and tokenise both (notebook 08, §5)."""
    if isinstance(hyps, str):
        raise ValueError("hyps must be a list of caption strings (one per image), not a single string: "
                         "wrap it as [caption]")
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} reference lists: hyps[i] and refs[i] "
                         "must describe the same image")
    if len(hyps) == 0:
        raise ValueError("no captions to score: hyps and refs are empty")
    hyp_tok, ref_tok = [], []
    for i, (h, rs) in enumerate(zip(hyps, refs)):
        if not isinstance(h, str):
            raise ValueError(f"hyps[{i}] must be a caption string, got {type(h).__name__}")
        if isinstance(rs, str):
            raise ValueError(f"refs[{i}] must be a list of reference captions, not a single string: "
                             "wrap it as [caption]")
        if len(rs) == 0:
            raise ValueError(f"image {i} has no reference caption: every image needs at least one "
                             "(drop the image or add its references)")
        toks = [caption_tokens(r) for r in rs]
        for j, t in enumerate(toks):
            if not t:
                raise ValueError(f"reference refs[{i}][{j}] = {rs[j]!r} has no words after tokenisation: "
                                 "remove it from the reference list")
        hyp_tok.append(caption_tokens(h))
        ref_tok.append(toks)
    return hyp_tok, ref_tok


def bleu(hyps: Sequence[str], refs: Sequence[Sequence[str]], max_n: int = 4) -> list[float]:
    """Corpus-level [BLEU-1, ..., BLEU-max_n] of captions (notebook 08, §5), as pycocoevalcap's ``Bleu``.

    ``hyps[i]`` is the caption generated for image i, ``refs[i]`` its reference captions; all are
    tokenised by :func:`caption_tokens`. Clipped n-gram matches and hypothesis n-gram counts are
    summed over the corpus, p_k = (matches_k + 1e-15) / (count_k + 1e-9) (the tiny/small constants
    are pycocoevalcap's: a zero count gives ≈1e-6, not a division by zero), and
    BLEU-n = (p_1 ⋯ p_n)^(1/n) × brevity_penalty(Σ hypothesis lengths, Σ closest reference lengths).
    Because of the constants, zero matched n-grams give a small positive BLEU-n, not exactly 0.
    The score of one image alone is ``bleu([hyp], [refs])`` (pycocoevalcap's per-image list).
    """
    if max_n <= 0:
        raise ValueError(f"max_n must be positive, got {max_n}")
    hyp_tok, ref_tok = _caption_inputs(hyps, refs)
    correct, total = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for h, rs in zip(hyp_tok, ref_tok):
        hyp_len += len(h)
        ref_len += closest_ref_length(len(h), [len(r) for r in rs])
        for k in range(max_n):
            c, t = clipped_precision(h, rs, k + 1)
            correct[k] += c
            total[k] += t
    bp = brevity_penalty(hyp_len, ref_len)
    scores, product = [], 1.0
    for k in range(max_n):
        product *= (correct[k] + BLEU_TINY) / (total[k] + BLEU_SMALL)
        scores.append(product ** (1 / (k + 1)) * bp)
    return scores


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (notebook 08, §5; dynamic programming)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(hyps: Sequence[str], refs: Sequence[Sequence[str]], beta: float = 1.2) -> float:
    """Mean ROUGE-L F-score over images (notebook 08, §5), as pycocoevalcap's ``Rouge``.

    Per image: precision P = max over references of LCS / len(hyp), recall R = max of LCS / len(ref)
    (each maximum taken separately, possibly from different references), score
    (1 + β²) P R / (R + β² P) with β = 1.2, and 0 when P or R is 0 (so an empty hypothesis scores 0).
    The score of one image alone is ``rouge_l([hyp], [refs])``.
    """
    hyp_tok, ref_tok = _caption_inputs(hyps, refs)
    scores = []
    for h, rs in zip(hyp_tok, ref_tok):
        lcs = [lcs_length(r, h) for r in rs]
        p = max(lcs) / len(h) if h else 0.0
        r = max(m / len(ref) for m, ref in zip(lcs, rs))
        scores.append((1 + beta ** 2) * p * r / (r + beta ** 2 * p) if p and r else 0.0)
    return sum(scores) / len(scores)


def _tfidf(counts: Counter, df: Counter, log_n_images: float) -> tuple[dict, float]:
    """tf-idf weights of one caption's n-grams of one order and their Euclidean norm (notebook 08, §5)."""
    vec = {g: tf * (log_n_images - math.log(max(1.0, df[g]))) for g, tf in counts.items()}
    return vec, math.sqrt(sum(v * v for v in vec.values()))


def cider_d(hyps: Sequence[str], refs: Sequence[Sequence[str]], sigma: float = 6.0,
            n: int = 4) -> tuple[float, list[float]]:
    """CIDEr-D of captions: (corpus mean, per-image scores) (notebook 08, §5), as pycocoevalcap's ``Cider``.

    Each caption becomes, per order k = 1..n, a tf-idf vector: weight = count × (log N − log max(1, df)),
    with N the number of scored images and df the number of images whose REFERENCE set contains the
    n-gram (n-grams found in no reference get the full log N). Per reference, the similarity of order k
    is Σ min(w_hyp, w_ref) · w_ref / (‖w_hyp‖ ‖w_ref‖) (the "-D" clipping; no division when a norm
    is 0) times the Gaussian length penalty exp(−δ²/(2σ²)); the image score is 10 × the mean over
    orders and references. δ is the hypothesis length minus the reference length (pycocoevalcap counts
    bigrams, max(0, len − 1), which gives the same δ here: empty hypotheses score 0 whatever δ is, and
    empty references are rejected).

    CIDEr-D of ONE image is meaningless: with N = 1, log N = 0 and every reference n-gram has df = 1,
    while n-grams absent from the references are clamped to max(1, 0) = 1, so every weight is
    log 1 − log 1 = 0: all vectors vanish and any hypothesis, even a copy of a reference, scores
    exactly 0. More generally an n-gram present in every image's references carries no weight, so
    scores depend on which images are scored together: compare models on the same image set.
    """
    if n <= 0:
        raise ValueError(f"n-gram order n must be positive, got {n}")
    hyp_tok, ref_tok = _caption_inputs(hyps, refs)
    scorer = CiderD(ref_tok, sigma=sigma, n=n)
    scores = [scorer.score_tokens(h, i) for i, h in enumerate(hyp_tok)]
    return sum(scores) / len(scores), scores


class CiderD:
    """CIDEr-D against a FIXED corpus of references (notebook 08, §6b: the self-critical reward).

    :func:`cider_d` takes its document frequencies from the images it scores. A training reward
    must not: a batch of 50 images is a tiny corpus, so the same caption would get a different
    reward in every batch. ``CiderD(train_refs)`` computes df and every reference's tf-idf vectors
    once over the whole training set (as Rennie et al. 2017 do with the COCO training captions);
    ``scorer(hyps, image_ids)`` then scores each caption against the references of its image.
    ``refs``: one list of reference captions per image, as strings or as word lists.
    """

    def __init__(self, refs: Sequence[Sequence[str] | Sequence[list[str]]], sigma: float = 6.0, n: int = 4):
        ref_tok = [[caption_tokens(r) if isinstance(r, str) else list(r) for r in rs] for rs in refs]
        self.n, self.penalty = n, 2 * sigma ** 2
        self.df: Counter = Counter()
        for rs in ref_tok:
            self.df.update({g for r in rs for k in range(1, n + 1) for g in ngrams(r, k)})
        self.log_n = math.log(len(ref_tok))
        self.refs = [[(self._vectors(r), len(r)) for r in rs] for rs in ref_tok]

    def _vectors(self, words: list[str]) -> list[tuple[dict, float]]:
        return [_tfidf(ngrams(words, k), self.df, self.log_n) for k in range(1, self.n + 1)]

    def score_tokens(self, words: list[str], image: int) -> float:
        """CIDEr-D (× 10, pycocoevalcap's scale) of one tokenised caption of image ``image``."""
        hyp_vecs = self._vectors(words)
        total = 0.0
        for ref_vecs, ref_len in self.refs[image]:
            length_penalty = math.exp(-(len(words) - ref_len) ** 2 / self.penalty)
            for (vh, nh), (vr, nr) in zip(hyp_vecs, ref_vecs):
                val = sum(min(w, vr.get(g, 0.0)) * vr.get(g, 0.0) for g, w in vh.items())
                if nh != 0 and nr != 0:
                    val /= nh * nr
                total += val * length_penalty
        return 10.0 * total / self.n / len(self.refs[image])

    def __call__(self, hyps: Sequence[str], images: Sequence[int]) -> list[float]:
        """Scores of captions ``hyps[i]`` of images ``images[i]`` (indices into ``refs``)."""
        if len(hyps) != len(images):
            raise ValueError(f"{len(hyps)} captions but {len(images)} image indices: give one image per caption")
        return [self.score_tokens(caption_tokens(h), int(i)) for h, i in zip(hyps, images)]


# ---- word error rate (notebook 10, §Evaluation)

def edit_table(ref: Sequence[str], hyp: Sequence[str]) -> list[list[int]]:
    """Levenshtein table over words (notebook 10, §Evaluation): ``D[i][j]`` = the fewest edits
    (substitutions, deletions, insertions, each costing 1) that turn ``ref[:i]`` into ``hyp[:j]``.

    ``D[i][0] = i`` (delete everything), ``D[0][j] = j`` (insert everything), and
    ``D[i][j] = min(D[i-1][j] + 1, D[i][j-1] + 1, D[i-1][j-1] + (ref[i-1] != hyp[j-1]))``.
    """
    table = [[i + j if i == 0 or j == 0 else 0 for j in range(len(hyp) + 1)] for i in range(len(ref) + 1)]
    for i in range(1, len(ref) + 1):
        for j in range(1, len(hyp) + 1):
            table[i][j] = min(table[i - 1][j] + 1,                              # delete ref[i-1]
                              table[i][j - 1] + 1,                              # insert hyp[j-1]
                              table[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]))  # substitute, or a match
    return table


def word_edits(ref: Sequence[str], hyp: Sequence[str]) -> tuple[int, int, int]:
    """(substitutions, deletions, insertions) of a minimum edit alignment of two word lists (notebook 10, §Evaluation).

    Their sum, the edit distance, is the same for every minimum alignment, but its split is not:
    "a b" -> "b a" is 2 substitutions, or 1 deletion + 1 insertion. We break the ties as
    rapidfuzz does (Hyyrö 2004; jiwer uses rapidfuzz), so the three counts equal
    ``jiwer.process_words``: the common first and last words are matched first, then the
    table (:func:`edit_table`) is walked back from the end, taking at each cell

    1. a deletion if it is optimal, ``D[i-1][j] + 1 == D[i][j]``;
    2. else an insertion if ``D[i][j-1] < D[i-1][j-1]`` (it is then optimal);
    3. else the diagonal: a match, or a substitution.
    """
    ref, hyp = list(ref), list(hyp)
    while ref and hyp and ref[0] == hyp[0]:  # common prefix and suffix: matches
        ref, hyp = ref[1:], hyp[1:]
    while ref and hyp and ref[-1] == hyp[-1]:
        ref, hyp = ref[:-1], hyp[:-1]
    table = edit_table(ref, hyp)
    i, j, subs, dels, ins = len(ref), len(hyp), 0, 0, 0
    while i > 0 and j > 0:
        if table[i - 1][j] + 1 == table[i][j]:
            dels, i = dels + 1, i - 1
        elif table[i][j - 1] < table[i - 1][j - 1]:
            ins, j = ins + 1, j - 1
        else:
            subs, i, j = subs + (ref[i - 1] != hyp[j - 1]), i - 1, j - 1
    return subs, dels + i, ins + j  # what is left at an edge: deletions, or insertions


def wer(references: str | Sequence[str], hypotheses: str | Sequence[str]) -> float:
    """Corpus word error rate: Σ (S + D + I) / Σ reference words (notebook 10, §Evaluation), as ``jiwer.wer``.

    ``references[i]`` and ``hypotheses[i]`` are sentences, split into words on whitespace and
    compared as they are: normalise both first (:func:`mmcourse.answers.normalise`), or "Seven." and
    "seven" count as a substitution. The edits and the words are summed over the corpus before
    dividing, so long sentences weigh more than short ones. WER can exceed 1 (insertions).
    """
    refs = [references] if isinstance(references, str) else list(references)
    hyps = [hypotheses] if isinstance(hypotheses, str) else list(hypotheses)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses: give one hypothesis per reference")
    if not refs:
        raise ValueError("no sentences to score: references and hypotheses are empty")
    edits = words = 0
    for i, (r, h) in enumerate(zip(refs, hyps)):
        if not isinstance(r, str) or not isinstance(h, str):
            raise ValueError(f"sentence {i} must be two strings, got {type(r).__name__} and {type(h).__name__}; "
                             "join a word list with ' '.join(words)")
        ref_words = r.split()
        if not ref_words:
            raise ValueError(f"reference {i} is empty: WER divides by the number of reference words; "
                             "drop the sentence, or score it apart")
        edits += sum(word_edits(ref_words, h.split()))
        words += len(ref_words)
    return edits / words
