"""Evaluation end to end on a demo run with 3 checkpoints: the probe grid fills, metrics.json, the best
checkpoint, the CLI's output, automatic evaluation, and the Evaluate tab's endpoints."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from lora_studio import probes
from lora_studio.config import DEFAULT_PROBES, RunConfig
from lora_studio.errors import DataError, JobError, ModelError
from lora_studio.evaluation import EvalJob, EvalRequest, read_metrics
from lora_studio.events import EvalProgress
from lora_studio.workspace import Workspace

from .tiny_model_fixture import PALACE_QA

MODELS = ["base", "checkpoint-1", "checkpoint-2", "checkpoint-3"]
TOKENS = 12


def run_config(model_dir: Path, name: str, **changes) -> RunConfig:
    """A 3-step run saving every step, holding out 4 of the 20 records (val_size 0.2)."""
    values = dict(model_name_or_path=str(model_dir), data_files=[str(PALACE_QA)], cutoff_len=64,
                  per_device_train_batch_size=2, gradient_accumulation_steps=1, max_steps=3, save_steps=1,
                  logging_steps=1, val_size=0.2, run_name=name)
    return RunConfig(**{**values, **changes})


def train(config: RunConfig, workspace: Workspace) -> Path:
    from lora_studio.training import TrainingJob

    job = TrainingJob(config, workspace).start()
    assert job.join(120) and job.state == "completed", job.events.all()[-3:]
    return job.run_dir


@pytest.fixture(scope="session")
def demo_ws(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("eval-workspace"))


@pytest.fixture(scope="session")
def demo_run(demo_model_dir, demo_ws) -> Path:
    return train(run_config(demo_model_dir, "demo3"), demo_ws)


@pytest.fixture(scope="session")
def evaluated(demo_run, demo_ws):
    """(job, line counts of probes.jsonl seen while it ran): the whole run evaluated with metrics."""
    job = EvalJob(EvalRequest(demo_run, metrics=True, max_new_tokens=TOKENS), demo_ws).start()
    seen = []
    while not job.join(0.005):
        answers = demo_run / probes.ANSWERS_FILE
        seen.append(len(answers.read_text(encoding="utf-8").splitlines()) if answers.is_file() else 0)
    assert job.state == "completed", job.events.all()[-3:]
    return job, seen


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


# --- the probe grid --------------------------------------------------------------------------------
def test_the_final_adapter_is_not_asked_twice_when_it_is_the_last_checkpoint(demo_run):
    assert (demo_run / "adapter").is_dir()
    assert [t.name for t in probes.targets(demo_run)] == MODELS
    assert [t.step for t in probes.targets(demo_run)] == [0, 1, 2, 3]
    assert [t.name for t in probes.targets(demo_run, "1,checkpoint-3")] == ["base", "checkpoint-1", "checkpoint-3"]
    with pytest.raises(ModelError, match="checkpoint-7.*checkpoint-1, checkpoint-2, checkpoint-3"):
        probes.targets(demo_run, "7")


def test_the_probe_grid_fills_one_answer_at_a_time(evaluated, demo_run):
    job, seen = evaluated
    prompts = list(DEFAULT_PROBES)
    answers = probes.read_answers(demo_run)
    assert len(answers) == len(MODELS) * len(prompts) == 24
    assert [(a.checkpoint, a.prompt) for a in answers] == [(name, p) for name in MODELS for p in prompts]
    assert [a.step for a in answers[::len(prompts)]] == [0, 1, 2, 3]
    assert all(0 < a.tokens <= TOKENS and a.seconds >= 0 and a.answer.strip() for a in answers)
    # the file grew while the job ran: a page polling it sees the grid fill
    partial = [count for count in seen if 0 < count < 24]
    assert partial and partial == sorted(partial)
    progress = [e for e in job.events.all() if isinstance(e, EvalProgress)]
    assert [e.done for e in progress] == list(range(1, len(progress) + 1))
    assert progress[-1].done == progress[-1].total
    names, cells = probes.grid(answers, prompts)
    assert names == MODELS and len(cells) == 24


def test_metrics_json_holds_base_and_every_checkpoint(evaluated, demo_run):
    values = read_metrics(demo_run)
    assert list(values["checkpoints"]) == MODELS
    assert values["validation"] == {"examples": 4, "answered": 4}
    base, tuned = values["checkpoints"]["base"], values["checkpoints"]["checkpoint-3"]
    for entry in values["checkpoints"].values():
        assert entry["perplexity"] > 1 and entry["val_tokens"] > 0
        assert 0 <= entry["rouge_l"] <= 1 and 0 <= entry["chrf"] <= 100
        assert 0 <= entry["in_character"] <= 1 and entry["mean_length"] > 0 and 0 < entry["distinct_2"] <= 1
        assert [c["prompt"] for c in entry["control"]] == RunConfig().control_prompts
        assert len(entry["best"]) == len(entry["worst"]) == 3
        assert entry["best"][0]["rouge_l"] >= entry["worst"][0]["rouge_l"]
    # training lowers the validation perplexity a little, even in 3 steps
    assert tuned["perplexity"] < base["perplexity"]
    assert base["control_changed"] is None and 0 <= tuned["control_changed"] <= 1
    assert 0 <= tuned["control_chrf"] <= 100
    print("\nbase vs checkpoint-3:", {k: (base[k], tuned[k]) for k in ("perplexity", "rouge_l", "chrf")})


def test_perplexity_agrees_with_the_models_own_loss(demo_model_dir, demo_ws):
    import math

    import torch

    from lora_studio import metrics, models

    loaded = models.load(RunConfig(model_name_or_path=str(demo_model_dir)), demo_ws)
    example = loaded.renderer.encode_example([{"role": "user", "content": "你是谁？"},
                                              {"role": "assistant", "content": "臣妾甄嬛。"}])
    ids, labels = torch.tensor([example.input_ids]), torch.tensor([example.labels])
    with torch.inference_mode():
        out = loaded.model(input_ids=ids, labels=labels)
    nll, count = metrics.token_nll(out.logits, labels)
    assert count == example.trained_tokens  # the first token is never a trained one
    assert metrics.perplexity(nll, count) == pytest.approx(math.exp(out.loss.item()), rel=1e-4)


def test_a_stopped_evaluation_keeps_the_answers_it_has(demo_run, tmp_path, demo_ws):
    run = copy_run(demo_run, tmp_path / "stopped")
    (run / probes.ANSWERS_FILE).unlink(missing_ok=True)
    job = EvalJob(EvalRequest(run, max_new_tokens=TOKENS), demo_ws).start()
    deadline = time.time() + 60
    while job.events.last(EvalProgress) is None and time.time() < deadline:
        time.sleep(0.005)
    job.stop()
    assert job.join(60) and job.state == "stopped"
    kept = probes.read_answers(run)
    assert 1 <= len(kept) < 24 and kept[0].checkpoint == "base"


# --- the best checkpoint and the probe set ---------------------------------------------------------
def test_mark_best_round_trip(demo_run, tmp_path):
    run = copy_run(demo_run, tmp_path / "marked")
    assert probes.best_adapter(run) is None
    with pytest.raises(ModelError, match="no checkpoint of this run is marked best"):
        probes.targets(run, "best")
    assert probes.mark_best(run, "checkpoint-2") == run / "checkpoints" / "checkpoint-2"
    assert probes.best_adapter(run) == run / "checkpoints" / "checkpoint-2"
    assert json.loads((run / "best.json").read_text())["checkpoint"] == "checkpoint-2"
    assert [t.name for t in probes.targets(run, "best")] == ["base", "checkpoint-2"]
    probes.mark_best(run, run / "adapter")
    assert probes.best_adapter(run) == run / "adapter"
    with pytest.raises(ModelError, match="checkpoint-9.*It has: adapter, checkpoint-3"):
        probes.mark_best(run, "checkpoint-9")
    assert probes.best_name(run) == "adapter"  # a refused mark leaves the old one
    shutil.rmtree(run / "adapter")
    assert probes.best_adapter(run) is None  # the marked folder went: nothing is silently picked instead
    probes.mark_best(run, None)
    assert not (run / "best.json").exists()


def test_the_chat_picker_lists_the_best_checkpoint_first(demo_run, tmp_path, demo_ws):
    pytest.importorskip("gradio")
    from lora_studio.runs import read_run
    from lora_studio.ui.tab_chat import adapter_choices

    run = copy_run(demo_run, tmp_path / "picked")
    probes.mark_best(run, "checkpoint-1")
    choices = adapter_choices([read_run(run)], "en")
    assert choices[0][1] == str(run / "checkpoints" / "checkpoint-1") and "★ best" in choices[0][0]
    assert [value for _, value in choices[1:]] == [str(run / "adapter")] + [
        str(run / "checkpoints" / f"checkpoint-{n}") for n in (3, 2)]


def test_probe_sets_load_from_files_and_the_edited_set_wins_over_config(demo_run, tmp_path):
    (tmp_path / "p.txt").write_text("你是谁？\n\n  皇上可好？ \n", encoding="utf-8")
    (tmp_path / "p.json").write_text('["你是谁？", {"prompt": "华妃待你如何？"}]', encoding="utf-8")
    (tmp_path / "p.jsonl").write_text('{"prompt": "眉庄是谁？"}\n\n"你好"\n', encoding="utf-8")
    assert probes.load_probe_file(tmp_path / "p.txt") == ["你是谁？", "皇上可好？"]
    assert probes.load_probe_file(tmp_path / "p.json") == ["你是谁？", "华妃待你如何？"]
    assert probes.load_probe_file(tmp_path / "p.jsonl") == ["眉庄是谁？", "你好"]
    (tmp_path / "bad.jsonl").write_text('"ok"\n{"prompt": 3}\n', encoding="utf-8")
    with pytest.raises(DataError, match="item 2 is neither text"):
        probes.load_probe_file(tmp_path / "bad.jsonl")
    with pytest.raises(DataError, match="must be .txt, .json or .jsonl"):
        probes.load_probe_file(tmp_path / "p.csv")
    run = copy_run(demo_run, tmp_path / "edited")
    config_before = (run / "config.yaml").read_bytes()
    assert probes.probe_set(run) == list(DEFAULT_PROBES)
    probes.save_probe_set(run, ["  新问题一", "", "新问题二"])
    assert probes.probe_set(run) == ["新问题一", "新问题二"]
    assert (run / "config.yaml").read_bytes() == config_before
    with pytest.raises(DataError, match="the probe set is empty"):
        probes.save_probe_set(run, ["", "  "])


# --- the command line --------------------------------------------------------------------------------
def test_cli_eval_prints_the_grid_and_the_metrics(demo_run, demo_ws, tmp_path, capsys, monkeypatch):
    from lora_studio.cli import main
    from lora_studio.cli_report import display_width

    monkeypatch.setenv("COLUMNS", "120")
    copy_run(demo_run, demo_ws.runs / "cli-copy")
    probe_file = tmp_path / "two.jsonl"
    probe_file.write_text('{"prompt": "你是谁？"}\n{"prompt": "眉庄是谁？"}\n', encoding="utf-8")
    code = main(["--workspace", str(demo_ws.root), "--lang", "en", "eval", "cli-copy", "--checkpoints", "1,3",
                 "--probes", str(probe_file), "--metrics", "--max-new-tokens", "8"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    grid = lines.index("Probe grid (cli-copy):")
    assert [cell.strip() for cell in lines[grid + 1].split(" | ")] == ["model", "你是谁？", "眉庄是谁？"]
    assert max(display_width(line) for line in lines[grid:grid + 6]) <= 120
    assert [line.split(" | ")[0].strip() for line in lines[grid + 3:grid + 6]] == ["base", "checkpoint-1",
                                                                                  "checkpoint-3"]
    header = lines[lines.index("Metrics:") + 1]
    assert [h.strip() for h in header.split("|")] == ["model", "perplexity", "ROUGE-L", "chrF", "in character",
                                                      "mean length", "distinct-2", "control changed",
                                                      "control chrF"]
    assert "Best samples of checkpoint-3 (by ROUGE-L):" in lines
    assert "Control questions: the base model and checkpoint-3" in lines
    assert lines[-1] == f"Results are in {demo_ws.runs / 'cli-copy'} (probes.jsonl, metrics.json)"
    answers = probes.read_answers(demo_ws.runs / "cli-copy")
    assert {(a.checkpoint, a.prompt) for a in answers} >= {("checkpoint-3", "眉庄是谁？"), ("base", "你是谁？")}


def test_cli_eval_speaks_chinese_and_refuses_best_without_a_mark(demo_run, demo_ws, capsys):
    from lora_studio.cli import main

    copy_run(demo_run, demo_ws.runs / "cli-zh")
    assert main(["--workspace", str(demo_ws.root), "--lang", "zh", "eval", "cli-zh", "--checkpoints", "best"]) == 2
    assert "这次运行还没有标记最佳检查点" in capsys.readouterr().err
    assert main(["--workspace", str(demo_ws.root), "--lang", "zh", "eval", "cli-zh", "--checkpoints", "2",
                 "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "探针网格（cli-zh）：" in out and "模型" in out and "结果已写入" in out
    assert main(["--workspace", str(demo_ws.root), "eval", "cli-zh", "--max-new-tokens", "0"]) == 2
    assert "max new tokens 0 is not between 1 and 4096" in capsys.readouterr().err


# --- automatic evaluation ----------------------------------------------------------------------------
def test_evaluation_starts_by_itself_when_a_training_run_ends(demo_model_dir, demo_ws):
    from lora_studio.evaluation_auto import AutoEvaluation
    from lora_studio.jobs import JobSlot
    from lora_studio.training import TrainingJob

    training, evaluations = JobSlot(), JobSlot()
    auto = AutoEvaluation(training, evaluations, demo_ws)
    auto.set_mode("after", watch=False)
    job = training.launch(lambda: TrainingJob(run_config(demo_model_dir, "auto-after", probe_prompts=["你是谁？"],
                                                         control_prompts=["一年有几个月？"]), demo_ws))
    assert auto.poll() is None  # still training
    assert job.join(120) and job.state == "completed"
    started = auto.poll()
    assert started is not None and started.run_dir == job.run_dir and auto.poll() is None  # once a run
    assert started.join(120) and started.state == "completed", started.events.all()[-3:]
    assert [a.checkpoint for a in probes.read_answers(job.run_dir)] == MODELS
    assert list(read_metrics(job.run_dir)["checkpoints"]) == MODELS


def test_between_saves_is_refused_on_a_cpu(demo_ws):
    import torch

    from lora_studio.evaluation_auto import AutoEvaluation
    from lora_studio.jobs import JobSlot

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: between saves is allowed")
    with pytest.raises(JobError, match="needs a GPU"):
        AutoEvaluation(JobSlot(), JobSlot(), demo_ws).set_mode("between")


def test_between_saves_follows_a_training_run(demo_model_dir, demo_ws, monkeypatch):
    """The GPU mode's logic, on a CPU with the GPU check answered yes: every checkpoint gets answered."""
    from lora_studio import evaluation
    from lora_studio.training import TrainingJob

    monkeypatch.setattr(evaluation, "between_saves_available", lambda: True)
    monkeypatch.setattr(evaluation, "FOLLOW_POLL_S", 0.2)
    training = TrainingJob(run_config(demo_model_dir, "follow", probe_prompts=["你是谁？", "你好"]), demo_ws).start()
    job = EvalJob(EvalRequest(training.run_dir, follow=True, max_new_tokens=4), demo_ws, training=training).start()
    assert training.join(120) and job.join(120) and job.state == "completed", job.events.all()[-3:]
    assert [a.checkpoint for a in probes.read_answers(training.run_dir)][::2] == MODELS


