"""ChatEngine: one base model answers twice, as itself and with a LoRA adapter, side by side.

The base weights are loaded once. Adapters are attached by name to the same model, so switching
adapters never reloads the base. Both answers are decoded together, one forward pass per token with
one row per answer: peft's mixed-adapter batch applies the adapter to the tuned row only (the base row
is "__base__", what `disable_adapter()` computes), so the base weights are read once for both and the
tuned answer comes as fast as the base one. Both answers stream token by token in lockstep, with the
same sampling settings and the same seed (each pane has its own `torch.Generator`, so neither touches
the global RNG a training run may be using), and stop on the chat template's end-of-turn tokens.
Chat loads its own copy of the model: it never serves the object a training job is updating.

The adapter's strength (`strength=` of compare/answer, 0 to 1.5) scales its contribution live: each
LoRA layer's `scaling[adapter]` becomes the value peft gave it times the strength for one answer and
is put back afterwards, so nothing reloads, 1.0 is exactly the adapter as trained, 0 exactly the base
model, and every attached adapter keeps its own scaling. The base row of a mixed batch never uses it.
"""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from . import pickles
from .config import RunConfig, load_yaml
from .errors import ConfigError, ModelError, first_line
from .i18n import msg
from .sampling import SamplingConfig
from .workspace import Workspace

ZHEN_HUAN_SYSTEM_PROMPT = "现在你要扮演皇帝身边的女人--甄嬛"
STRENGTH_RANGE = (0.0, 1.5)  # adapter strength: 0 is the base model, 1 the adapter as trained


@dataclass
class PaneStats:
    tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


@dataclass
class Comparison:
    """The two answers so far; `done` once both have stopped."""
    base: str = ""
    tuned: str = ""
    done: bool = False
    stats: dict = field(default_factory=lambda: {"base": PaneStats(), "tuned": PaneStats()})
    ids: dict = field(default_factory=dict)  # "base"/"tuned" -> the answer's token ids so far (export's proof)


class _Pane:
    """One answer being decoded: its tokens, its random generator and its sampling rules."""

    def __init__(self, engine: "ChatEngine", prompt_ids: list[int], sampling: SamplingConfig, use_adapter: bool):
        import torch

        self.engine, self.sampling, self.use_adapter = engine, sampling, use_adapter
        self.device = engine.model.device
        self.generator = torch.Generator(device=self.device).manual_seed(sampling.seed)
        self.ids = torch.tensor([prompt_ids], device=self.device)
        self.next_input = self.ids
        self.new_ids: list[int] = []
        self.done = False
        self.stats = PaneStats()
        self.processors = _processors(sampling)

    def accept(self, logits, seconds: float) -> None:
        """Choose the next token from this pane's last-position logits (shape [1, vocab])."""
        import torch

        started = time.perf_counter()
        scores = self.processors(self.ids, logits.float())
        if self.sampling.temperature > 0:
            token = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=self.generator)
        else:
            token = scores.argmax(dim=-1, keepdim=True)
        token_id = int(token)
        self.stats.seconds += seconds + time.perf_counter() - started
        if token_id in self.engine.stop_token_ids:
            self.done = True
            return
        self.stats.tokens += 1
        self.new_ids.append(token_id)
        self.ids = torch.cat([self.ids, token], dim=-1)
        self.next_input = token
        if len(self.new_ids) >= self.sampling.max_new_tokens:
            self.done = True

    def text(self) -> str:
        text = self.engine.tokenizer.decode(self.new_ids, skip_special_tokens=True)
        return text.rstrip("\ufffd") if not self.done else text  # hold back half a character


