"""The computation of the score stage: GCE from log-probabilities, token-budget batches, the
teacher-forced forward pass, and the warmed-up reference model of `score.mode: excess`.

    GCE_q(p) = (1 - p**q) / q          (score.gce_q; q = 0 is cross-entropy -log p)

The reference (when `score.ref_model` is empty) is a copy of the base model warmed up with plain
SFT (loss on every response token, AdamW, `score.ref_warmup_steps` steps at
`score.ref_warmup_lr`) on the `score.ref_warmup_samples` highest-quality rows of the filtered
pool (`quality`, then `longtail`, then id) - the Token Cleaning / Rho-1 recipe kept deliberately
small. The warm-up is seeded (`score.seed`); on resume it is redone, not cached.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm


def gce_from_logp(logp, q: float):
    """GCE_q from log-probabilities (numpy or torch): (1 - exp(q * logp)) / q; -logp at q = 0."""
    if q == 0:
        return -logp
    exp = np.exp if isinstance(logp, np.ndarray) else (lambda x: x.exp())
    return (1.0 - exp(q * logp)) / q


def make_batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices grouped so that rows x (longest row) <= batch_tokens, longest rows first (an
    out-of-memory shows at once). A row longer than the budget gets a batch of its own."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        width = lengths[cur[0]] if cur else lengths[i]  # sorted: the first row is the longest
        if cur and width * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def _pad(encs: list, pad_id: int, device):
    import torch

    width = max(len(e.input_ids) for e in encs)
    ids = torch.full((len(encs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encs), width), dtype=torch.long)
    for b, e in enumerate(encs):
        ids[b, : len(e.input_ids)] = torch.tensor(e.input_ids, dtype=torch.long)
        mask[b, : len(e.input_ids)] = 1
    return ids.to(device), mask.to(device)


def response_logprobs(model, encs: list, pad_id: int) -> list[np.ndarray]:
    """log p(gold token) for each response token of each encoded pair (one forward pass)."""
    import torch

    for e in encs:
        if e.response_start < 1:
            raise ValueError("a response token at position 0 has no prediction (empty prompt)")
    device = next(model.parameters()).device
    ids, mask = _pad(encs, pad_id, device)
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask).logits
        out = []
        for b, e in enumerate(encs):
            s, t = e.response_start, e.response_end
            if t <= s:
                out.append(np.zeros(0, dtype=np.float32))
                continue
            lp = torch.log_softmax(logits[b, s - 1 : t - 1].float(), dim=-1)
            gold = ids[b, s:t].unsqueeze(-1)
            out.append(lp.gather(-1, gold).squeeze(-1).cpu().numpy().astype(np.float32))
    return out


def warm_up_reference(cfg, rows: list[dict], tokenizer, progress: bool = True):
    """A copy of the base model after a few plain-SFT steps on the cleanest rows (module doc)."""
    import torch

    from codeblock.core.models import load_model
    from codeblock.core.tokenize import encode_pairs

    sc = cfg.score
    ranked = sorted(rows, key=lambda r: (-(r.get("quality") or 0.0), -(r.get("longtail") or 0.0), r["id"]))
    clean = ranked[: max(1, sc.ref_warmup_samples)]
    encs = encode_pairs(tokenizer, [(r["instruction"], r["response"]) for r in clean], sc.max_length)
    batches = make_batches([len(e.input_ids) for e in encs], sc.batch_tokens)
    torch.manual_seed(sc.seed)
    model = load_model(cfg.model, for_training=True)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=sc.ref_warmup_lr)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    for step in tqdm(range(sc.ref_warmup_steps), desc="ref warm-up", unit="step", disable=not progress):
        batch = [encs[i] for i in batches[step % len(batches)]]
        ids, mask = _pad(batch, pad_id, device)
        labels = torch.full_like(ids, -100)
        for b, e in enumerate(batch):
            labels[b, e.response_start : e.response_end] = ids[b, e.response_start : e.response_end]
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        if torch.isfinite(loss):
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    return model
