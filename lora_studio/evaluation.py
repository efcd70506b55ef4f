"""EvalJob: every checkpoint of a run (and the base model) answers the probe set greedily; held-out metrics.

    job = EvalJob(EvalRequest(run_dir, checkpoints="all", metrics=True), workspace).start()
    ... poll job.events (EvalProgress, Log, then Finished or Failed) ...

The job loads its own copy of the base model in its own `ChatEngine`: it never touches the model a
training job is updating, nor the one the studio's chat serves. Adapters attach to that copy by name,
so each checkpoint costs its LoRA weights, not another base model. Answers are greedy
(`probing.greedy_ids`: argmax, the chat template's stop tokens, `max_new_tokens`), with the run's own
system prompt, so they are reproducible.

Which models answer (`probes.targets`): always the base first, then the checkpoints the request names
("all": every whole checkpoint by step, plus the final adapter/ only when its weights differ from
every checkpoint's, e.g. after early stopping; "best": the one marked best; "N,M": checkpoint-N,
checkpoint-M, or names). Answers go to `probes.jsonl` one at a time (probes.py), so the grid fills as
the job runs.

With `metrics`, each model also gets (metrics.py has the definitions), written to `metrics.json`
keyed by checkpoint name after each model, atomically:
- with a validation split (val_size > 0; the same `data.select_records` split training used):
  perplexity over all validation examples' assistant tokens; ROUGE-L (mean) and corpus chrF of
  greedy answers to the first VALIDATION_LIMIT validation prompts against their references; the best
  and worst of those samples;
- persona: share of probe answers in character (persona_markers / leakage_words), mean length, distinct-2;
- control: the answers to config.control_prompts; for a checkpoint, the share that differ from the
  base's and the chrF between its answers and the base's (100: unchanged).

"Between saves" (`follow`) evaluates each checkpoint while the training run is still writing the
next one. It needs a GPU: on a CPU the two would share the same cores and slow training down, so it
is refused there. `evaluation_auto.AutoEvaluation` starts an EvalJob when a training run ends, or
as it starts.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from . import metrics as m
from . import probes
from .config import load_yaml
from .errors import ConfigError, DataError, JobError, ModelError
from .events import EvalProgress, EventLog, Finished, Log, Progress
from .files import write_text_atomic
from .i18n import msg
from .jobs import Job
from .sampling import SamplingSetting

METRICS_FILE = "metrics.json"
DEFAULT_MAX_NEW_TOKENS = 128
MAX_NEW_TOKENS = 4096
VALIDATION_LIMIT = 64  # validation prompts answered per model (perplexity reads every validation example)
SAMPLES_SHOWN = 3      # best and worst samples kept per model
FOLLOW_POLL_S = 2.0
# the numbers a metrics table shows, in order (catalogue keys evaluation.metric_<name>)
METRIC_KEYS = ("perplexity", "rouge_l", "chrf", "in_character", "mean_length", "distinct_2",
               "control_changed", "control_chrf")


@dataclass(frozen=True)
class EvalRequest:
    run: Path
    checkpoints: str = "all"          # all | best | a comma list of step numbers or names
    probes: tuple | None = None       # None: the run's probe set (probes.probe_set)
    metrics: bool = False
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    follow: bool = False              # between saves: evaluate checkpoints while the run trains (GPU only)


class _Stopped(Exception):
    """The user asked the job to stop: what was answered so far is kept."""


def between_saves_available() -> bool:
    """Whether evaluating between saves can run beside training without slowing it: a GPU is there."""
    import torch

    return torch.cuda.is_available()


def metric_text(key: str, value) -> str:
    """A metric as a table shows it: shares as percentages, 0-1 scores to 3 places; "-" when not measured."""
    if value is None:
        return "-"
    if key in ("in_character", "control_changed"):
        return f"{value:.0%}"
    if key in ("rouge_l", "distinct_2"):
        return f"{value:.3f}"
    return f"{value:.2f}" if key == "perplexity" else f"{value:.1f}"  # chrF (0-100), characters


def read_metrics(run_dir: Path) -> dict:
    """run/metrics.json as written ({} when there is none or it cannot be read)."""
    try:
        values = json.loads((Path(run_dir) / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return values if isinstance(values, dict) else {}


class EvalJob(Job):
    thread_name = "lora-studio-evaluation"

    def __init__(self, request: EvalRequest, workspace, trust_remote_code: bool = False, training: Job | None = None,
                 events: EventLog | None = None):
        """`training`: the TrainingJob a `follow` request evaluates beside; `trust_remote_code`: the user's consent."""
        super().__init__(events)
        self.request, self.workspace, self.training = replace(request, run=Path(request.run)), workspace, training
        self.trust_remote_code = trust_remote_code
        self.run_dir = self.request.run
        self.done = self.total = 0
        self.metrics: dict = {}
        self.evaluated: list[str] = []  # the models answered so far, in order

    def describe(self) -> str:
        return self.run_dir.name

    def finished_event(self, status: str) -> Finished:
        return Finished(status=status, output=str(self.run_dir / probes.ANSWERS_FILE))

    def prepare(self) -> None:
        """Refuse at once what cannot work: no run config, no such checkpoint, between saves on a CPU."""
        tokens = self.request.max_new_tokens
        if isinstance(tokens, bool) or not isinstance(tokens, int) or not 1 <= tokens <= MAX_NEW_TOKENS:
            raise ConfigError(msg("evaluation.bad_max_new_tokens", value=tokens, most=MAX_NEW_TOKENS),
                              SamplingSetting.max_new_tokens)
        self.config = load_yaml(self.run_dir / "config.yaml")
        if self.request.follow and not between_saves_available():
            raise JobError(msg("evaluation.between_saves_cpu"), self.run_dir.name, msg("evaluation.between_saves_cpu_fix"))
        if self.request.follow:  # the checkpoints come as training writes them
            self.targets = [probes.Target(probes.BASE, 0, None)]
        else:
            self.targets = probes.targets(self.run_dir, self.request.checkpoints)
        given = self.request.probes
        self.prompts = probes.checked_probes(given) if given is not None else probes.probe_set(self.run_dir, self.config)

    # --- the job -----------------------------------------------------------------------------------
    def work(self) -> str:
        from .chat import ChatEngine

        if self.request.follow and not self._training_loaded():
            return "stopped"
        self.emit(Log(msg("evaluation.loading", model=self.config.model_name_or_path)))
        self.engine = ChatEngine(self.workspace)  # its own copy of the base model, never training's or chat's
        self.engine.load_base(self.config, trust_remote_code=self.trust_remote_code)
        self.validation, self.encoded = self._validation()
        self.answers = probes.AnswerLog(self.run_dir, [t.name for t in self.targets])
        old = read_metrics(self.run_dir).get("checkpoints", {})
        self.metrics = {k: v for k, v in old.items() if k not in {t.name for t in self.targets}}
        self.total = len(self.targets) * self._units()
        try:
            for target in self.targets:
                self._evaluate(target)
            if self.request.follow:
                self._follow({t.name for t in self.targets})
        except _Stopped:
            return "stopped"
        self.emit(Log(msg("evaluation.done", count=len(self.evaluated), path=str(self.run_dir))))
        return "completed"

    def _follow(self, evaluated: set) -> None:
        """Evaluate each new checkpoint until the training job ends, then what it left (the final adapter)."""
        while True:
            training_done = self.training is None or not self.training.is_active
            for target in probes.targets(self.run_dir)[1:]:
                if target.name not in evaluated:
                    evaluated.add(target.name)
                    self.total += self._units()
                    try:
                        self._evaluate(target)
                    except ModelError as exc:  # rotated away by save_total_limit before it was attached
                        self.emit(Log(exc.to_msg(), level="warning"))
            if training_done:
                return
            for _ in range(int(FOLLOW_POLL_S / 0.1)):
                self._check_stop()
                time.sleep(0.1)

    def _training_loaded(self) -> bool:
        """Wait until the followed training job has loaded its model (its first step) or ended; False if stopped.

        Two threads loading models at once race inside transformers (lazy imports, meta-device
        initialisation): the evaluation loads its copy only once training's is in place.
        """
        while self.training is not None and self.training.is_active and self.training.events.last(Progress) is None:
            if self.stop_requested:
                return False
            time.sleep(0.1)
        return True

    def _units(self) -> int:
        per_model = len(self.prompts)
        if self.request.metrics:
            per_model += len(self.encoded) + len(self.validation[:VALIDATION_LIMIT]) + len(self.config.control_prompts)
        return per_model

    def _validation(self) -> tuple[list, list]:
        """(validation records, their encoded examples) when metrics are asked and the run held some out."""
        if not self.request.metrics:
            return [], []
        if self.config.val_size <= 0:
            self.emit(Log(msg("evaluation.no_validation"), level="warning"))
            return [], []
        from .data import select_records

        try:
            records = select_records(self.config).val
        except DataError as exc:  # the data files moved since training: the grid and persona metrics still run
            self.emit(Log(msg("evaluation.validation_unreadable", error=exc.to_msg()), level="warning"))
            return [], []
        renderer = self.engine.renderer
        encoded = [e for e in (renderer.encode_example(r.messages, self.config.cutoff_len) for r in records)
                   if e.trained_tokens]
        return records, encoded

    def _evaluate(self, target: probes.Target) -> None:
        self.emit(Log(msg("evaluation.model", name=target.name)))
        self.engine.set_adapter(target.folder)
        tuned = target.folder is not None
        answers = []
        for prompt in self.prompts:
            answer, tokens, seconds = self._answer([{"role": "user", "content": prompt}], tuned, target, "probes")
            self.answers.add(probes.ProbeAnswer(target.name, target.step, prompt, answer, tokens, round(seconds, 3)))
            answers.append(answer)
        self.evaluated.append(target.name)
        if not self.request.metrics:
            return
        entry = {"step": target.step, **self._persona(answers), **self._held_out(target, tuned),
                 **self._control(target, tuned)}
        self.metrics[target.name] = entry
        write_text_atomic(self.run_dir / METRICS_FILE, json.dumps(
            {"run": self.run_dir.name, "updated": round(time.time(), 3),
             "validation": {"examples": len(self.encoded), "answered": len(self.validation[:VALIDATION_LIMIT])},
             "checkpoints": dict(sorted(self.metrics.items(), key=lambda kv: probes.order_key(kv[0])))},
            ensure_ascii=False, indent=1) + "\n")

    # --- answers and scores ------------------------------------------------------------------------
    def _answer(self, messages: list[dict], tuned: bool, target: probes.Target, stage: str) -> tuple[str, int, float]:
        from .probing import greedy_ids

        self._check_stop()
        engine = self.engine
        started = time.perf_counter()
        prompt_ids = engine.renderer.encode_prompt(messages)  # the run's own system prompt
        with engine.adapter_context(tuned):
            ids = greedy_ids(engine.model, prompt_ids, engine.stop_token_ids, self.request.max_new_tokens)
        answer = engine.tokenizer.decode(ids, skip_special_tokens=True).rstrip("\ufffd")  # a character cut at the limit
        self._tick(target, stage)
        return answer, len(ids), time.perf_counter() - started

    def _tick(self, target: probes.Target, stage: str) -> None:
        self.done += 1
        self.emit(EvalProgress(done=self.done, total=max(self.total, self.done), checkpoint=target.name, stage=stage))

    def _check_stop(self) -> None:
        if self.stop_requested:
            raise _Stopped()

    def _persona(self, answers: list[str]) -> dict:
        config = self.config
        return {"in_character": m.persona_share(answers, config.persona_markers, config.leakage_words),
                "mean_length": m.mean_length(answers), "distinct_2": m.distinct_2(answers)}

    def _held_out(self, target: probes.Target, tuned: bool) -> dict:
        if not self.validation:
            return {}
        import torch

        nll, count = 0.0, 0
        model = self.engine.model
        for example in self.encoded:
            ids = torch.tensor([example.input_ids], device=model.device)
            with torch.inference_mode(), self.engine.adapter_context(tuned):
                logits = model(input_ids=ids, use_cache=False).logits
            part = m.token_nll(logits, torch.tensor([example.labels], device=logits.device))
            nll, count = nll + part[0], count + part[1]
            self._tick(target, "validation")
            self._check_stop()
        samples = []
        for record in self.validation[:VALIDATION_LIMIT]:
            reference = record.messages[-1]["content"]
            answer = self._answer(record.messages[:-1], tuned, target, "validation")[0]
            samples.append({"prompt": record.messages[-2]["content"], "reference": reference, "answer": answer,
                            "rouge_l": m.rouge_l(answer, reference), "chrf": m.chrf(answer, reference)})
        best, worst = m.ranked_samples(samples, SAMPLES_SHOWN)
        return {"perplexity": m.perplexity(nll, count), "val_tokens": count,
                "rouge_l": sum(s["rouge_l"] for s in samples) / len(samples) if samples else None,
                "chrf": m.corpus_chrf([s["answer"] for s in samples], [s["reference"] for s in samples]),
                "best": best, "worst": worst}

    def _control(self, target: probes.Target, tuned: bool) -> dict:
        prompts = list(self.config.control_prompts)
        answers = [self._answer([{"role": "user", "content": p}], tuned, target, "control")[0] for p in prompts]
        entry = {"control": [{"prompt": p, "answer": a} for p, a in zip(prompts, answers)],
                 "control_changed": None, "control_chrf": None}
        base = {c["prompt"]: c["answer"] for c in self.metrics.get(probes.BASE, {}).get("control", [])}
        if target.name != probes.BASE and prompts and all(p in base for p in prompts):
            entry["control_changed"] = m.changed_share([base[p] for p in prompts], answers)
            entry["control_chrf"] = m.corpus_chrf(answers, [base[p] for p in prompts])
        return entry
