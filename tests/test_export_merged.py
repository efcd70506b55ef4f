"""The merged export as a user gets it: exact parity with the studio's chat on three layouts, a folder that
loads with plain transformers, a model card, verify.json, and bad input that leaves nothing complete-looking.

The runs are 2-step tiny runs whose LoRA B matrices then get noise, so the adapter really changes the
answers (a 2-step run barely moves them) and "the merged model answers like the studio" is a real test.
The Qwen2 layout is the real Qwen2 tokenizer and ChatML template over randomly initialised tiny weights
(tied embeddings, grouped KV heads): export needs the layout, not a model that learned anything.
"""

from __future__ import annotations

import errno
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import QWEN_TOKENIZER, ROOT
from tiny_model_fixture import PALACE_QA, train_tiny_run

LAYOUTS = ("demo", "qwen2", "index")
FEW_PROBES = ["你是谁？", "皇上最近可好？", "Who are you?"]


# --- fixtures --------------------------------------------------------------------------------------
def perturb_adapter(adapter: Path, scale: float = 0.05, seed: int = 0) -> None:
    """Add noise to every lora_B matrix so the adapter visibly changes the model."""
    import torch
    from safetensors.torch import load_file, save_file

    file = adapter / "adapter_model.safetensors"
    weights = load_file(str(file))
    generator = torch.Generator().manual_seed(seed)
    weights = {k: v + scale * torch.randn(v.shape, generator=generator) if "lora_B" in k else v
               for k, v in weights.items()}
    save_file(weights, str(file), metadata={"format": "pt"})


def set_probes(run_dir: Path, prompts: list[str]) -> None:
    config_file = run_dir / "config.yaml"
    values = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    values["probe_prompts"] = prompts
    config_file.write_text(yaml.safe_dump(values, allow_unicode=True), encoding="utf-8")


def build_random_qwen2(dest: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from qwen2_fixture import QWEN2_SHAPE

    tokenizer = AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER))
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = Qwen2ForCausalLM(Qwen2Config(**QWEN2_SHAPE, bos_token_id=None, eos_token_id=end, pad_token_id=end))
    model.generation_config = GenerationConfig(eos_token_id=end, pad_token_id=end, repetition_penalty=1.05)
    model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    return dest


@pytest.fixture(scope="session")
def export_ws(tmp_path_factory):
    from lora_studio.workspace import Workspace

    return Workspace(tmp_path_factory.mktemp("export-ws"))


@pytest.fixture(scope="session")
def layout_runs(demo_model_dir, export_ws, tmp_path_factory):
    """name -> a finished, perturbed tiny run on that layout."""
    from index_fixture import build_index_checkpoint

    started = time.perf_counter()
    models = tmp_path_factory.mktemp("export-models")
    bases = {"demo": demo_model_dir, "qwen2": build_random_qwen2(models / "tiny-qwen2"),
             "index": build_index_checkpoint(models / "Index-tiny")}
    print(f"\nbase models (demo built or reused, qwen2, index): {time.perf_counter() - started:.1f} s")
    runs = {}
    for name, base in bases.items():
        started = time.perf_counter()
        run = train_tiny_run(base, export_ws, f"{name}-run")
        print(f"\n{name}: tiny run {time.perf_counter() - started:.1f} s")
        perturb_adapter(run / "adapter")
        if name != "demo":  # the demo run keeps the six default probes; the others a shorter list
            set_probes(run, FEW_PROBES)
        runs[name] = run
    return runs


@pytest.fixture(scope="session")
def exports(layout_runs, export_ws):
    """name -> (finished job, seconds); each layout's merged export at its default place."""
    from lora_studio.export import ExportJob, ExportRequest

    done = {}
    for name, run in layout_runs.items():
        started = time.perf_counter()
        job = ExportJob(ExportRequest(run=run, target="merged"), export_ws).start()
        assert job.join(300)
        done[name] = (job, time.perf_counter() - started)
    return done


def finished(job):
    from lora_studio.events import Failed, Finished

    return job.events.last(Finished) or job.events.last(Failed)


