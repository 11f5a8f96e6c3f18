"""mmcourse.lora: LoRA from scratch, checked against peft on a tiny BertModel (notebook 07)."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from mmcourse.lora import (LoRALinear, add_lora, lora_state_dict, merge_lora, trainable_parameters,
                           unmerge_lora)

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # from peft

TINY_BERT = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=48, max_position_embeddings=32)
TARGETS = ["query", "value"]
R, ALPHA = 4, 8


@pytest.fixture(scope="module")
def bert() -> nn.Module:
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    return BertModel(BertConfig(**TINY_BERT)).eval()


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 7:] = 0  # one padded sequence
    return {"input_ids": torch.randint(0, 64, (2, 10), generator=gen), "attention_mask": mask}


@pytest.fixture(scope="module")
def pair(bert):
    """(ours, peft's) with identical, non-zero adapters."""
    from peft import LoraConfig, get_peft_model
    ours = copy.deepcopy(bert)
    names = add_lora(ours, TARGETS, r=R, alpha=ALPHA)
    theirs = get_peft_model(copy.deepcopy(bert), LoraConfig(r=R, lora_alpha=ALPHA, target_modules=TARGETS,
                                                            lora_dropout=0.0)).eval()
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name in names:
            mine, peft_layer = ours.get_submodule(name), theirs.base_model.model.get_submodule(name)
            b = peft_layer.lora_B["default"].weight
            b.copy_(0.1 * torch.randn(b.shape, generator=gen))  # B = 0 would make any LoRA "match"
            mine.lora_A.copy_(peft_layer.lora_A["default"].weight)
            mine.lora_B.copy_(b)
    return ours, theirs


def hidden(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).last_hidden_state  # (batch, seq, hidden)


def test_add_lora_wraps_targets_freezes_the_rest_and_inits_like_peft(bert, inputs):
    model = copy.deepcopy(bert)
    names = add_lora(model, TARGETS, r=R, alpha=ALPHA)
    assert names == [f"encoder.layer.{i}.attention.self.{t}" for i in range(2) for t in TARGETS]
    assert all(isinstance(model.get_submodule(n), LoRALinear) for n in names)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.lora_{ab}" for n in names for ab in "AB"}
    layer = model.get_submodule(names[0])
    assert layer.scaling == ALPHA / R and torch.equal(layer.lora_B, torch.zeros(32, R))
    assert layer.lora_A.abs().max() <= 1 / math.sqrt(32)  # kaiming_uniform(a=sqrt(5)) bound
    assert layer.lora_A.std() > 0.3 / math.sqrt(32)
    torch.testing.assert_close(hidden(model, inputs), hidden(bert, inputs), atol=0, rtol=0)  # B = 0
    assert set(lora_state_dict(model)) == {f"{n}.lora_{ab}" for n in names for ab in "AB"}


def test_forward_equals_peft_lora(bert, pair, inputs):
    ours, theirs = pair
    out, ref = hidden(ours, inputs), hidden(theirs, inputs)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    assert (out - hidden(bert, inputs)).abs().max() > 1e-2  # the adapters really change the output


def test_trainable_counts_equal_peft(pair):
    ours, theirs = pair
    assert trainable_parameters(ours) == theirs.get_nb_trainable_parameters()
    assert trainable_parameters(ours)[0] == 2 * len(TARGETS) * R * (32 + 32)


def test_merged_and_unmerged_outputs_agree(pair, inputs):
    model = copy.deepcopy(pair[0])
    layer = model.get_submodule("encoder.layer.0.attention.self.query")
    w0 = layer.base.weight.clone()
    before = hidden(model, inputs)
    merge_lora(model)
    merge_lora(model)  # idempotent: merging twice must not add the update twice
    assert layer.merged and not torch.equal(layer.base.weight, w0)
    torch.testing.assert_close(hidden(model, inputs), before, atol=1e-5, rtol=1e-5)
    unmerge_lora(model)
    torch.testing.assert_close(layer.base.weight, w0, atol=1e-6, rtol=0)
    torch.testing.assert_close(hidden(model, inputs), before, atol=1e-5, rtol=1e-5)


def test_only_lora_parameters_receive_gradients(pair, inputs):
    model = copy.deepcopy(pair[0]).train()
    model(**inputs).last_hidden_state.pow(2).mean().backward()
    for name, p in model.named_parameters():
        if ".lora_" in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_regex_target_dropout_and_no_match_error():
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    assert add_lora(model, r"[02]", r=2, alpha=2, dropout=0.1) == ["0", "2"]
    assert isinstance(model[0].dropout, nn.Dropout) and model(torch.randn(5, 6)).shape == (5, 3)
    with pytest.raises(ValueError, match="no nn.Linear matches"):
        add_lora(model, r".*")  # the layers inside LoRALinear are not wrapped a second time
    with pytest.raises(ValueError, match="no nn.Linear matches 'query'"):
        add_lora(nn.Sequential(nn.Linear(2, 2)), "query")
