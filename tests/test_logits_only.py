"""Logits only where a label is trained (loss.py): the same loss and gradients as the full LM head, less work.

Checked on the demo model through the studio's own recipe (assemble_run, its trainer class): a padded
batch and a padding-free packed batch, two micro-batches accumulated with the Trainer's
num_items_in_batch, then a short training run with and without it.
"""

from __future__ import annotations

import pytest
import torch
from unittest import mock

from lora_studio.loss import MASK, POSITIONS, LogitsWhereTrained, keep_mode, kept_loss, trained_positions
from lora_studio.recipe import assemble_run
from lora_studio.trainer_setup import encode_data

from .test_training import palace_config


@pytest.fixture(scope="module")
def encoded(demo_model_dir, tmp_path_factory):
    from lora_studio.models import renderer_for
    from lora_studio.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("logits-only"))
    config = palace_config(demo_model_dir)
    renderer = renderer_for(config, ws)
    return renderer.tokenizer, encode_data(config, renderer)


def studio_trainer(demo_model_dir, tokenizer, data, out, **changes):
    """The studio's trainer (CrashSafeTrainer, logits only) over a fresh demo model, LoRA B made non-zero."""
    from transformers import AutoModelForCausalLM

    config = palace_config(demo_model_dir, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                           **changes)
    model = AutoModelForCausalLM.from_pretrained(str(demo_model_dir), dtype=torch.float32)
    recipe = assemble_run(config, model, tokenizer, data, out, lambda event: None, lambda: False)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():  # B = 0 at init would leave A's gradient zero: nothing to compare
        for name, param in recipe.model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.05 * torch.randn(param.shape, generator=generator))
    trainer = recipe.trainer(data)
    trainer.current_gradient_accumulation_steps = config.gradient_accumulation_steps
    return trainer


def micro_batches(trainer, rows, count=2, size=4):
    return [trainer._prepare_inputs(trainer.data_collator(rows[i * size:(i + 1) * size])) for i in range(count)]


def grads(model) -> dict:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def accumulate(trainer, batches, full: bool):
    """Loss values and LoRA gradients of an accumulated step, by the studio's loss or the Trainer's own."""
    from transformers import Trainer

    trainer.model.zero_grad(set_to_none=True)
    items = trainer._get_num_items_in_batch(batches, trainer.args.device)
    losses = []
    with mock.patch.object(LogitsWhereTrained, "compute_loss", Trainer.compute_loss) if full else _nothing():
        for batch in batches:
            losses.append(trainer.training_step(trainer.model, dict(batch), items).item())
    return losses, grads(trainer.model), items


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def head_rows(trainer) -> list[int]:
    """A hook on the LM head recording how many positions it projects per call."""
    rows = []
    head = trainer.model.get_output_embeddings()
    head.register_forward_hook(lambda module, args, output: rows.append(args[0].reshape(-1, args[0].shape[-1]).shape[0]))
    return rows


@pytest.mark.parametrize("padding_free", [False, True], ids=["padded", "padding-free"])
def test_same_loss_and_gradients_as_the_full_head_with_accumulation(demo_model_dir, encoded, tmp_path, padding_free):
    tokenizer, data = encoded
    trainer = studio_trainer(demo_model_dir, tokenizer, data, tmp_path, padding_free=padding_free)
    batches = micro_batches(trainer, data.train.to_list())
    assert (batches[0]["input_ids"].shape[0] == 1) is padding_free  # packed: one row, position_ids
    assert keep_mode(trainer.model) == MASK
    rows = head_rows(trainer)
    short, short_grads, items = accumulate(trainer, batches, full=False)
    trained = [int(trained_positions(b).sum()) for b in batches]
    total = [b["input_ids"].numel() for b in batches]
    assert rows == trained and all(t < n for t, n in zip(trained, total))  # the prompt's positions are skipped
    assert int(items) == sum(trained)  # the Trainer's count of the whole step's trained labels
    full, full_grads, _ = accumulate(trainer, batches, full=True)
    assert rows[len(trained):] == total  # the reference really ran the whole head
    assert short == pytest.approx(full, rel=1e-6, abs=1e-7)
    assert full_grads.keys() == short_grads.keys() and len(full_grads) > 0
    for name, grad in full_grads.items():
        assert grad.abs().max() > 0, name
        assert torch.allclose(short_grads[name], grad, rtol=1e-5, atol=1e-7), (name, (short_grads[name] - grad).abs().max())


def test_mean_loss_without_num_items_and_positions_for_older_models(demo_model_dir, encoded, tmp_path):
    """Without num_items_in_batch the loss is the mean over trained labels; 1D positions (older transformers
    modules) give the same as the mask."""
    tokenizer, data = encoded
    trainer = studio_trainer(demo_model_dir, tokenizer, data, tmp_path, padding_free=False)
    batch = micro_batches(trainer, data.train.to_list(), count=1)[0]
    model = trainer.model
    with torch.no_grad():
        reference = model(**batch).loss  # the model's own ForCausalLMLoss, mean over trained labels
        by_mask, _ = kept_loss(model, batch, MASK)
        by_positions, _ = kept_loss(model, batch, POSITIONS)
    assert by_mask.item() == pytest.approx(reference.item(), rel=1e-6)
    assert by_positions.item() == pytest.approx(reference.item(), rel=1e-6)


def test_a_model_without_logits_to_keep_takes_the_full_loss():
    class OwnCode(torch.nn.Module):  # a remote-code model of an older transformers: no logits_to_keep
        def forward(self, input_ids=None, labels=None, **kwargs):
            raise AssertionError("not called")

    assert keep_mode(OwnCode()) is None


def test_training_gives_the_same_losses_with_and_without_it(demo_model_dir, encoded, tmp_path):
    from transformers import Trainer

    tokenizer, data = encoded

    def losses(full: bool, out):
        trainer = studio_trainer(demo_model_dir, tokenizer, data, out, max_steps=4, logging_steps=1)
        with mock.patch.object(LogitsWhereTrained, "compute_loss", Trainer.compute_loss) if full else _nothing():
            trainer.train()
        lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        return [e["loss"] for e in trainer.state.log_history if "loss" in e], lora

    short, short_lora = losses(False, tmp_path / "short")
    full, full_lora = losses(True, tmp_path / "full")
    assert len(short) == 4 and short == pytest.approx(full, rel=1e-5)
    assert short[-1] < short[0]  # it trains
    for name, weight in full_lora.items():
        assert torch.allclose(short_lora[name], weight, rtol=1e-4, atol=1e-6), name