# --- parity ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_merged_answers_exactly_like_the_studio(exports, layout_runs, layout):
    from lora_studio.disk import folder_bytes
    from lora_studio.export import read_verify

    job, seconds = exports[layout]
    end = finished(job)
    assert job.state == "completed", end.message
    assert job.out == layout_runs[layout] / "exports" / "merged"
    table = read_verify(job.out)
    expected_probes = 6 if layout == "demo" else len(FEW_PROBES)
    assert len(table["prompts"]) == expected_probes and table["sources"] == ["studio", "merged"]
    for row in table["prompts"]:
        studio, merged = row["answers"]["studio"], row["answers"]["merged"]
        assert merged["ids"] == studio["ids"] and merged["same"] and merged["first_difference"] is None
        assert merged["prompt_same"]  # the folder's own template gave the studio's prompt tokens
    assert table["adapter_changes"] >= 1  # the adapter matters: parity is not base against base
    assert table["verdict"] == "same" and table["same"] == {"merged": expected_probes}
    assert end.output == str(job.out)
    assert end.message == (f"The export is in {job.out}. merged answered all {expected_probes} probe prompts "
                           "token for token like the studio.")
    print(f"\n{layout}: merged export {seconds:.1f} s, {folder_bytes(job.out) / 1e6:.2f} MB")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_merged_logits_match_the_studio_model(exports, export_ws, layout):
    import torch
    from transformers import AutoModelForCausalLM

    from lora_studio import models
    from lora_studio.chat import run_config_for
    from lora_studio.export import read_verify
    from lora_studio.export_merged import attach_adapter

    job, _ = exports[layout]
    row = read_verify(job.out)["prompts"][0]
    ids = torch.tensor([row["prompt_ids"] + row["answers"]["studio"]["ids"]])
    config = run_config_for(job.adapter)
    base = models.load_model(models.resolve_model_path(config.model_name_or_path, export_ws), config)
    tuned = attach_adapter(base, job.adapter)
    merged = AutoModelForCausalLM.from_pretrained(str(job.out)).eval()
    with torch.inference_mode():
        diff = (tuned(ids).logits - merged(ids).logits).abs().max().item()
    assert diff < 1e-4, diff


# --- the folder ------------------------------------------------------------------------------------
def test_merged_folders_load_with_plain_transformers_without_peft_or_remote_code(exports):
    """In a fresh process where importing peft fails: AutoModelForCausalLM and AutoTokenizer load each
    folder with trust_remote_code=False and answer."""
    folders = [str(exports[name][0].out) for name in LAYOUTS]
    code = (
        "import sys, json\n"
        "sys.modules['peft'] = None\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "out = []\n"
        f"for folder in {folders!r}:\n"
        "    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=False)\n"
        "    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)\n"
        "    ids = tok.apply_chat_template([{'role': 'user', 'content': '你好'}], add_generation_prompt=True,\n"
        "                                  return_tensors='pt', return_dict=True)\n"
        "    new = model.generate(**ids, max_new_tokens=4, do_sample=False)[0, ids['input_ids'].shape[1]:]\n"
        "    out.append([type(model).__name__, len(new)])\n"
        "print(json.dumps(out))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert [name for name, _ in loaded] == ["LlamaForCausalLM", "Qwen2ForCausalLM", "LlamaForCausalLM"]
    assert all(0 < count <= 4 for _, count in loaded)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_merged_folder_holds_safetensors_and_no_code(exports, layout):
    out = exports[layout][0].out
    names = sorted(p.name for p in out.iterdir())
    assert "model.safetensors" in names and "config.json" in names and "tokenizer.json" in names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".py", ".pkl"))]
    assert not [n for n in names if n.startswith(".")]  # no staging or temporary leftovers
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert "auto_map" not in config and "norm_head" not in config
    assert "auto_map" not in json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]


