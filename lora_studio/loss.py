"""The training loss with the LM head computed only where a label is trained: same loss, less work.

A chat example's prompt (system prompt, the user's turns, the template's tokens) carries label -100,
and a padding-free batch puts -100 at the first token of every packed example. The loss never reads
the logits that predict those labels, yet a plain causal-LM forward projects every position onto the
whole vocabulary (Index-1.9B: 2048 x 65029, about a fifth of the model's multiply-adds per token).

`LogitsWhereTrained` is a mixin for transformers' `Trainer` (the studio's trainer class,
`checkpoints.crash_safe_trainer_class`, takes it first). Its `compute_loss` asks the model for logits
only at the positions whose next-token label is trained (`logits_to_keep`, which transformers'
causal-LM models take as a boolean mask or a list of positions, peft passes it through), then computes
the cross-entropy itself exactly as the model's `ForCausalLMLoss` does: float32, summed and divided
by the Trainer's `num_items_in_batch` (the trained labels of the whole accumulated step) when the
Trainer passes one, else the mean over trained labels; then the Trainer's own scaling across devices.
Gradients are the same too: an untrained position's logits get a zero gradient in the full loss.

Anything this cannot match exactly goes to the Trainer's own `compute_loss`: a model without
`logits_to_keep` (its own code), a model whose loss is not the plain causal-LM loss, label smoothing,
a custom loss function, sequence parallelism, and evaluation with `compute_metrics` (which reads the
full logits).
"""

from __future__ import annotations

import inspect
import sys
from typing import TYPE_CHECKING

from .templates import IGNORE_INDEX

if TYPE_CHECKING:
    import torch

MASK, POSITIONS = "mask", "positions"  # how a model takes logits_to_keep: 2D bool mask, or 1D positions


def trained_positions(inputs) -> "torch.Tensor":
    """Boolean [batch, length]: True where the logits predict a trained label (the next token's label).

    A collator that gives `shift_labels` (already shifted) is taken at its word; otherwise the labels
    are shifted by one, the last position predicting nothing, as ForCausalLMLoss does.
    """
    return next_labels(inputs).ne(IGNORE_INDEX)


def next_labels(inputs) -> "torch.Tensor":
    """The label each position predicts: `labels` shifted left by one, -100 after the last token."""
    import torch.nn.functional as F

    if inputs.get("shift_labels") is not None:
        return inputs["shift_labels"]
    return F.pad(inputs["labels"][..., 1:], (0, 1), value=IGNORE_INDEX)


def keep_mode(model) -> str | None:
    """MASK or POSITIONS: how `model` (peft-wrapped or not) takes `logits_to_keep`; None where it cannot.

    Decided on the model's own class: its forward must take `logits_to_keep` and its loss must be
    transformers' ForCausalLMLoss (what compute_loss re-implements). A 2D boolean mask (exact for any
    batch) is tried on the helper the model's module slices with; older modules take 1D positions.
    """
    import torch
    from transformers.loss.loss_utils import ForCausalLMLoss

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        parameters = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return None
    if "logits_to_keep" not in parameters or getattr(base, "loss_function", None) is not ForCausalLMLoss:
        return None
    slicer = getattr(sys.modules.get(type(base).__module__), "slice_logits_to_keep", None)
    if slicer is None:
        return POSITIONS
    try:
        hidden = torch.arange(6.0).view(2, 3, 1)
        kept = slicer(hidden, torch.tensor([[True, False, True], [False, True, False]]))
    except Exception:  # noqa: BLE001 - any refusal means this version slices by positions only
        return POSITIONS
    return MASK if tuple(kept.shape) == (3, 1) and kept.flatten().tolist() == [0.0, 2.0, 4.0] else POSITIONS


def kept_loss(model, inputs: dict, mode: str, num_items_in_batch=None):
    """(loss, outputs): the forward with logits only where a label is trained, and ForCausalLMLoss on them."""
    import torch.nn.functional as F

    targets = next_labels(inputs)
    trained = targets.ne(IGNORE_INDEX)
    if mode == MASK:
        keep, kept_targets = trained, targets[trained]
    else:  # the union over the batch's rows; a row's untrained positions among them stay -100
        keep = trained.any(dim=0).nonzero().squeeze(1)
        kept_targets = targets[:, keep].reshape(-1)
    forward = {k: v for k, v in inputs.items() if k not in ("labels", "shift_labels")}
    outputs = model(**forward, logits_to_keep=keep)
    logits = outputs.logits.float()  # ForCausalLMLoss upcasts too
    logits = logits.reshape(-1, logits.shape[-1])
    kept_targets = kept_targets.to(logits.device)
    if num_items_in_batch is None:
        loss = F.cross_entropy(logits, kept_targets, ignore_index=IGNORE_INDEX, reduction="mean")
    else:
        loss = F.cross_entropy(logits, kept_targets, ignore_index=IGNORE_INDEX, reduction="sum")
        if hasattr(num_items_in_batch, "to"):
            num_items_in_batch = num_items_in_batch.to(loss.device)
        loss = loss / num_items_in_batch
    return loss, outputs


class LogitsWhereTrained:
    """Trainer mixin: `compute_loss` with logits only where a label is trained (module docstring)."""

    _keep_mode: str | None = None
    _keep_mode_known = False

    def _logits_keep_mode(self, model) -> str | None:
        if not self._keep_mode_known:
            unwrapped = self.accelerator.unwrap_model(model)
            self._keep_mode, self._keep_mode_known = keep_mode(unwrapped), True
        return self._keep_mode

    def _exact_here(self, model, inputs, return_outputs: bool) -> str | None:
        """The keep mode when this call can take the short path and give the Trainer's loss exactly."""
        pc = getattr(self.accelerator, "parallelism_config", None)
        if pc is not None and getattr(pc, "sp_enabled", False):
            return None
        if inputs.get("labels") is None or self.label_smoother is not None or self.compute_loss_func is not None:
            return None
        if return_outputs and self.compute_metrics is not None:  # metrics read the full logits
            return None
        return self._logits_keep_mode(model)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = self._exact_here(model, inputs, return_outputs)
        if mode is None:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        # the Trainer hands num_items_in_batch to the model's loss only when the model takes loss kwargs
        items = num_items_in_batch if self.model_accepts_loss_kwargs else None
        loss, outputs = kept_loss(model, inputs, mode, items)
        if self.args.average_tokens_across_devices and self.model_accepts_loss_kwargs and items is not None:
            # as Trainer.compute_loss: the loss was divided by the tokens of every rank's batch
            scale = self.accelerator.num_processes // self.get_tp_size() if hasattr(self, "get_tp_size") \
                else self.accelerator.num_processes
            loss = loss * (scale if self.args.n_gpu <= 1 else self.args.n_gpu)
        return (loss, outputs) if return_outputs else loss
