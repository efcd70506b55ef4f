"""TrainingJob end to end on the tiny demo model: learning, events, stop, resume, failure, one-job rule."""

import json
import re
from pathlib import Path

import pytest

from lora_studio.config import RunConfig, load_yaml
from lora_studio.errors import JobError
from lora_studio.events import Failed, Finished, Log, Progress, read_events
from lora_studio.jobs import JobSlot
from lora_studio.training import TrainingJob
from lora_studio.workspace import Workspace

from .test_estimate import english_words

PALACE_QA = Path(__file__).parent / "data" / "palace_qa.json"


def palace_config(model_dir, **changes) -> RunConfig:
    values = dict(model_name_or_path=str(model_dir), data_files=[str(PALACE_QA)],
                  system_prompt="现在你要扮演皇帝身边的女人--甄嬛", cutoff_len=128, lora_dropout=0.0,
                  learning_rate=3e-3, per_device_train_batch_size=4, gradient_accumulation_steps=1,
                  lr_scheduler_type="constant", max_steps=300, logging_steps=10, save_steps=1000, seed=1)
    values.update(changes)
    return RunConfig(**values)


def run_to_end(job: TrainingJob, timeout: float = 300) -> Finished | Failed:
    assert job.start() is job
    assert job.join(timeout), "training did not finish in time"
    return job.events.last(Finished) or job.events.last(Failed)


@pytest.fixture(scope="session")
def trained_run(demo_model_dir, tmp_path_factory):
    """One full training run on the palace Q&A, shared by the tests that only read it."""
    ws = Workspace(tmp_path_factory.mktemp("trained-workspace"))
    job = TrainingJob(palace_config(demo_model_dir, run_name="palace"), ws)
    end = run_to_end(job)
    assert isinstance(end, Finished), getattr(end, "message", end)
    return job


def test_adapter_reproduces_trained_answers_and_base_does_not(trained_run):
    from lora_studio.chat import ChatEngine
    from lora_studio.sampling import SamplingConfig

    engine = ChatEngine(trained_run.workspace)
    engine.load_run(trained_run.run_dir / "adapter")
    records = json.loads(PALACE_QA.read_text(encoding="utf-8"))
    greedy = SamplingConfig(max_new_tokens=48, temperature=0)
    tuned_hits = base_hits = 0
    for record in records:
        base, tuned = engine.answer([{"role": "user", "content": record["instruction"]}], sampling=greedy)
        tuned_hits += tuned == record["output"]  # exact: generation also stopped at the trained end token
        base_hits += base == record["output"]
    assert tuned_hits >= 0.8 * len(records), f"only {tuned_hits}/{len(records)} answers reproduced"
    assert base_hits == 0


def test_run_directory_is_self_describing(trained_run):
    run_dir = trained_run.run_dir
    assert run_dir.name == "palace"
    config = load_yaml(run_dir / "config.yaml")
    assert config.max_steps == 300 and Path(config.data_files[0]).is_absolute()
    assert "studio.py train" in (run_dir / "command.sh").read_text()
    events = read_events(run_dir / "events.jsonl")
    progress = [e for e in events if isinstance(e, Progress)]
    assert [e.step for e in progress] == list(range(1, 301))
    assert progress[-1].total_steps == 300 and progress[-1].eta == 0
    losses = [e.loss for e in progress if e.loss is not None]
    assert len(losses) == 30 and losses[-1] < losses[0] / 4
    assert all(e.tokens_per_second > 0 for e in progress)
    assert isinstance(events[-1], Finished) and events[-1].status == "completed"
    logged = [e.message for e in events if isinstance(e, Log)]
    assert logged[0] == f"Loading model {trained_run.config.model_name_or_path}"
    assert any(re.fullmatch(r"LoRA: [\d,]+ trainable parameters of [\d,]+ \(\d+\.\d\d%\)", line) for line in logged)
    assert "step 10: loss " in "\n".join(logged) and "grad_norm" in "\n".join(logged)
    chinese = "\n".join(e.text.render("zh") for e in events if isinstance(e, Log))
    assert "第 10 步：损失 " in chinese and "梯度范数" in chinese
    assert english_words(chinese, allowed=trained_run.config.model_name_or_path) == []


def test_adapter_loads_with_peft(trained_run, demo_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(demo_model_dir)),
                                      str(trained_run.run_dir / "adapter"))
    assert any("lora_A" in name for name, _ in model.named_parameters())


def test_existing_run_is_never_overwritten(demo_model_dir, ws):
    first = TrainingJob(palace_config(demo_model_dir, run_name="same", max_steps=2), ws)
    second = TrainingJob(palace_config(demo_model_dir, run_name="same", max_steps=2), ws)
    assert isinstance(run_to_end(first), Finished) and isinstance(run_to_end(second), Finished)
    assert first.run_dir.name == "same" and second.run_dir.name == "same-2"


def test_run_names_cannot_escape_the_workspace(demo_model_dir, ws):
    job = TrainingJob(palace_config(demo_model_dir, run_name="../../etc/passwd", max_steps=1), ws)
    run_to_end(job)
    assert job.run_dir.parent == ws.runs and job.run_dir.name == "etc-passwd"


