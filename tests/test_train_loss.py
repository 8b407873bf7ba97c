"""Sparse (supervised-positions-only) loss: equals the plain full-logits loss, and its gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codeblock.train.collate import MicroBatchCollator
from codeblock.train.sparse_loss import IGNORE_INDEX, SupervisedHead, full_ce_sum, shift_labels, sparse_ce_sum

VOCAB = 151


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=False, pad_token_id=0)
    return LlamaForCausalLM(cfg).float()


def tiny_qwen2(seed: int = 0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True, pad_token_id=0)
    return Qwen2ForCausalLM(cfg).float()


def sparse_batch(seed: int = 0, rows: int = 4, share: float = 0.1):
    """Rows of different lengths (right-padded), ~`share` of the positions supervised."""
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(rows):
        n = int(rng.integers(12, 40))
        ids = rng.integers(1, VOCAB, n)
        lab = np.full(n, IGNORE_INDEX)
        k = max(1, int(share * n))
        pos = rng.choice(np.arange(1, n), size=k, replace=False)
        lab[pos] = ids[pos]
        items.append({"input_ids": ids, "labels": lab})
    return MicroBatchCollator(pad_token_id=0)([items])


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("factory", [tiny_llama, tiny_qwen2], ids=["llama", "qwen2-tied"])
def test_sparse_loss_and_grads_equal_full_logits(factory):
    model = factory()
    head = SupervisedHead(model)
    b = sparse_batch()
    assert b["attention_mask"].min() == 0  # padding is exercised

    full_sum, full_n = full_ce_sum(model, b["input_ids"], b["attention_mask"], b["labels"])
    (full_sum / full_n).backward()
    g_full = grads(model)
    model.zero_grad()

    sp_sum, sp_n = sparse_ce_sum(model, head, b["input_ids"], b["attention_mask"], b["shift_labels"])
    (sp_sum / sp_n).backward()
    g_sparse = grads(model)

    assert int(sp_n) == int(full_n) == int(b["shift_labels"].ne(IGNORE_INDEX).sum())
    torch.testing.assert_close(sp_sum, full_sum, rtol=1e-5, atol=1e-5)
    # transformers' own causal-LM loss is the same mean
    hf = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
    torch.testing.assert_close(sp_sum / sp_n, hf, rtol=1e-5, atol=1e-5)
    assert g_full.keys() == g_sparse.keys() and len(g_full) > 0
    for name in g_full:
        torch.testing.assert_close(g_sparse[name], g_full[name], rtol=1e-4, atol=1e-6, msg=name)


def test_sparse_head_computes_logits_only_at_supervised_positions():
    model = tiny_llama()
    head = SupervisedHead(model)
    b = sparse_batch()
    mask = b["shift_labels"].ne(IGNORE_INDEX)
    with head.only(mask):
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    assert logits.shape == (int(mask.sum()), VOCAB)
    # the hook is inert outside `only`: full logits for generation / evaluation
    out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    assert out.shape == (*b["input_ids"].shape, VOCAB)
    torch.testing.assert_close(out[mask], logits, rtol=1e-5, atol=1e-5)


def test_sparse_loss_through_peft_lora():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                    target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    for n, p in model.named_parameters():  # non-zero B so LoRA changes the output
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    head = SupervisedHead(model)
    b = sparse_batch(seed=3)
    full_sum, full_n = full_ce_sum(model, b["input_ids"], b["attention_mask"], b["labels"])
    (full_sum / full_n).backward()
    g_full = grads(model)
    model.zero_grad()
    sp_sum, sp_n = sparse_ce_sum(model, head, b["input_ids"], b["attention_mask"], b["shift_labels"])
    (sp_sum / sp_n).backward()
    g_sparse = grads(model)
    torch.testing.assert_close(sp_sum, full_sum, rtol=1e-5, atol=1e-5)
    assert all("lora_" in n for n in g_sparse) and len(g_sparse) == 8
    for name in g_full:
        torch.testing.assert_close(g_sparse[name], g_full[name], rtol=1e-4, atol=1e-6, msg=name)


def test_no_supervised_position_gives_zero_not_nan():
    model = tiny_llama()
    head = SupervisedHead(model)
    b = sparse_batch()
    empty = torch.full_like(b["labels"], IGNORE_INDEX)
    s, n = sparse_ce_sum(model, head, b["input_ids"], b["attention_mask"], shift_labels(empty))
    assert int(n) == 0 and float(s.detach()) == 0.0
    (s / n.clamp(min=1)).backward()
    for p in model.parameters():
        assert p.grad is None or (torch.isfinite(p.grad).all() and p.grad.abs().max() == 0)


def test_mask_shape_mismatch_is_an_error():
    model = tiny_llama()
    head = SupervisedHead(model)
    b = sparse_batch()
    with pytest.raises(ValueError, match="does not match"), head.only(b["shift_labels"][:, :-1].ne(IGNORE_INDEX)):
        model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
