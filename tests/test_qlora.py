"""QLoRA on bitsandbytes' CPU backend: tiny 4-bit and 8-bit runs train, save, and chat over the base they
trained on; the pre-flight memory estimate counts quantised weights by quantization.py's formula; a
machine where bitsandbytes cannot run gets the message before anything starts.

bitsandbytes 0.50 runs 4-bit and 8-bit layers on the CPU (NOTES.md), so nothing here needs a GPU.
The runs use a 1-layer model built like tiny_model_fixture's (the demo model's tokenizer recipe, no
pre-training) rather than the demo model: building that one costs more than every run here together,
and what is tested (the layers, the steps, the adapter) is the same. Its widths are 64 and 128, not
16: bitsandbytes' CPU inference kernel (chat) packs 4-bit weights in blocks of 32 output rows.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from lora_studio import quantization
from lora_studio.config import RunConfig
from lora_studio.errors import ConfigError
from lora_studio.events import Finished, Log, Progress
from lora_studio.i18n import msg
from lora_studio.index_model import INDEX_1_9B_CONFIG
from lora_studio.workspace import Workspace
from tiny_model_fixture import PALACE_QA

pytest.importorskip("bitsandbytes")

INDEX_FROZEN = 2_172_819_456          # Index-1.9B's parameters (catalog.yaml)
INDEX_KEPT = 2 * 65029 * 2048 + (2 * 36 + 1) * 2048  # embeddings + untied head + 73 norm vectors
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)           # code + 8-bit absmax per 64 + fp32 scale per 256 blocks
TUTORIAL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def run_config(model_dir: Path, mode: str, name: str, **changes) -> RunConfig:
    values = dict(model_name_or_path=str(model_dir), data_files=[str(PALACE_QA)], cutoff_len=64,
                  per_device_train_batch_size=2, gradient_accumulation_steps=1, max_steps=3, save_steps=3,
                  logging_steps=1, learning_rate=1e-2, run_name=name, quantization=mode)
    return RunConfig(**{**values, **changes})


def layer_types_callback(seen: dict):
    """Records the class of every module of the model the Trainer trains, at the start of training."""
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen.update({name: type(module).__name__ for name, module in model.named_modules()})

    return Recorder()


def train(config: RunConfig, workspace: Workspace) -> tuple[Path, list, dict]:
    from lora_studio.training import TrainingJob

    seen: dict = {}
    job = TrainingJob(config, workspace, callbacks=[layer_types_callback(seen)]).start()
    assert job.join(240), "the QLoRA run did not finish"
    events = job.events.all()
    end = job.events.last(Finished)
    assert isinstance(end, Finished) and end.status == "completed", events[-3:]
    return job.run_dir, events, seen


def build_quantisable_model(dest: Path) -> Path:
    """tiny_model_fixture.build_tiny_model at widths bitsandbytes' CPU kernels take (multiples of 32)."""
    from tiny_model_fixture import build_tiny_model

    return build_tiny_model(dest, hidden_size=64, intermediate_size=128)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_quantisable_model(tmp_path_factory.mktemp("qlora-model") / "tiny")


@pytest.fixture(scope="session")
def qlora_ws(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("qlora-ws"))


@pytest.fixture(scope="session")
def run_4bit(tiny_model, qlora_ws):
    return train(run_config(tiny_model, "4bit", "qlora-4bit"), qlora_ws)


# --- training ------------------------------------------------------------------------------------
def test_a_4bit_run_trains_lora_over_nf4_layers_and_saves_the_adapter(run_4bit):
    run_dir, events, seen = run_4bit
    steps = [e for e in events if isinstance(e, Progress)]
    assert [e.step for e in steps] == [1, 2, 3]
    assert all(e.loss is not None and math.isfinite(e.loss) for e in steps)
    # every projection the LoRA wraps is a bitsandbytes 4-bit layer underneath
    bases = {name: kind for name, kind in seen.items() if name.endswith(".base_layer")}
    assert bases and set(bases.values()) == {"Linear4bit"}, bases
    assert any(name.endswith("lm_head") and kind == "Linear" for name, kind in seen.items())  # head stays
    logged = [e.text.render("en") for e in events if isinstance(e, Log)]
    assert any(line.startswith("QLoRA: the base's linear layers are loaded in 4bit (NF4, double quantisation")
               for line in logged), logged
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_an_8bit_run_trains_over_int8_layers(tiny_model, qlora_ws):
    _, events, seen = train(run_config(tiny_model, "8bit", "qlora-8bit", max_steps=2, save_steps=2), qlora_ws)
    losses = [e.loss for e in events if isinstance(e, Progress)]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    assert {kind for name, kind in seen.items() if name.endswith(".base_layer")} == {"Linear8bitLt"}