def test_index_is_exported_as_plain_llama_with_unit_head_rows(exports):
    import torch
    from safetensors.torch import load_file

    from lora_studio.templates import BUILTIN_TEMPLATES

    out = exports["index"][0].out
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    assert config["tie_word_embeddings"] is False
    head = load_file(str(out / "model.safetensors"))["lm_head.weight"].float()
    assert torch.allclose(head.norm(dim=1), torch.ones(head.shape[0]), atol=1e-5)
    # the built-in template travels in tokenizer_config.json (and chat_template.jinja), with the SentencePiece model
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert tokenizer_config["chat_template"] == BUILTIN_TEMPLATES["index"]
    assert (out / "chat_template.jinja").read_text(encoding="utf-8") == BUILTIN_TEMPLATES["index"]
    model_dir = Path(exports["index"][0].config.model_name_or_path)
    assert (out / "tokenizer.model").read_bytes() == (model_dir / "tokenizer.model").read_bytes()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_generation_config_stops_on_the_template_stop_tokens(exports, layout):
    job = exports[layout][0]
    renderer = job.context.renderer  # the renderer the export itself used
    values = json.loads((job.out / "generation_config.json").read_text(encoding="utf-8"))
    assert values["eos_token_id"] == renderer.stop_token_ids and values["pad_token_id"] is not None
    if layout == "qwen2":  # <|im_end|> from the chat template, not only the tokenizer's <|endoftext|>
        assert values["eos_token_id"] == [151643, 151645]
        assert values["repetition_penalty"] == 1.05  # the base model's own generation settings stay


def test_model_card_names_licence_data_sha256_and_settings(exports):
    sha = hashlib.sha256(PALACE_QA.read_bytes()).hexdigest()
    cards = {name: (exports[name][0].out / "README.md").read_text(encoding="utf-8") for name in LAYOUTS}
    demo = cards["demo"]
    assert demo.startswith("---\nlibrary_name: transformers\ntags:\n- lora-studio\n- lora\n- merged\n---\n\n# demo-run-merged\n")
    assert "- Licence: Built locally by LoRA Studio; no restrictions." in demo
    assert "- 许可：由 LoRA Studio 在本机生成；没有任何限制。" in demo
    assert f"| palace_qa.json | {sha} |" in demo and demo.count(sha) == 2  # English and Chinese tables
    assert "## 中文说明" in demo and "### 训练数据" in demo
    assert "- Stop tokens (eos_token_id in generation_config.json): 0 '<|endoftext|>', 2 '<|im_end|>'" in demo
    settings = yaml.safe_load(demo.split("```yaml\n")[1].split("```")[0])
    assert settings["r"] == 8 and settings["max_steps"] == 2 and settings["data_files"] == ["palace_qa.json"]
    assert settings["model_name_or_path"] == "demo-tiny"
    for name in ("qwen2", "index"):
        assert "- Licence: see the base model's licence" in cards[name]
        assert "- 许可：请查看基座模型自己的许可" in cards[name]
    for card in cards.values():
        assert str(PALACE_QA.parent) not in card and "/tmp" not in card  # no local folders on a hub page


def test_export_json_records_the_chat_format(exports):
    job = exports["qwen2"][0]
    manifest = json.loads((job.out / "export.json").read_text(encoding="utf-8"))
    assert manifest["target"] == "merged" and manifest["artifact"] == "model.safetensors"
    assert manifest["stop_token_ids"] == [151643, 151645] and manifest["chat_template_kwargs"] == {}
    assert manifest["adapter"] == str(job.adapter) and manifest["seconds"] > 0


# --- template switches -----------------------------------------------------------------------------
def test_template_switches_become_the_exported_templates_defaults(demo_model_dir):
    from transformers import AutoTokenizer

    from lora_studio.export_merged import template_with_defaults

    template = ("{%- for m in messages -%}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{%- endfor -%}"
                "{%- if add_generation_prompt -%}<|im_start|>assistant\n"
                "{%- if enable_thinking is defined and not enable_thinking -%}<think>\n\n</think>\n\n{%- endif -%}"
                "{%- endif -%}")
    tokenizer = AutoTokenizer.from_pretrained(str(demo_model_dir))
    messages = [{"role": "user", "content": "你好"}]
    exported = template_with_defaults(template, {"enable_thinking": False})

    def render(chat_template, **switches):
        return tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=False,
                                             add_generation_prompt=True, **switches)

    assert render(exported) == render(template, enable_thinking=False)  # a plain call renders as training did
    assert "<think>" in render(exported) and "<think>" not in render(template)
    assert render(exported, enable_thinking=True) == render(template, enable_thinking=True)  # still a switch
    assert template_with_defaults(template, {}) == template


# --- bad input and interruptions -------------------------------------------------------------------
def no_partial_left(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name] if folder.is_dir() else True


