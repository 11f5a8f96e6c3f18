"""The course map (notebook 00_welcome, "Course map"; COURSE_DESIGN §2)."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# (notebook, title, what you learn, real models / data)
NOTEBOOKS: list[tuple[str, str, str, str]] = [
    ("00_welcome", "Welcome", "course map, environment check, profiles, how exercises and checks work", "MiniLM (a first cosine similarity)"),
    ("01_text_encoders", "Text encoders", "WordPiece tokens, embeddings, scaled dot-product attention from scratch, a Transformer block, pooling, sentence similarity", "MiniLM"),
    ("02_image_encoders", "Image encoders", "images as tensors, convolution vs. patches, ViT patch embedding from scratch, ImageNet predictions, feature maps", "MobileNetV2; Flickr8k"),
    ("03_audio_encoders", "Audio encoders", "waveforms, STFT, mel filterbank and log-mel from scratch, Whisper encoder features, spoken digits and environmental sounds", "Whisper tiny.en; FSDD, ESC-10"),
    ("04_alignment_contrastive", "Contrastive alignment", "shared embedding space, CLIP's symmetric InfoNCE and temperature, a dual encoder, recall@K, zero-shot classification", "MobileNetV2 + MiniLM; Flickr8k"),
    ("05_fusion_math", "Fusion math", "early/late/hybrid fusion, weighted sums, gating, tensor and low-rank fusion, bilinear pooling, cross-attention; when adding evidence suffices and when fusion must multiply; missing modalities", "FSDD + digits + MiniLM"),
    ("06_gradient_derivation", "Deriving the gradient", "BCE for image-text matching by hand, backprop in NumPy, numeric gradient checks, softmax-CE and InfoNCE gradients, weight decay vs. L2", "golden values"),
    ("07_finetuning_recipe", "The fine-tuning recipe", "five-step recipe, linear probe vs. partial/full fine-tuning vs. LoRA, schedules, mixed precision, early stopping, checkpoints", "MiniLM / MobileNetV2"),
    ("08_image_captioning", "Image captioning", "conditional language modelling, CNN + Transformer decoder, mini-LLaVA prefix LM, beam search, BLEU/ROUGE-L/CIDEr-D", "MobileNetV2 + SmolLM2; Flickr8k"),
    ("09_medical_imaging", "Medical imaging", "pneumonia and MedMNIST classification, imbalance, AUC and calibration, Grad-CAM, image + clinical text fusion, ethics", "MobileNetV2 (+ MiniLM); chest X-rays, MedMNIST"),
    ("10_audio_language", "Audio meets language", "Whisper frames (real length, stacked) → projector → SmolLM2 in two stages; speech recognition vs. a probe vs. an audio LLM; controls", "Whisper tiny.en + SmolLM2 + a Piper voice; FSDD, ESC-10, spoken instructions"),
    ("11_multimodal_llm", "A small multimodal LLM", "capstone: image + audio + text prompt in, text out; instruction data built from labels; two stages with modality dropout; multimodal gain and controls", "MobileNetV2 + Whisper tiny.en + SmolLM2 + a Piper voice; Flickr8k, ESC-10, FSDD"),
    ("12_responsible_mmml", "Responsible multimodal ML", "robustness curves, missing modalities, blind baselines, leakage, shortcuts and saliency sanity checks, group gaps, hallucinated objects; an evaluation checklist", "Whisper + MobileNetV2 + small CNNs; FSDD, digits, ESC-10, Flickr8k, X-rays, PneumoniaMNIST"),
]


def available(folder: str = "solutions") -> set[str]:
    """Notebook names that exist in ``<repo>/<folder>`` (the rest are planned)."""
    return {p.stem for p in (REPO / folder).glob("*.ipynb")}


def course_map_markdown(folder: str = "solutions") -> str:
    """The course map as a Markdown table, marking which notebooks exist yet."""
    have = available(folder)
    rows = ["| # | notebook | you will learn | models / data | status |", "|---|---|---|---|---|"]
    for name, title, learn, models in NOTEBOOKS:
        state = "available" if name in have else "planned"
        rows.append(f"| {name[:2]} | **{title}** (`{name}`) | {learn} | {models} | {state} |")
    return "\n".join(rows)
