"""Notebook 07's fine-tuning comparison: the task, the model and the five ways to adapt a pretrained
encoder, as the notebook shows them and ``python -m mmcourse finetune recipe`` runs them.

The task (notebook 07, §1): a Flickr8k caption whose subject — a person or a dog — is replaced by
``[MASK]``; the model must tell which it was from the rest of the sentence ("[MASK] fetches a
stick"). The model (§2): pretrained MiniLM → mean pooling → a linear head. The methods (§4): a
linear probe (encoder frozen), the last two blocks, full fine-tuning, and LoRA on the query and
value projections, ours (:mod:`mmcourse.lora`) and peft's, each with its own encoder learning
rate and the same head learning rate, AdamW with weight decay on matrices only.
"""
from __future__ import annotations

import copy
import re
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmcourse import lora, text

DOG = r"\b(dog|dogs|puppy|puppies)\b"
PERSON = r"\b(man|men|woman|women|boy|boys|girl|girls|child|children|kid|kids|person|people|lady|guy)\b"
CLASSES = ["person", "dog"]
HEAD_LR = 3e-3
METHODS = {  # name: encoder learning rate (None: encoder frozen)
    "linear probe": None,
    "last 2 blocks": 1e-4,
    "full fine-tuning": 5e-5,
    "LoRA (ours)": 1e-3,
    "LoRA (peft)": 1e-3,
}
LORA = {"r": 8, "alpha": 16, "targets": ("query", "value")}


def subject_task(split: str, n: int, seed: int = 0) -> tuple[list[dict], Any]:
    """Balanced masked-subject examples ``{"text", "label"}`` from one Flickr8k split (§1), and its info."""
    from mmcourse import data

    ds = data.load("flickr8k", split=split, view="caption")
    patterns = [PERSON, DOG]
    if ds.info.source == "synthetic":  # the stand-in has shapes, not dogs: hide the shape instead
        patterns = [r"\b(square|squares)\b", r"\b(triangle|triangles)\b"]
    by_class: list[list[str]] = [[], []]
    for caption in ds.column("caption"):
        hits = [re.search(p, caption, flags=re.I) is not None for p in patterns]
        if sum(hits) == 1:  # exactly one of the two subjects
            masked = re.sub("|".join(patterns), "[MASK]", caption, flags=re.I)
            by_class[hits.index(True)].append(masked)
    rng = np.random.default_rng(seed)
    examples = []
    for label, captions in enumerate(by_class):
        for i in rng.permutation(len(captions))[: n // 2]:
            examples.append({"text": captions[i], "label": label})
    rng.shuffle(examples)
    return examples, ds.info


def caption_collate(tokenizer: Any, max_len: int) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
    """A collate function: tokenise a batch of captions (padding to the longest), stack the labels."""
    def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
        enc = tokenizer([e["text"] for e in examples], padding=True, truncation=True, max_length=max_len,
                        return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],  # (batch, seq)
                "label": torch.tensor([e["label"] for e in examples])}                    # (batch,)
    return collate


class CaptionClassifier(nn.Module):
    """encoder → mean pooling → linear head (§2)."""

    def __init__(self, encoder: nn.Module, n_classes: int = 2):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, 384)
        return self.head(text.mean_pool(hidden, attention_mask))                                     # (B, 2)


def loss_fn(model: nn.Module, batch: dict) -> torch.Tensor:
    """Cross-entropy of the classifier's logits against the labels."""
    return F.cross_entropy(model(batch["input_ids"], batch["attention_mask"]), batch["label"])


@torch.no_grad()
def eval_fn(model: nn.Module, data_loader: Any) -> dict[str, float]:
    """Accuracy and mean loss over a loader (fit calls it in eval mode, without gradients)."""
    dev = next(model.parameters()).device
    correct, loss, n = 0, 0.0, 0
    for b in data_loader:
        logits = model(b["input_ids"].to(dev), b["attention_mask"].to(dev))
        labels = b["label"].to(dev)
        correct += int((logits.argmax(dim=-1) == labels).sum())
        loss += float(F.cross_entropy(logits, labels, reduction="sum"))
        n += len(labels)
    return {"val_acc": correct / n, "val_loss": loss / n}