class _Batch:
    """Panes decoded by one forward pass per token, sharing one KV cache, one row per pane.

    Both panes start from the same prompt and add one token per step, so their rows never need
    padding. With an adapter, peft's mixed-adapter batches apply it to the tuned row only ("__base__"
    for the other): the base weights are read once per token for both answers, and the tuned row costs
    what the base row costs plus the small LoRA product. A pane that stops leaves the cache.
    """

    def __init__(self, engine: "ChatEngine", panes: list[_Pane], mixed: bool):
        self.engine, self.panes, self.mixed = engine, panes, mixed
        self.cache = None

    def step(self) -> None:
        import torch

        live = [p for p in self.panes if not p.done]
        if not live:
            return
        started = time.perf_counter()
        kwargs = {}
        if self.mixed:
            kwargs["adapter_names"] = [self.engine.adapter_for(p.use_adapter) for p in live]
            context = nullcontext()
        else:  # one pane per batch: the adapter is switched around the call
            context = self.engine.adapter_context(live[0].use_adapter)
        with torch.inference_mode(), context:
            kwargs[self.engine.cache_argument] = self.cache
            out = self.engine.model(input_ids=torch.cat([p.next_input for p in live]), use_cache=True, **kwargs)
        self.cache = out[self.engine.cache_argument]
        seconds = time.perf_counter() - started  # each answer waited this long for its token
        for row, pane in enumerate(live):
            pane.accept(out.logits[row:row + 1, -1, :], seconds)
        if any(p.done for p in live) and not all(p.done for p in live):
            keep = [row for row, p in enumerate(live) if not p.done]
            self.cache.batch_select_indices(torch.tensor(keep, device=live[0].device))


def _processors(sampling: SamplingConfig):
    from transformers.generation.logits_process import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor,
                                                        TemperatureLogitsWarper, TopKLogitsWarper,
                                                        TopPLogitsWarper)

    chain = LogitsProcessorList()
    if sampling.repetition_penalty and sampling.repetition_penalty != 1.0:
        chain.append(RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty))
    if sampling.temperature > 0:
        chain.append(TemperatureLogitsWarper(sampling.temperature))
        if sampling.top_k:
            chain.append(TopKLogitsWarper(sampling.top_k))
        if 0 < sampling.top_p < 1:
            chain.append(TopPLogitsWarper(sampling.top_p))
    return chain