def test_a_run_without_an_adapter_is_refused_before_anything_is_written(layout_runs, export_ws, tmp_path):
    from lora_studio.export import ExportError, ExportJob, ExportRequest

    run = tmp_path / "untrained"
    run.mkdir()
    (run / "config.yaml").write_text((layout_runs["demo"] / "config.yaml").read_text(encoding="utf-8"),
                                     encoding="utf-8")
    with pytest.raises(ExportError) as refused:
        ExportJob(ExportRequest(run=run, target="merged"), export_ws)
    assert refused.value.render("en") == (
        f"{run}: this run has no adapter to export: neither a final adapter/ nor a whole checkpoint. Train it "
        "until at least one checkpoint is saved (python studio.py train --resume continues it), then export again.")
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]


def test_unknown_target_and_quant_name_what_is_known(layout_runs, export_ws):
    from lora_studio.export import ExportError, ExportJob, ExportRequest, known_quants

    with pytest.raises(ExportError) as target:
        ExportJob(ExportRequest(run=layout_runs["demo"], target="onnx"), export_ws)
    assert target.value.render("en") == ("--to: there is no export target 'onnx'. Known targets: merged, gguf, "
                                         "ollama, space.")
    with pytest.raises(ExportError) as quant:
        ExportJob(ExportRequest(run=layout_runs["demo"], target="gguf", quant="q3"), export_ws)
    assert "f16" in known_quants() and "q8_0" in known_quants()
    assert quant.value.render("en") == f"--quant: unknown quant 'q3'. Known quants: {', '.join(known_quants())}."
    assert quant.value.render("zh").startswith("--quant：不认识的量化方式 'q3'。可选的量化方式：f16")


def test_too_little_free_space_is_refused_before_writing(layout_runs, export_ws, tmp_path, monkeypatch):
    from lora_studio import disk
    from lora_studio.export import ExportJob, ExportRequest

    monkeypatch.setattr(disk, "free_bytes", lambda path: 1_000_000)
    out = tmp_path / "exports" / "merged"
    job = ExportJob(ExportRequest(run=layout_runs["demo"], target="merged", out=out), export_ws).start()
    assert job.join(120) and job.state == "failed"
    text = finished(job).text.render("en")
    assert text.startswith(f"{out.parent}: not enough disk space: this export writes up to ")
    assert "but only 1.0 MB is free. Free at least " in text and text.endswith("or export to a larger disk with --out.")
    assert list(out.parent.iterdir()) == []


def test_a_disk_that_fills_up_mid_export_leaves_the_earlier_export_as_it_was(exports, export_ws, monkeypatch):
    from lora_studio import export_merged
    from lora_studio.export import ExportJob, ExportRequest

    job = exports["demo"][0]
    before = {p.name: p.read_bytes() for p in job.out.iterdir()}

    def fill_up(model, folder):
        (folder / "model.safetensors").write_bytes(b"\0" * 1000)  # half a file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export_merged, "save_model", fill_up)
    again = ExportJob(ExportRequest(run=job.run_dir, target="merged"), export_ws).start()
    assert again.join(120) and again.state == "failed"
    text = finished(again).text.render("en")
    assert text.startswith(f"{job.out.parent}: the disk filled up during the export (now ")
    assert "the half-written export was removed and any earlier export was kept as it was. This export needs " \
           "about 1.0 MB." in text
    assert {p.name: p.read_bytes() for p in job.out.iterdir()} == before
    assert no_partial_left(job.out.parent)


@pytest.mark.parametrize("when", ["build", "verify"])
def test_a_stopped_export_leaves_nothing_complete_looking(layout_runs, export_ws, tmp_path, monkeypatch, when):
    from lora_studio import export_merged, export_verify
    from lora_studio.export import ExportJob, ExportRequest

    out = tmp_path / "exports" / "merged"
    job = ExportJob(ExportRequest(run=layout_runs["index"], target="merged", out=out), export_ws)
    if when == "build":
        save = export_merged.save_model

        def save_then_stop(model, folder):
            save(model, folder)
            job.stop()  # the user presses Stop while the weights are written

        monkeypatch.setattr(export_merged, "save_model", save_then_stop)
    else:
        answers = export_verify.studio_answers

        def answer_then_stop(ctx, prompts):
            result = answers(ctx, prompts)
            job.stop()
            return result

        monkeypatch.setattr(export_verify, "studio_answers", answer_then_stop)
    job.start()
    assert job.join(120) and job.state == "stopped"
    end = finished(job)
    assert end.status == "stopped" and end.output == ""
    assert end.text.render("en") == f"The export stopped and left nothing half-written; {out} is as it was."
    assert list(out.parent.iterdir()) == []  # no export, no staging, no scratch