def test_stop_keeps_a_loadable_adapter_and_resume_continues(demo_model_dir, ws):
    from transformers import TrainerCallback

    class StopAtFive(TrainerCallback):
        def __init__(self):
            self.job = None

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                self.job.stop()

    stopper = StopAtFive()
    job = TrainingJob(palace_config(demo_model_dir, max_steps=12, save_steps=1000), ws, callbacks=[stopper])
    stopper.job = job
    end = run_to_end(job)
    assert isinstance(end, Finished) and end.status == "stopped" and end.step == 5
    assert (job.run_dir / "adapter" / "adapter_config.json").is_file()
    assert (job.run_dir / "checkpoints" / "checkpoint-5").is_dir()

    resumed = TrainingJob.resume(job.run_dir, ws)
    end = run_to_end(resumed)
    assert isinstance(end, Finished) and end.status == "completed" and end.step == 12
    steps = [e.step for e in read_events(job.run_dir / "events.jsonl") if isinstance(e, Progress)]
    assert steps == list(range(1, 13))  # the resumed half picks up at step 6


def test_exception_inside_training_becomes_a_failed_event(demo_model_dir, ws):
    from transformers import TrainerCallback

    class Boom(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 2:  # the third step crashes after two were done
                raise RuntimeError("simulated crash")

    job = TrainingJob(palace_config(demo_model_dir, max_steps=10), ws, callbacks=[Boom()])
    end = run_to_end(job)
    assert isinstance(end, Failed) and "simulated crash" in end.message and end.step == 2
    error_log = job.run_dir / "error.log"
    assert job.state == "failed" and "simulated crash" in error_log.read_text()
    assert job.events.last(Log).message == f"Details of the failure: {error_log}"


def test_running_out_of_memory_says_which_settings_to_lower(demo_model_dir, ws):
    from transformers import TrainerCallback

    class OutOfMemory(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    end = run_to_end(TrainingJob(palace_config(demo_model_dir, max_steps=3), ws, callbacks=[OutOfMemory()]))
    assert isinstance(end, Failed)
    assert "out of memory during training" in end.message and "per_device_train_batch_size" in end.message
    assert "训练时显存（或内存）不足" in end.text.render("zh")


def test_bad_data_fails_with_the_data_message(demo_model_dir, ws, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"instruction": "hi"}]', encoding="utf-8")
    end = run_to_end(TrainingJob(palace_config(demo_model_dir, data_files=[str(bad)]), ws))
    assert isinstance(end, Failed) and "bad.json" in end.message and "output" in end.message


def test_one_job_at_a_time(demo_model_dir, ws):
    slot = JobSlot()
    job = slot.launch(lambda: TrainingJob(palace_config(demo_model_dir, max_steps=200, run_name="first"), ws))
    try:
        with pytest.raises(JobError, match=r"already in progress \(first\)"):
            slot.launch(lambda: TrainingJob(palace_config(demo_model_dir, max_steps=1), ws))
    finally:
        job.stop()
        job.join(120)
    assert job.state == "stopped"
    second = slot.launch(lambda: TrainingJob(palace_config(demo_model_dir, max_steps=1), ws))
    assert second.join(120) and second.state == "completed"


def test_job_state_machine(demo_model_dir, ws, tmp_path):
    job = TrainingJob(palace_config(demo_model_dir, max_steps=1), ws)
    assert job.state == "pending"
    run_to_end(job)
    assert job.state == "completed" and not job.is_active
    with pytest.raises(JobError, match="already been started"):
        job.start()
    with pytest.raises(JobError, match="no config.yaml"):
        TrainingJob.resume(tmp_path, ws)
    with pytest.raises(JobError, match="already completed all 1 steps"):
        TrainingJob.resume(job.run_dir, ws)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.yaml").write_bytes((job.run_dir / "config.yaml").read_bytes())
    with pytest.raises(JobError, match="no checkpoint"):
        TrainingJob.resume(fresh, ws)


def test_a_past_run_times_the_next_one_like_it(trained_run, demo_model_dir):
    from lora_studio.runs import list_runs, measured_pace

    runs = list_runs(trained_run.workspace)
    pace, run = measured_pace(palace_config(demo_model_dir, max_steps=1000, learning_rate=1e-4), runs)
    progress = [e for e in read_events(trained_run.run_dir / "events.jsonl") if isinstance(e, Progress)]
    assert run == "palace" and 0 < pace < progress[-1].elapsed / 299  # the slow first step is left out
    assert measured_pace(palace_config(demo_model_dir, per_device_train_batch_size=2), runs) is None


def test_a_validation_split_reports_its_loss(demo_model_dir, ws):
    from lora_studio.events import Evaluation

    job = TrainingJob(palace_config(demo_model_dir, val_size=0.2, max_steps=10, save_steps=5), ws)
    assert isinstance(run_to_end(job), Finished)
    evaluations = [e for e in read_events(job.run_dir / "events.jsonl") if isinstance(e, Evaluation)]
    assert [e.step for e in evaluations] == [5, 10] and all(e.eval_loss > 0 for e in evaluations)