class ChatEngine:
    """Loads a base model once and answers with and without a chosen adapter."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace  # where model names are looked up
        self.model = None           # a PeftModel once an adapter is attached
        self.tokenizer = None
        self.renderer = None
        self.stop_token_ids: list[int] = []
        self.base_key: tuple | None = None
        self.adapters: dict[str, str] = {}   # adapter folder -> adapter name in the model
        self.active_adapter: str | None = None
        self.scalings: dict[str, list] = {}  # adapter name -> [(LoRA layer, the scaling peft gave it)]
        self.cache_argument = "cache"
        self.lock = threading.Lock()

    # --- loading ---------------------------------------------------------------------------------
    def load_base(self, config: RunConfig, trust_remote_code: bool = False) -> None:
        """Load the base model named by `config`, unless it is already the one loaded.

        `trust_remote_code` is the user's consent, in this session, to run code the model ships.
        """
        from . import models

        key = (str(models.resolve_model_path(config.model_name_or_path, self.workspace)), config.dtype,
               config.template, config.quantization, trust_remote_code)
        if key == self.base_key:
            return
        with self.lock:
            loaded = models.load(config, self.workspace, trust_remote_code=trust_remote_code)
            loaded.model.eval()
            self.model, self.tokenizer, self.renderer = loaded.model, loaded.tokenizer, loaded.renderer
            self.stop_token_ids = loaded.renderer.stop_token_ids
            self.base_key, self.adapters, self.active_adapter, self.scalings = key, {}, None, {}
            # transformers 5 calls the KV cache `cache`; a model's own remote code may still want the old name
            native = type(loaded.model).__module__.startswith("transformers.")
            self.cache_argument = "cache" if native else "past_key_values"

    def load_run(self, adapter_dir: Path, trust_remote_code: bool = False) -> None:
        """Load the base model a run was trained on (if not loaded yet) and attach its adapter.

        The run's config.yaml names the model; it cannot consent to its code (config.RETIRED_KEYS).
        """
        self.load_base(run_config_for(adapter_dir), trust_remote_code=trust_remote_code)
        self.set_adapter(adapter_dir)

    def release(self) -> None:
        """Drop the loaded model (and empty the GPU cache): a multi-GPU run needs the memory. The next
        chat loads it again."""
        with self.lock:
            self.model = self.tokenizer = self.renderer = None
            self.base_key, self.adapters, self.active_adapter, self.scalings = None, {}, None, {}
            self.stop_token_ids = []
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def set_adapter(self, adapter_dir: Path | None) -> None:
        """Attach (or switch to) an adapter folder; None chats with the base model only."""
        self._require_model()
        if adapter_dir is None:
            self.active_adapter = None
            return
        adapter_dir = Path(adapter_dir)
        if not (adapter_dir / "adapter_config.json").is_file():
            raise ModelError(msg("chat.no_adapter_config"), str(adapter_dir), msg("chat.no_adapter_config_fix"))
        key = str(adapter_dir.resolve())
        with self.lock:
            if key not in self.adapters:
                name = f"adapter{len(self.adapters)}"
                self._attach(adapter_dir, name)
                self.adapters[key] = name
            self.model.set_adapter(self.adapters[key])
            self.active_adapter = self.adapters[key]

    def _attach(self, adapter_dir: Path, name: str) -> None:
        from peft import PeftModel

        try:
            with pickles.explained(adapter_dir, "adapter"):  # peft reads adapter_model.bin weights-only
                if isinstance(self.model, PeftModel):
                    self.model.load_adapter(str(adapter_dir), adapter_name=name)
                else:
                    self.model = PeftModel.from_pretrained(self.model, str(adapter_dir), adapter_name=name)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelError(msg("chat.adapter_mismatch", detail=first_line(exc)), str(adapter_dir),
                             msg("chat.adapter_mismatch_fix")) from None
        self.model.eval()
        from peft.tuners.lora import LoraLayer

        self.scalings[name] = [(layer, layer.scaling[name]) for layer in self.model.modules()
                               if isinstance(layer, LoraLayer) and name in layer.scaling]

    def _scale_adapter(self, strength: float) -> None:
        """Scale the active adapter's LoRA layers to `strength` times their own scaling (1.0 restores it)."""
        for layer, own in self.scalings.get(self.active_adapter, ()) if self.active_adapter else ():
            layer.scaling[self.active_adapter] = own * strength

    def _require_model(self) -> None:
        if self.model is None:
            raise ModelError(msg("chat.no_base"), msg("chat.where"), msg("chat.no_base_fix"))

    def adapter_context(self, use_adapter: bool):
        """Where the model answers as the base: an adapter attached but switched off counts too."""
        from peft import PeftModel

        if not isinstance(self.model, PeftModel) or (use_adapter and self.active_adapter is not None):
            return nullcontext()
        return self.model.disable_adapter()

    def adapter_for(self, use_adapter: bool) -> str:
        """The adapter name of a mixed batch's row: the active adapter, or peft's "__base__"."""
        return self.active_adapter if use_adapter and self.active_adapter else "__base__"

    def _batches(self, panes: list[_Pane]) -> list[_Batch]:
        """One shared forward for all panes where peft can mix adapters in a batch, else one each."""
        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            return [_Batch(self, panes, mixed=False)]  # no adapter attached: both answers are the base's
        config = self.model.peft_config.get(self.active_adapter) if self.active_adapter else None
        if config is not None and (config.peft_type.value != "LORA" or config.use_dora):
            return [_Batch(self, [p], mixed=False) for p in panes]  # peft mixes plain LoRA only
        return [_Batch(self, panes, mixed=True)]

    # --- answering -------------------------------------------------------------------------------
    def compare(self, messages: list[dict], system_prompt: str | None = None,
                sampling: SamplingConfig | None = None,
                base_messages: list[dict] | None = None, strength: float = 1.0) -> Iterator[Comparison]:
        """Stream the base and the tuned answer to the same conversation, token by token.

        In a multi-turn chat each pane continues its own conversation: `base_messages` holds the base
        pane's (the same user turns, the base model's own earlier answers); by default both share one.
        `strength` scales the adapter in the tuned answer (STRENGTH_RANGE; 1.0 as trained).
        """
        sampling = sampling or SamplingConfig()
        strength = check_strength(strength)
        self._require_model()
        prompt = self.renderer.encode_prompt(messages, system_prompt)
        base_prompt = self.renderer.encode_prompt(base_messages, system_prompt) if base_messages else prompt
        with self.lock:
            panes = {"base": _Pane(self, base_prompt, sampling, use_adapter=False),
                     "tuned": _Pane(self, prompt, sampling, use_adapter=True)}
            result = Comparison(stats={name: pane.stats for name, pane in panes.items()},
                                ids={name: pane.new_ids for name, pane in panes.items()})
            if base_prompt == prompt:
                batches = self._batches(list(panes.values()))
            else:  # rows of different lengths would need padding: decode the panes in turn instead
                batches = [_Batch(self, [pane], mixed=False) for pane in panes.values()]
            self._scale_adapter(strength)
            try:  # a closed stream (the page left) puts the adapter's own scaling back too
                while not all(p.done for p in panes.values()):
                    for batch in batches:
                        batch.step()
                    result.base, result.tuned = panes["base"].text(), panes["tuned"].text()
                    yield result
            finally:
                self._scale_adapter(1.0)
            result.done = True
            yield result

    def answer(self, messages: list[dict], system_prompt: str | None = None,
               sampling: SamplingConfig | None = None,
               base_messages: list[dict] | None = None, strength: float = 1.0) -> tuple[str, str]:
        """Both final answers at once (the CLI and tests use this)."""
        final = Comparison()
        for final in self.compare(messages, system_prompt, sampling, base_messages, strength=strength):
            pass
        return final.base, final.tuned