def test_chat_loads_the_adapter_over_the_base_quantised_as_it_trained(run_4bit, qlora_ws):
    import torch
    from safetensors.torch import load_file

    from lora_studio.chat import ChatEngine
    from lora_studio.sampling import SamplingConfig

    run_dir, _, _ = run_4bit
    engine = ChatEngine(qlora_ws)
    engine.load_run(run_dir / "adapter")
    kinds = {type(m).__name__ for name, m in engine.model.named_modules() if name.endswith(".base_layer")}
    assert kinds == {"Linear4bit"}
    # the weights chat uses are the ones the run saved
    saved = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    name = next(k for k in saved if "lora_B" in k)
    live = dict(engine.model.named_parameters())
    served = next(p for n, p in live.items() if n.replace(f".{engine.active_adapter}", "") == name)
    assert torch.equal(served.detach().cpu().float(), saved[name].float())
    base, tuned = engine.answer([{"role": "user", "content": "你好"}],
                                sampling=SamplingConfig(temperature=0, repetition_penalty=1.0, max_new_tokens=4))
    assert isinstance(base, str) and isinstance(tuned, str)
    ids = engine.tokenizer("臣妾住在碎玉轩。", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        with_adapter = engine.model(input_ids=ids).logits
        with engine.model.disable_adapter():
            without = engine.model(input_ids=ids).logits
    assert (with_adapter - without).abs().max() > 1e-4  # the adapter is applied over the quantised base


def test_an_index_checkpoint_loads_in_4bit_with_its_head_rows_normalised(tmp_path):
    import torch

    from index_fixture import build_index_checkpoint
    from lora_studio.models import load_model

    folder = build_index_checkpoint(tmp_path / "index")
    model = load_model(folder, RunConfig(model_name_or_path=str(folder), quantization="4bit"))
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    head = model.get_output_embeddings().weight.float()
    assert torch.allclose(head.norm(dim=1), torch.ones(head.shape[0]), atol=1e-3)


# --- the memory estimate -------------------------------------------------------------------------
def test_the_index_estimate_with_4bit_is_smaller_by_the_weights_share():
    from lora_studio.estimate import memory_estimate, preflight

    config = RunConfig(r=8, lora_alpha=32, target_modules=TUTORIAL_TARGETS, per_device_train_batch_size=4,
                       cutoff_len=384, gradient_checkpointing=True)
    qlora = config.replace(quantization="4bit")
    plain, small = (memory_estimate(INDEX_1_9B_CONFIG, c, 2, True) for c in (config, qlora))
    assert round(plain["weights"], 3) == round(2 * INDEX_FROZEN / 1e9, 3) == 4.346
    expected = (NF4_BYTES * (INDEX_FROZEN - INDEX_KEPT) + 4 * INDEX_KEPT) / 1e9
    assert small["weights"] == pytest.approx(expected, rel=1e-9)
    assert round(small["weights"], 3) == 2.049
    assert plain["total"] - small["total"] == pytest.approx(plain["weights"] - small["weights"])
    assert (round(plain["total"], 1), round(small["total"], 1)) == (6.6, 4.3)  # catalog.yaml's 6.6 GB, in bf16
    for part in ("lora+optimizer", "activations", "runtime"):
        assert small[part] == plain[part]
    eight = memory_estimate(INDEX_1_9B_CONFIG, config.replace(quantization="8bit"), 2, True)
    assert eight["weights"] == pytest.approx((INDEX_FROZEN - INDEX_KEPT + 4 * INDEX_KEPT) / 1e9)
    # the pre-flight (a dry run's model on the meta device) says so in a note
    report = preflight(qlora, INDEX_1_9B_CONFIG, None)
    text = report.to_text("en")
    assert "Base loaded in 4bit: the linear layers' 1,906,311,168 weights at about 0.5159 bytes each" in text
    assert "the other 266,508,288 (embeddings, head, norms) in float32" in text


def test_the_4bit_formula_matches_what_a_loaded_model_holds(tmp_path):
    """The estimate's bytes per weight against the bytes a real 4-bit model keeps (weights and scales)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lora_studio.models import load_model

    shape = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=1024, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(shape).save_pretrained(tmp_path / "m")
    model = quantization.prepare(load_model(tmp_path / "m", RunConfig(quantization="4bit")),
                                 RunConfig(quantization="4bit"), lambda _text: None)
    held = sum(p.numel() * p.element_size() for p in model.parameters())
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is not None:  # the block scales: 8-bit absmax, and the fp32 scales of those (double quant)
            held += state.absmax.numel() * state.absmax.element_size()
            held += state.state2.absmax.numel() * state.state2.absmax.element_size()
    frozen = sum(p.numel() for p in LlamaForCausalLM(shape).parameters())
    estimated = quantization.frozen_weight_bytes(shape, RunConfig(quantization="4bit"), frozen, 4)
    assert held == pytest.approx(estimated, rel=0.01)


# --- where it cannot run -------------------------------------------------------------------------
def test_a_machine_where_bitsandbytes_cannot_run_is_told_before_anything_starts(monkeypatch, tiny_model, ws):
    from lora_studio.estimate import dry_run
    from lora_studio.training import TrainingJob

    monkeypatch.setattr(quantization, "unavailable", lambda mode, *_: msg(
        "hardware.bnb_backend", mode=mode, device="cpu", detail="no kernel for this device"))
    config = run_config(tiny_model, "4bit", "refused")
    with pytest.raises(ConfigError) as refused:
        TrainingJob(config, ws).start()
    message = refused.value.message
    assert message.startswith("quantization: bitsandbytes is installed, but its 4bit quantisation cannot run "
                              "on this machine (cpu): no kernel for this device")
    assert "Set quantization to none" in message
    assert not ws.runs.exists() or not any(ws.runs.iterdir())  # no run folder
    with pytest.raises(ConfigError, match="cannot run on this machine"):
        dry_run(config, ws)
    assert "cannot run on this machine" in ConfigError(
        msg("hardware.bnb_backend", mode="4bit", device="cpu", detail="x")).render("en")


def test_without_bitsandbytes_the_message_gives_the_pip_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ConfigError) as refused:
        quantization.check_available(RunConfig(quantization="8bit"))
    assert "needs the bitsandbytes package, which is not installed" in refused.value.message
    assert "-m pip install 'bitsandbytes==0.50.*'" in refused.value.message
    assert refused.value.render("zh").startswith("quantization：量化训练需要 bitsandbytes 包")
    quantization.check_available(RunConfig())  # no quantisation: nothing to check


def test_this_machine_can_run_both_modes():
    assert quantization.unavailable("4bit") is None
    assert quantization.unavailable("8bit") is None