# --- the Evaluate tab --------------------------------------------------------------------------------
def test_the_evaluate_tab_runs_an_evaluation_and_marks_the_best(demo_run, demo_model_dir, ws):
    pytest.importorskip("gradio")
    from gradio_client import Client

    from .studio_fixture import close_studio, launch_studio

    run = copy_run(demo_run, ws.runs / "tab-run")
    (run / probes.ANSWERS_FILE).unlink(missing_ok=True)
    (run / "metrics.json").unlink(missing_ok=True)
    url, state, demo = launch_studio(ws, "en", allowed=(str(demo_model_dir.parent), str(PALACE_QA.parent)))
    try:
        client = Client(url, verbose=False)
        assert client.predict("", api_name="/list_eval_runs")["choices"][0][0] == "tab-run"
        saved = client.predict("tab-run", "你是谁？\n皇上最近可好？", api_name="/save_probe_set")
        assert saved == "Saved 2 probe questions to probes.txt."
        started = client.predict("tab-run", ["checkpoint-3"], True, 8, api_name="/start_evaluation")
        assert started.startswith("Evaluating tab-run")
        deadline, progress = time.time() + 120, {}
        while time.time() < deadline:
            progress = client.predict("tab-run", api_name="/evaluation_progress")
            if progress["state"] in ("completed", "failed"):
                break
            time.sleep(0.2)
        assert progress["state"] == "completed", progress
        assert progress["prompts"] == ["你是谁？", "皇上最近可好？"]
        assert list(progress["grid"]) == ["base", "checkpoint-3"] and all(all(row) for row in progress["grid"].values())
        assert list(progress["metrics"]) == ["base", "checkpoint-3"]
        marked = client.predict("tab-run", "checkpoint-3", api_name="/mark_best_checkpoint")
        assert marked == "checkpoint-3 of tab-run is marked best: chat and export use it by default."
        assert probes.best_adapter(run) == run / "checkpoints" / "checkpoint-3"
        with pytest.raises(Exception, match="outside"):
            client.predict("tab-run", "/etc/hostname.txt", api_name="/load_probe_set")
    finally:
        close_studio(state, demo)


def test_the_tab_grid_shows_pending_cells_for_the_models_still_to_answer(demo_run, tmp_path):
    pytest.importorskip("gradio")
    from types import SimpleNamespace

    from lora_studio.ui.eval_tables import PENDING, grid_frame

    run = copy_run(demo_run, tmp_path / "pending")
    answers = probes.AnswerLog(run, replacing=MODELS)
    answers.add(probes.ProbeAnswer("base", 0, "你是谁？", "臣妾甄嬛。", 4, 0.1))
    running = SimpleNamespace(is_active=True, targets=probes.targets(run, "3"))
    frame = grid_frame(run, ["你是谁？", "你好"], running, "zh")
    assert list(frame.columns) == ["模型", "你是谁？", "你好"]
    assert frame.values.tolist() == [["base", "臣妾甄嬛。", PENDING], ["checkpoint-3", PENDING, PENDING]]