def check_strength(strength) -> float:
    """The adapter strength as a float inside STRENGTH_RANGE, else a ConfigError naming the range."""
    low, high = STRENGTH_RANGE
    try:
        value = float(strength)
    except (TypeError, ValueError):
        value = float("nan")
    if not low <= value <= high:  # NaN fails too
        raise ConfigError(msg("chat.bad_strength", value=strength, min=low, max=high), msg("chat.strength_where"),
                          msg("chat.bad_strength_fix"))
    return value


def resolve_adapter_dir(path: Path) -> Path:
    """A run folder means the checkpoint its user marked best, else its final adapter, else its newest
    checkpoint (the one rule chat, the CLI, demos and exports share)."""
    from .probes import best_adapter
    from .runs import adapter_dirs

    path = Path(path).expanduser()
    if (path / "adapter_config.json").is_file():
        return path
    best = best_adapter(path) if path.is_dir() else None
    if best is not None:
        return best
    found = adapter_dirs(path) if path.is_dir() else []
    if not found:
        raise ModelError(msg("chat.no_adapter"), str(path), msg("chat.no_adapter_fix"))
    return found[0]


def run_config_file(adapter_dir: Path) -> Path | None:
    """The config.yaml of the run an adapter (or checkpoint) folder belongs to: the nearest one up to
    three folders above it (run/adapter, run/checkpoints/checkpoint-N), None when there is none."""
    adapter_dir = Path(adapter_dir)
    for folder in (adapter_dir, *adapter_dir.parents[:3]):
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    return None


def run_config_for(adapter_dir: Path) -> RunConfig:
    """The settings of the run an adapter (or checkpoint) folder belongs to."""
    found = run_config_file(adapter_dir)
    if found is None:
        raise ModelError(msg("chat.no_run_config"), str(adapter_dir), msg("chat.no_run_config_fix"))
    return load_yaml(found)
