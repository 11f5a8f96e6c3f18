"""A multimodal LLM, LLaVA-style: any encoder's tokens -> a projector -> a frozen LM (notebooks 08, 10, 11).

Notebook 08 ("mini-LLaVA") sends frozen MobileNetV2 grid features through a small MLP
(:class:`Projector`) into SmolLM2-135M-Instruct's embedding space; notebook 10 does the same with
Whisper's audio frames, notebook 11 with images and audio together (any subset per example).
Section by section (notebook 08):

* §Projector: :class:`Projector`, and fewer tokens per image or clip with :func:`pool_grid`
  (image grids) and :func:`stack_frames` (audio frames, as Ultravox / SLAM-ASR do).
* §Placeholders: the prompt carries a marker (``"<image>"``, ``"<audio>"``) that
  :func:`prompt_ids` replaces by ``n_tokens[modality]`` *placeholder ids*. These are negative
  (LLaVA's ``IMAGE_TOKEN_INDEX = -200``): they are in no vocabulary, so the tokenizer stays
  unchanged and the LM can never generate one. :func:`example` adds the answer and the labels;
  :func:`collate` pads a batch.
* §Merge: :func:`merge` writes the projected features into ``inputs_embeds`` at the placeholder
  positions; :class:`MultimodalLM` is the whole model, :func:`loss_fn` its loss for ``train.fit``.
* §Generation: :func:`generate` (greedy or beam search from ``inputs_embeds``) and :func:`decode`.
* Notebook 11: :class:`GridProjector` (MobileVLM's stride-2 projector, 7 x 7 cells -> 16 tokens)
  and modality dropout (:func:`drop_modalities`, :func:`without`, :func:`drop_example`).

Conventions: ``features[modality]`` holds one entry per example of the batch that *has* that
modality, in batch order: a ``(n_present, N_m, d)`` tensor when every example has the same number
``N_m`` of tokens (image grids), or a list of ``(N_i, d)`` tensors when the numbers differ (audio
clips of different lengths, notebook 10: a 0.4-s digit and a 5-s dog bark become 5 and 62 tokens).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PLACEHOLDER: dict[str, int] = {"image": -200, "audio": -300}  # ids that no vocabulary has
MARKER: dict[str, str] = {"image": "<image>", "audio": "<audio>"}
IGNORE = -100  # label of positions without loss (HF's CrossEntropyLoss ignore_index)


# ---------------------------------------------------------------- §Projector

class Projector(nn.Module):
    """Encoder tokens -> LM embeddings: ``(B, N, d_in) -> (B, N, d_out)`` (notebook 08, §Projector).

    LLaVA-1.5's MLP (Linear-GELU-Linear, ``hidden`` defaults to ``d_out``) with an input
    LayerNorm (``norm=True``): frozen features such as MobileNetV2's are post-ReLU6, all
    non-negative and on their own scale; normalising each token first puts every encoder on the
    same footing, whatever its scale. ``norm=False`` gives LLaVA-1.5's projector exactly.
    """

    def __init__(self, d_in: int, d_out: int, hidden: int | None = None, dropout: float = 0.0,
                 norm: bool = True):
        super().__init__()
        hidden = hidden or d_out
        self.norm = nn.LayerNorm(d_in) if norm else nn.Identity()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_out))
        self.d_in, self.d_out = d_in, d_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, d_in) -> (B, N, d_out)
        if x.shape[-1] != self.d_in:
            raise ValueError(f"Projector expects features of size {self.d_in} in the last dimension, got shape "
                             f"{tuple(x.shape)}; build Projector(d_in={x.shape[-1]}, ...) for these features")
        return self.net(self.norm(x))


def pool_grid(x: torch.Tensor, grid: tuple[int, int], out: tuple[int, int]) -> torch.Tensor:
    """``(B, h*w, d) -> (B, oh*ow, d)``: adaptive average pooling of a token grid (notebook 08, §Projector).

    Tokens are in row-major order (row 0 left to right, then row 1, ...), as a flattened CNN
    feature map ``(B, d, h, w) -> (B, h*w, d)`` gives them. Output cell ``(i, j)`` averages rows
    ``floor(i*h/oh) .. ceil((i+1)*h/oh) - 1`` and the same for columns (windows may overlap).
    """
    (h, w), (oh, ow) = grid, out
    if x.ndim != 3 or x.shape[1] != h * w:
        raise ValueError(f"pool_grid expects (B, h*w, d) = (B, {h * w}, d) for grid {grid}, got {tuple(x.shape)}")
    if not (1 <= oh <= h and 1 <= ow <= w):
        raise ValueError(f"pool_grid output {out} must be between (1, 1) and the grid {grid}")
    b, _, d = x.shape
    maps = x.transpose(1, 2).reshape(b, d, h, w)  # (B, d, h, w)
    return F.adaptive_avg_pool2d(maps, (oh, ow)).flatten(2).transpose(1, 2)  # (B, oh*ow, d)


class _ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of each grid cell: ``(B, C, h, w)`` (MobileVLM's LDP uses it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class GridProjector(nn.Module):
    """MobileVLM's lightweight downsample projector (LDP): an ``h x w`` grid -> ``ceil(h/2) x ceil(w/2)`` tokens.

    Notebook 11, §The model (Chu et al. 2023, MobileVLM): each grid cell goes through
    :class:`Projector`'s MLP, then two of MobileNetV2's own inverted-residual blocks
    (``torchvision``'s ``InvertedResidual``, depthwise 3x3): stride 1 with a residual, then stride 2.
    The convolutions mix each cell with its neighbours before the stride halves the grid, so
    MobileNetV2's 7 x 7 grid becomes 4 x 4 = 16 tokens that still know where they are, unlike a
    plain average pool (:func:`pool_grid`). Norms are per-cell LayerNorms (no batch statistics).
    ``(B, h*w, d_in) -> (B, n_tokens, d_out)``, tokens row-major.
    """

    def __init__(self, d_in: int, d_out: int, grid: tuple[int, int] = (7, 7)):
        super().__init__()
        from torchvision.models.mobilenetv2 import InvertedResidual

        self.grid, self.d_in, self.d_out = tuple(grid), d_in, d_out
        self.mlp = Projector(d_in, d_out)
        self.down = nn.Sequential(InvertedResidual(d_out, d_out, 1, 1, norm_layer=_ChannelNorm),
                                  InvertedResidual(d_out, d_out, 2, 1, norm_layer=_ChannelNorm))
        self.out_grid = ((grid[0] + 1) // 2, (grid[1] + 1) // 2)
        self.n_tokens = self.out_grid[0] * self.out_grid[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, h*w, d_in) -> (B, n_tokens, d_out)
        (h, w), b = self.grid, x.shape[0]
        if x.ndim != 3 or x.shape[1] != h * w:
            raise ValueError(f"GridProjector expects (B, h*w, d) = (B, {h * w}, {self.d_in}) for its grid {self.grid}, "
                             f"got {tuple(x.shape)}; build GridProjector(..., grid=(h, w)) for these features")
        maps = self.mlp(x).transpose(1, 2).reshape(b, self.d_out, h, w)  # (B, d_out, h, w)
        return self.down(maps).flatten(2).transpose(1, 2)  # (B, n_tokens, d_out)


def stack_frames(x: torch.Tensor, k: int) -> torch.Tensor:
    """``(B, T, d) -> (B, T // k, k*d)``: concatenate ``k`` consecutive frames (notebook 10, §Projector).

    Frame-rate reduction as in Ultravox / SLAM-ASR: ``k`` times fewer tokens, nothing averaged
    away. Output token ``t`` is ``[x[:, t*k], x[:, t*k+1], ..., x[:, t*k+k-1]]``; the last
    ``T % k`` frames are dropped (pad the input first to keep them).
    """
    if x.ndim != 3:
        raise ValueError(f"stack_frames expects (B, T, d), got shape {tuple(x.shape)}")
    b, t, d = x.shape
    if k < 1 or t < k:
        raise ValueError(f"stack_frames needs 1 <= k <= T, got k={k} for T={t} frames")
    n = t // k
    return x[:, :n * k].reshape(b, n, k * d)


# ---------------------------------------------------------------- §Placeholders

def _check_modalities(names: Sequence[str], what: str) -> None:
    unknown = [m for m in names if m not in PLACEHOLDER]
    if unknown:
        raise ValueError(f"unknown modality {unknown} in {what}; known: {sorted(PLACEHOLDER)} "
                         "(add it to mllm.PLACEHOLDER and mllm.MARKER)")


def prompt_ids(tokenizer: Any, prompt: str, n_tokens: dict[str, int], system: str | None = None) -> list[int]:
    """The chat-template user turn + assistant header, markers -> placeholder ids (notebook 08, §Placeholders).

    Each marker (``"<image>"``, ``"<audio>"``) in ``prompt`` becomes ``n_tokens[modality]``
    copies of ``PLACEHOLDER[modality]``; each marker may appear once. The templated *string* is
    split on the markers and each text piece tokenised without special tokens (the template
    already holds its ``<|im_start|>``), so no extra bos appears between the pieces.

    ``system``: ``None`` keeps the template's own default (SmolLM2's inserts a 20-token "You
    are a helpful AI assistant named SmolLM..." turn); a string replaces it, and ``""`` gives
    the shortest prompt (an empty system turn, 5 tokens), cheapest on a CPU.
    """
    _check_modalities(list(n_tokens), "n_tokens")
    used = [m for m, marker in MARKER.items() if marker in prompt]
    missing, unused = [m for m in used if m not in n_tokens], [m for m in n_tokens if m not in used]
    if missing:
        raise ValueError(f"the prompt has the marker(s) {[MARKER[m] for m in missing]} but n_tokens has no "
                         f"count for {missing}; pass n_tokens={{{missing[0]!r}: <number of tokens>, ...}}")
    if unused:
        raise ValueError(f"n_tokens names {unused} but the prompt {prompt!r} has no "
                         f"{[MARKER[m] for m in unused]} marker; put the marker where the tokens go")
    for m in used:
        if prompt.count(MARKER[m]) > 1:
            raise ValueError(f"{MARKER[m]} appears {prompt.count(MARKER[m])} times in the prompt; use one marker "
                             "per modality (merge expects the same number of tokens in every example)")
        if n_tokens[m] < 1:
            raise ValueError(f"n_tokens[{m!r}] must be at least 1, got {n_tokens[m]}")
    messages = [{"role": "user", "content": prompt}]
    if system is not None:
        if any(marker in system for marker in MARKER.values()):
            raise ValueError("the system prompt holds a modality marker; markers belong in the user prompt")
        messages.insert(0, {"role": "system", "content": system})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    by_marker = {marker: m for m, marker in MARKER.items()}
    ids: list[int] = []
    for piece in re.split("(" + "|".join(map(re.escape, MARKER.values())) + ")", text):
        if piece in by_marker:
            ids += [PLACEHOLDER[by_marker[piece]]] * n_tokens[by_marker[piece]]
        elif piece:
            ids += tokenizer(piece, add_special_tokens=False)["input_ids"]
    return ids


def example(tokenizer: Any, prompt: str, answer: str, n_tokens: dict[str, int], system: str | None = None,
            max_answer_tokens: int | None = None) -> dict[str, list[int]]:
    """One training example: prompt, answer and eos, with the labels (notebook 08, §Placeholders).

    ``input_ids = prompt_ids(...) + answer tokens + [eos]``; ``labels`` is ``-100`` on the
    prompt (placeholders included) and the token ids on the answer and eos, so the loss is the
    answer's alone and the model learns to stop. ``max_answer_tokens`` truncates the answer
    (eos is kept after it). Add ``"features": {modality: (N_m, d) tensor}`` for :func:`collate`.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token; set tokenizer.eos_token (SmolLM2's is <|im_end|>)")
    prompt_part = prompt_ids(tokenizer, prompt, n_tokens, system)
    answer_part = tokenizer(answer, add_special_tokens=False)["input_ids"][:max_answer_tokens]
    answer_part = answer_part + [tokenizer.eos_token_id]
    return {"input_ids": prompt_part + answer_part, "labels": [IGNORE] * len(prompt_part) + answer_part}


def collate(examples: Sequence[dict[str, Any]], pad_id: int, side: str = "right",
            tokens: dict[str, int] | None = None) -> dict[str, Any]:
    """Pad a list of examples into a batch (notebook 08, §Placeholders).

    Returns ``input_ids`` (pads: ``pad_id``), ``attention_mask`` (pads: 0), ``labels`` (pads:
    -100; only when the examples have labels) and ``features``: ``{modality: (n_present, N_m, d)}``
    stacked over the examples that have that modality, in batch order, or a list of ``(N_i, d)``
    when their numbers of tokens differ (audio; see the module's conventions). ``side="left"`` for
    batched generation (a decoder-only LM continues from the last position of each row).
    ``tokens``: placeholders per example of a modality whose projector changes the number of
    tokens (``{"image": GridProjector.n_tokens}``: 49 grid cells become 16 tokens).
    """
    tokens = tokens or {}
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    if not examples:
        raise ValueError("collate got no examples")
    with_labels = ["labels" in ex for ex in examples]
    if any(with_labels) and not all(with_labels):
        raise ValueError("some examples have labels and some not; build all with example() or none")
    width = max(len(ex["input_ids"]) for ex in examples)
    fields = {"input_ids": pad_id, "attention_mask": 0} | ({"labels": IGNORE} if all(with_labels) else {})
    rows: dict[str, list[list[int]]] = {name: [] for name in fields}
    feats: dict[str, list[torch.Tensor]] = {}
    for i, ex in enumerate(examples):
        ids = list(ex["input_ids"])
        values = {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ex.get("labels", []))}
        for name, pad in fields.items():
            if len(values[name]) != len(ids):
                raise ValueError(f"example {i}: labels has {len(values[name])} entries for {len(ids)} input ids")
            fill = [pad] * (width - len(ids))
            rows[name].append(fill + values[name] if side == "left" else values[name] + fill)
        for m, f in (ex.get("features") or {}).items():
            _check_modalities([m], f"example {i}'s features")
            if f.ndim != 2 or tokens.get(m, f.shape[0]) != ids.count(PLACEHOLDER[m]):
                raise ValueError(f"example {i}: features[{m!r}] has shape {tuple(f.shape)} but its input_ids hold "
                                 f"{ids.count(PLACEHOLDER[m])} {m} placeholders; give (N_m, d) features with "
                                 "N_m = the n_tokens used in prompt_ids (or tokens={m: n} for a projector that "
                                 "makes n tokens of them)")
            feats.setdefault(m, []).append(f)
    batch: dict[str, Any] = {name: torch.tensor(r, dtype=torch.long) for name, r in rows.items()}
    batch["features"] = {}
    for m, fs in feats.items():
        if len({f.shape[1] for f in fs}) > 1:
            raise ValueError(f"the {m} features of this batch differ in size: {sorted({tuple(f.shape) for f in fs})}"
                             f"; every {m} token needs the same number of features (the encoder's width)")
        same = len({f.shape[0] for f in fs}) == 1
        batch["features"][m] = torch.stack(fs) if same else list(fs)
    return batch


def without(prompt: str, modalities: Sequence[str]) -> str:
    """``prompt`` with the markers of ``modalities`` removed (notebook 11, §Modality dropout)."""
    _check_modalities(list(modalities), "without")
    for m in modalities:
        prompt = prompt.replace(MARKER[m], "")
    return prompt


def drop_modalities(present: Sequence[str], p: float, generator: torch.Generator | None = None) -> list[str]:
    """The modalities to drop from one training example (notebook 11, §Modality dropout).

    Each of ``present`` is dropped with probability ``p``, independently, but never all of them:
    when every one came up, one of them (drawn uniformly) stays. An image-only example therefore
    keeps its image, and an image + audio example loses one of the two with probability about
    ``2p``: the model learns to answer from what is there. Unlike notebook 05's
    :func:`mmcourse.fusion.modality_dropout`, which zeroes a modality's features, the marker and
    the features are removed, exactly as a test example without that modality arrives.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop probability p must be in [0, 1], got {p}")
    present = list(present)
    if not present:
        return []
    coins = torch.rand(len(present), generator=generator) < p
    if bool(coins.all()):
        coins[int(torch.randint(len(present), (1,), generator=generator))] = False
    return [m for m, c in zip(present, coins.tolist()) if c]


def drop_example(ex: dict[str, Any], p: float, generator: torch.Generator | None = None) -> dict[str, Any]:
    """One training example after modality dropout (notebook 11, §Modality dropout; exercise 11.2's reference).

    ``ex`` is ``{"prompt", "answer", "features": {modality: (N_m, d)}}``; the modalities
    :func:`drop_modalities` draws lose their marker (:func:`without`) and their features. A new
    dict: ``ex`` is left as it was. Build the batch from the result with :func:`example` and
    :func:`collate`, as for any other example.
    """
    feats = dict(ex["features"])
    dropped = drop_modalities(sorted(feats), p, generator)
    return {**ex, "prompt": without(ex["prompt"], dropped), "features": {m: f for m, f in feats.items() if m not in dropped}}


# ---------------------------------------------------------------- §Merge

def _as_rows(f: torch.Tensor | Sequence[torch.Tensor], m: str, d: int) -> tuple[torch.Tensor, list[int]]:
    """``features[m]`` as all its tokens in a row ``(sum N_i, d)`` and the tokens per example ``[N_i]``."""
    rows = list(f) if isinstance(f, (list, tuple)) else None
    if rows is not None:
        if not rows or any(r.ndim != 2 or r.shape[-1] != d for r in rows):
            raise ValueError(f"features[{m!r}] as a list needs one (N_i, {d}) tensor per example, got shapes "
                             f"{[tuple(r.shape) for r in rows]}; project the features to the LM's size first")
        return torch.cat(rows), [r.shape[0] for r in rows]
    if f.ndim != 3 or f.shape[-1] != d:
        raise ValueError(f"features[{m!r}] must be (n_present, N_m, {d}) to match the "
                         f"embeddings, got {tuple(f.shape)}; project the features to the LM's size first")
    return f.reshape(-1, d), [f.shape[1]] * f.shape[0]


def merge(embeds: torch.Tensor, input_ids: torch.Tensor,
          features: dict[str, torch.Tensor | Sequence[torch.Tensor]]) -> torch.Tensor:
    """Write ``features[m]`` into ``embeds`` where ``input_ids == PLACEHOLDER[m]`` (notebook 08, §Merge).

    ``embeds`` (B, L, d), ``input_ids`` (B, L), ``features[m]`` (n_present, N_m, d) or a list of
    ``(N_i, d)`` (notebook 10). Rows of ``features[m]`` fill the placeholder positions in row-major
    order: example order, then token order. Returns a new tensor (``embeds`` is not modified);
    gradients flow to both ``embeds`` and the features.
    """
    out = embeds
    present = {m for m, pid in PLACEHOLDER.items() if bool((input_ids == pid).any())}
    if present - set(features):
        raise ValueError(f"input_ids hold {sorted(present - set(features))} placeholders but features has no such "
                         f"entry (it has {sorted(features)}); pass the features or build the prompt without the marker")
    for m, f in features.items():
        _check_modalities([m], "features")
        where = input_ids == PLACEHOLDER[m]  # (B, L)
        per_row = where.sum(dim=1)
        rows = per_row[per_row > 0].tolist()
        flat, counts = _as_rows(f, m, embeds.shape[-1])
        if rows != counts:
            given = (f"{len(counts)} x {counts[0]} = {sum(counts)}" if len(set(counts)) == 1 else
                     f"{counts} = {sum(counts)}")
            raise ValueError(f"{m}: input_ids have {int(per_row.sum())} placeholder positions in {len(rows)} examples "
                             f"({rows} per example), but features[{m!r}] gives {given}; use prompt_ids with "
                             f"n_tokens[{m!r}] = each example's number of tokens, for exactly the examples that carry "
                             f"{m} features")
        out = out.masked_scatter(where.unsqueeze(-1), flat.to(out.dtype))  # out of place: autograd-safe
    return out


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over the real tokens of each row, 0 on pads: right for left and right padding."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class MultimodalLM(nn.Module):
    """A causal LM whose prompt embeddings get projected encoder tokens (notebook 08, §Merge).

    ``projectors[modality]`` maps that modality's features ``(n, N, d_enc)`` to ``(n, N, d_lm)``
    (a list of ``(N_i, d_enc)`` is projected one clip at a time).
    Placeholder ids are negative, so :meth:`embed` looks up ``input_ids.clamp(min=0)`` (id 0
    there is overwritten by :func:`merge`).
    """

    def __init__(self, lm: nn.Module, projectors: dict[str, nn.Module]):
        super().__init__()
        _check_modalities(list(projectors), "projectors")
        self.lm = lm
        self.projectors = nn.ModuleDict(projectors)

    def freeze_lm(self) -> MultimodalLM:
        """Stop gradients into the LM: only the projectors train (LLaVA's stage 1)."""
        for p in self.lm.parameters():
            p.requires_grad_(False)
        return self

    def embed(self, input_ids: torch.Tensor, features: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``inputs_embeds`` (B, L, d_lm): token embeddings with the projected features merged in."""
        unknown = (input_ids < 0) & ~torch.isin(input_ids, torch.tensor(list(PLACEHOLDER.values()),
                                                                         device=input_ids.device))
        if bool(unknown.any()):
            raise ValueError(f"input_ids hold negative ids that are no placeholder: "
                             f"{sorted(set(input_ids[unknown].tolist()))} (labels' -100 passed as input ids?)")
        embeds = self.lm.get_input_embeddings()(input_ids.clamp(min=0))
        projected = {}
        for m, f in (features or {}).items():
            if m not in self.projectors:
                raise ValueError(f"no projector for {m!r} features; this model has {sorted(self.projectors)}")
            proj = self.projectors[m]
            if isinstance(f, (list, tuple)):  # clips of different lengths: each its own number of tokens
                projected[m] = [proj(x.to(embeds.device)[None])[0] for x in f]
            else:
                projected[m] = proj(f.to(embeds.device))
        return merge(embeds, input_ids, projected)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None,
                features: dict[str, torch.Tensor] | None = None) -> Any:
        """The LM's output (``.logits``; ``.loss`` when labels are given: HF shifts them itself)."""
        return self.lm(inputs_embeds=self.embed(input_ids, features), attention_mask=attention_mask,
                       position_ids=position_ids(attention_mask), labels=labels)


def loss_fn(model: MultimodalLM, batch: dict[str, Any]) -> torch.Tensor:
    """The answer tokens' mean cross-entropy, for ``train.fit`` (notebook 08, §Merge)."""
    return model(batch["input_ids"], batch["attention_mask"], labels=batch["labels"],
                 features=batch.get("features")).loss


# ---------------------------------------------------------------- §Generation

@torch.no_grad()
def _greedy_uncached(lm: nn.Module, embeds: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                     eos: set[int], pad: int) -> torch.Tensor:
    """Greedy decoding that re-runs the whole sequence each step (no KV cache): the slow reference."""
    table = lm.get_input_embeddings()
    stop = torch.tensor(sorted(eos), dtype=torch.long, device=embeds.device)
    new = torch.empty(embeds.shape[0], 0, dtype=torch.long, device=embeds.device)
    done = torch.zeros(embeds.shape[0], dtype=torch.bool, device=embeds.device)
    for _ in range(max_new_tokens):
        logits = lm(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                    use_cache=False).logits[:, -1]
        nxt = logits.argmax(-1).masked_fill(done, pad)
        new = torch.cat([new, nxt[:, None]], dim=1)
        done |= torch.isin(nxt, stop)
        if bool(done.all()):
            break
        embeds = torch.cat([embeds, table(nxt)[:, None]], dim=1)
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
    return new


def generate(model: MultimodalLM, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             features: dict[str, torch.Tensor] | None, max_new_tokens: int = 30, num_beams: int = 1,
             use_cache: bool = True, **kw: Any) -> list[list[int]]:
    """The new token ids of each example, up to (not including) eos (notebook 08, §Generation).

    Batches must be left-padded (``collate(..., side="left")``). Deterministic: greedy, or
    beam search with ``num_beams > 1``; ``kw`` goes to ``model.lm.generate`` (e.g.
    ``length_penalty``, ``pad_token_id``, ``eos_token_id``).

    ``use_cache=False`` runs a plain greedy loop that recomputes the whole sequence at every
    step. It exists because HF's ``generate`` *ignores* ``use_cache=False`` when given
    ``inputs_embeds`` (it forces the cache on, to know the prompt embeddings are used only in
    the first step), so asking HF for an uncached run would silently run the cached one.
    """
    gc = model.lm.generation_config
    pad = kw.pop("pad_token_id", gc.pad_token_id if gc.pad_token_id is not None else gc.eos_token_id)
    eos = kw.pop("eos_token_id", gc.eos_token_id)
    eos_set = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
    if bool((attention_mask[:, -1] == 0).any()):
        raise ValueError("generate needs left padding (the last position of a row is padding); "
                         "collate the prompts with side='left'")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            embeds = model.embed(input_ids, features)
            if use_cache:
                out = model.lm.generate(inputs_embeds=embeds, attention_mask=attention_mask,
                                        max_new_tokens=max_new_tokens, do_sample=False, num_beams=num_beams,
                                        use_cache=True, pad_token_id=pad, eos_token_id=eos, **kw)
            else:
                if num_beams != 1 or kw:
                    raise ValueError("use_cache=False is the plain greedy reference: it takes no num_beams or other "
                                     f"generate options (got num_beams={num_beams}, {sorted(kw)})")
                out = _greedy_uncached(model.lm, embeds, attention_mask, max_new_tokens, eos_set, pad)
    finally:
        model.train(was_training)
    result = []
    for row in out.tolist():  # with inputs_embeds alone, HF returns only the new tokens
        cut = next((i for i, t in enumerate(row) if t in eos_set), len(row))
        result.append(row[:cut])
    return result


def derangement(n: int, seed: int) -> list[int]:
    """A random permutation of ``range(n)`` with no fixed point (notebook 10, §Controls).

    For the shuffled-audio control: example ``i`` gets the features of example ``result[i]``,
    never its own, so the control can never hear the true clip. Drawn with
    ``np.random.default_rng(seed)`` and redrawn until no ``i`` maps to itself (about e ≈ 2.7 draws).
    """
    import numpy as np
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 items, got {n}")
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(n)
        if (perm != np.arange(n)).all():
            return [int(j) for j in perm]


def decode(tokenizer: Any, ids_list: Sequence[Sequence[int]]) -> list[str]:
    """Token ids -> text, special tokens dropped and whitespace stripped (notebook 08, §Generation)."""
    return [t.strip() for t in tokenizer.batch_decode([list(ids) for ids in ids_list], skip_special_tokens=True)]