def make_model(encoder0: nn.Module, method: str) -> CaptionClassifier:
    """A fresh copy of the pretrained encoder, prepared for ``method``, with a new head (§4)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    torch.manual_seed(0)
    encoder = copy.deepcopy(encoder0)
    if method == "linear probe":
        encoder.requires_grad_(False)
    elif method == "last 2 blocks":
        encoder.requires_grad_(False)
        encoder.encoder.layer[-2:].requires_grad_(True)
    elif method == "LoRA (ours)":
        lora.add_lora(encoder, list(LORA["targets"]), r=LORA["r"], alpha=LORA["alpha"])
    elif method == "LoRA (peft)":
        from peft import LoraConfig, get_peft_model

        encoder = get_peft_model(encoder, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"],
                                                     target_modules=list(LORA["targets"]), lora_dropout=0.0))
    return CaptionClassifier(encoder)


def make_optimizer(model: CaptionClassifier, encoder_lr: float | None, head_lr: float = HEAD_LR) -> torch.optim.AdamW:
    """AdamW with two learning rates (head, encoder); weight decay on matrices only, none on biases and LayerNorm."""
    body = [p for p in model.encoder.parameters() if p.requires_grad]
    groups = []
    for params, lr in ((list(model.head.parameters()), head_lr), (body, encoder_lr)):
        for decay, chosen in ((0.01, [p for p in params if p.ndim >= 2]), (0.0, [p for p in params if p.ndim < 2])):
            if chosen:
                groups.append({"params": chosen, "lr": lr, "weight_decay": decay})
    return torch.optim.AdamW(groups)


def state_memory_mb(model: nn.Module) -> float:
    """float32 weights + (gradient + 2 AdamW moments) per trainable parameter, in MiB."""
    trainable, total = lora.trainable_parameters(model)
    return 4 * (total + 3 * trainable) / 2**20


def train_method(encoder0: nn.Module, method: str, train_loader: Any, val_loader: Any, epochs: int, *,
                 callback: Any = None, checkpoint_dir: Any = None, resume: bool = False, device: Any = None,
                 progress: bool = False, **levers: Any) -> tuple[CaptionClassifier, torch.optim.Optimizer, Any, dict]:
    """Train one method with ``fit`` (§4): its model and optimizer, early stopping on validation accuracy
    (patience 2), clipping at 1; a checkpoint per epoch in ``checkpoint_dir`` when given. Returns
    (model with the best weights, optimizer, History, the row of the comparison table)."""
    import time

    from mmcourse import runtime
    from mmcourse.train import fit

    model = make_model(encoder0, method)
    dev = runtime.device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    optimizer = make_optimizer(model, METHODS[method])
    start = time.perf_counter()
    hist = fit(model, loss_fn, train_loader, val_loader, epochs=epochs, optimizer=optimizer, eval_fn=eval_fn,
               monitor="val_acc", mode="max", patience=2, clip_grad_norm=1.0, seed=0, progress=progress,
               callback=callback, checkpoint_dir=checkpoint_dir, checkpoint_every="epoch" if checkpoint_dir else None,
               resume=resume and checkpoint_dir is not None, device=device, **levers)
    seconds = time.perf_counter() - start
    trainable, total = lora.trainable_parameters(model)
    row = {"val_acc": hist.best_metric, "trainable": trainable, "total": total,
           "s_per_epoch": seconds / max(hist.step / len(train_loader), 1e-9), "state_mb": state_memory_mb(model),
           "gpu_peak_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
           "best_step": hist.best_step, "steps": hist.step}
    return model, optimizer, hist, row
