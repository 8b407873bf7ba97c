"""Cross-entropy on supervised positions only, with logits computed only there.

With ~2% of response tokens supervised, almost all of a causal LM's `lm_head` output (B x T x V
logits, V ~ 50-150K) is thrown away by the loss. `SupervisedHead` gathers the final hidden
states at the positions whose NEXT token is supervised before `lm_head` runs, so the head and the
cross-entropy see N rows instead of B x T.

It is a forward pre-hook on the model's output embedding (`get_output_embeddings()`), not a
second code path around the model: the forward still goes through the model's own `forward` and
through any wrapper around it (peft, DDP, FSDP), so gradient synchronisation, sharded-parameter
gathering and gradient checkpointing behave exactly as for a plain forward. While no mask is set
the hook does nothing, so generation and evaluation are unaffected. Elementwise post-processing
that some models apply to the logits (soft-capping, logit scale) still applies, to N rows.

Causal shift: the hidden state at position t predicts token t+1, so with `shift_labels[:, t] =
labels[:, t+1]` (last column -100) the supervised positions are `shift_labels != -100` and the
targets are `shift_labels[mask]`. `sparse_ce_sum` returns the SUM of the token losses and the
count; the caller divides by the number of supervised tokens of the whole optimizer step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """`out[:, t] = labels[:, t + 1]`, last column IGNORE_INDEX: the target predicted at position t."""
    out = torch.full_like(labels, IGNORE_INDEX)
    out[:, :-1] = labels[:, 1:]
    return out


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under peft / DDP / FSDP / compile wrappers."""
    seen = 0
    while seen < 8:
        seen += 1
        if hasattr(model, "module") and not hasattr(model, "get_output_embeddings"):  # DDP, FSDP1
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif hasattr(model, "get_base_model"):  # peft
            model = model.get_base_model()
        else:
            break
    return model


class SupervisedHead:
    """Make the output embedding see only the hidden states of supervised positions.

    Usage::

        head = SupervisedHead(model)          # once, before wrapping in DDP/FSDP is fine
        with head.only(shift_labels != -100):
            logits = model(input_ids=..., attention_mask=...).logits   # (N, V), N = mask.sum()
    """

    def __init__(self, model: torch.nn.Module):
        base = _unwrap(model)
        head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
        if head is None:
            raise ValueError(f"{type(base).__name__} has no output embedding (lm_head) to restrict")
        self.mask: torch.Tensor | None = None
        self._handle = head.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        if self.mask is None:
            return None
        hidden = args[0]
        if hidden.shape[:2] != self.mask.shape:
            raise ValueError(
                f"supervised mask {tuple(self.mask.shape)} does not match the hidden states "
                f"{tuple(hidden.shape[:2])} reaching lm_head (was logits_to_keep set?)"
            )
        return (hidden[self.mask],) + tuple(args[1:])

    @contextlib.contextmanager
    def only(self, mask: torch.Tensor) -> Iterator[None]:
        self.mask = mask
        try:
            yield
        finally:
            self.mask = None

    def remove(self) -> None:
        self._handle.remove()


def sparse_ce_sum(model: torch.nn.Module, head: SupervisedHead, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor | None, shifted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of token cross-entropies over supervised positions, number of supervised positions).

    A batch with no supervised position gives (0 attached to the graph, 0): never NaN.
    """
    mask = shifted.ne(IGNORE_INDEX)
    with head.only(mask):
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    logits = out.logits if hasattr(out, "logits") else out[0]
    loss_sum = F.cross_entropy(logits.float(), shifted[mask], reduction="sum")
    return loss_sum, mask.sum()


def full_ce_sum(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: full B x T x V logits, then the shifted cross-entropy sum (for tests and benchmarks)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    shifted = shift_labels(labels)
    loss_sum = F.cross_entropy(logits.float().flatten(0, 1), shifted.flatten(), reduction="sum",
                               ignore_index=IGNORE_INDEX)
    return loss_sum, shifted.ne(IGNORE_INDEX).sum()