def test_the_job_reports_its_stages_in_order(exports):
    from lora_studio.events import ExportProgress, Log
    from lora_studio.export import STAGES

    job = exports["demo"][0]
    stages = [e.stage for e in job.events.all() if isinstance(e, ExportProgress)]
    top = [s for i, s in enumerate(stages) if s in STAGES and (i == 0 or stages[i - 1] != s)]
    assert top == list(STAGES)
    assert stages.index("export.stage_merge") > stages.index("export.stage_build")
    assert stages.index("export.verify_merged") > stages.index("export.verify_studio") > stages.index(STAGES[2])
    logs = [e.text.render("en") for e in job.events.all() if isinstance(e, Log)]
    assert logs[0] == f"Exporting merged: run demo-run, adapter {job.adapter}"
    assert logs[-1].startswith(f"Export ready: {job.out} (") and logs[-1].endswith(" MB)")


def test_exporting_again_replaces_the_export_only_when_whole(layout_runs, export_ws, tmp_path, monkeypatch):
    from lora_studio.export import ExportJob, ExportRequest, read_verify

    from lora_studio import export as export_module, export_verify

    def build(ctx):  # a stand-in builder and proof: what is tested here is the swap
        (ctx.staging / "model.safetensors").write_bytes(b"new")
        return ctx.staging / "model.safetensors"

    monkeypatch.setattr(export_module, "builder_for", lambda target: build)
    monkeypatch.setattr(export_verify, "prove", lambda ctx, artifact: {
        "prompts": [{}], "sources": ["studio", "merged"], "same": {"merged": 1}, "verdict": "same"})
    out = tmp_path / "exports" / "merged"
    out.mkdir(parents=True)
    for name in ("verify.json", "export.json", "old-file.txt"):  # what an earlier export left
        (out / name).write_text("{}", encoding="utf-8")
    job = ExportJob(ExportRequest(run=layout_runs["index"], target="merged", out=out), export_ws).start()
    assert job.join(300) and job.state == "completed"
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.safetensors", "verify.json"]
    assert read_verify(out)["verdict"] == "same" and (out / "model.safetensors").read_bytes() == b"new"
    assert sorted(p.name for p in out.parent.iterdir()) == ["merged"]
    assert any(e.message == f"The earlier export in {out} was replaced by the new, whole one"
               for e in job.events.all())


def test_a_folder_that_is_not_an_export_is_never_replaced(layout_runs, export_ws, tmp_path):
    from lora_studio.export import ExportError, ExportJob, ExportRequest

    mine = tmp_path / "my-documents"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work", encoding="utf-8")
    with pytest.raises(ExportError) as refused:
        ExportJob(ExportRequest(run=layout_runs["demo"], target="merged", out=mine), export_ws)
    assert refused.value.render("en") == (f"{mine}: something is already here, and it is not a LoRA Studio export. "
                                          "An export replaces only an earlier export or an empty folder. Give a new "
                                          "or empty folder with --out.")
    assert (mine / "thesis.txt").read_text(encoding="utf-8") == "years of work"


def test_an_export_interrupted_mid_swap_gets_its_earlier_export_back(layout_runs, export_ws, tmp_path, monkeypatch):
    """A kill between moving the old export aside and renaming the new one in: the next export restores the old
    one first, then (stopped here before it writes anything) leaves it in place."""
    from lora_studio import export as export_module
    from lora_studio.export import ExportJob, ExportRequest

    out = tmp_path / "exports" / "merged"
    aside = out.with_name(".merged.old-20260101-000000-1")
    aside.mkdir(parents=True)
    for name in ("verify.json", "export.json"):
        (aside / name).write_text("{}", encoding="utf-8")
    job = ExportJob(ExportRequest(run=layout_runs["demo"], target="merged", out=out), export_ws)
    monkeypatch.setattr(export_module, "estimate_bytes", lambda ctx: job.stop() or 0)
    job.start()
    assert job.join(120) and job.state == "stopped"
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "verify.json"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["merged"]
