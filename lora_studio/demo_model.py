"""The built-in demo model 'demo-tiny': a tiny chat model the studio builds itself, offline, in seconds.

It exists so the offline demo and every end-to-end test have a real causal LM with a real tokenizer and
chat template without downloading anything. The build is deterministic: a byte-level BPE tokenizer is
trained on `demo_corpus.txt` (text written for this project) plus, when present, the text of
`data/huanhuan_sample.json`; a two-layer Llama is created from config and all its weights are trained
briefly on that text. A randomly initialised model cannot be LoRA-tuned into answers; this short
pre-training is what lets LoRA learn on top of it. The sample's question -> answer pairs are never
shown together, so the base model does not know them and a LoRA run visibly changes its answers.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .errors import ModelError
from .i18n import Msg, msg
from .workspace import Workspace

Progress = Callable[[Msg], None]  # gets each step of a build as a message; the caller renders it

DEMO_MODEL_NAME = "demo-tiny"
CORPUS_FILE = Path(__file__).with_name("demo_corpus.txt")
SAMPLE_FILE = Path(__file__).resolve().parent.parent / "data" / "huanhuan_sample.json"
# Written last into a finished build; a folder without it (or from another recipe) gets rebuilt.
BUILD_FILE = "demo_build.json"

END_OF_TEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)
# System prompts for the chat-format part of pre-training: the model learns the format, not one persona.
PRETRAIN_SYSTEMS = ("", "你是宫里的一名宫女。", "You are a helpful servant in the palace.")


@dataclass(frozen=True)
class DemoRecipe:
    """Everything that decides the demo model's bytes; changing any value rebuilds old copies."""

    version: int = 1
    # Measured on one CPU thread: ~16 s to build, pre-training loss 7.6 -> 0.3; LoRA r=8 then learns
    # 24/24 short new answers in 300 steps and 94/102 answers of the Zhen Huan sample in 320 steps.
    # hidden 96-128, a smaller learning rate or a higher final loss learned the sample far worse (0-41).
    vocab_size: int = 2000
    hidden_size: int = 64
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    max_position_embeddings: int = 1024
    seed: int = 1234
    steps: int = 400
    batch_size: int = 16
    seq_len: int = 64
    learning_rate: float = 8e-3
    warmup_steps: int = 20


RECIPE = DemoRecipe()


def demo_model_path(workspace: Workspace) -> Path:
    return workspace.models / DEMO_MODEL_NAME


def is_complete(path: Path, recipe: DemoRecipe | None = None) -> bool:
    """True when `path` holds a finished build of this recipe."""
    recipe = recipe or RECIPE
    try:
        built = json.loads((Path(path) / BUILD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return built.get("recipe") == asdict(recipe) and (Path(path) / "model.safetensors").is_file()


def ensure_demo_model(workspace: Workspace, progress: Progress | None = None) -> Path:
    """The demo model's folder in the workspace, built first if it is missing."""
    target = demo_model_path(workspace)
    if is_complete(target):
        return target
    # The studio warms it up in one thread while a page, or a CLI command, may ask for it too:
    # whoever comes second waits for the first build instead of making another.
    with _build_lock(target):
        return build_demo_model(target, progress=progress)


def build_demo_model(target: Path, force: bool = False, progress: Progress | None = None) -> Path:
    """Build the demo model into `target` and return it.

    An existing complete build is returned at once unless `force`. The model is written into a
    temporary sibling folder and renamed into place, so an interrupted build never leaves half a model.
    """
    target = Path(target)
    say = progress or (lambda _message: None)
    if not force and is_complete(target):
        return target
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.building-"))
        _build_into(tmp / "model", RECIPE, say)
        _move_into_place(tmp / "model", target)
    except OSError as exc:
        raise ModelError(msg("models.demo_write_failed", detail=exc.strerror or str(exc)), str(target),
                         msg("models.demo_write_failed_fix")) from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    say(msg("models.demo_ready", path=str(target)))
    return target


@contextmanager
def _build_lock(target: Path):
    """Hold a lock file beside `target` (across threads and processes where the OS offers flock)."""
    try:
        import fcntl
    except ImportError:  # Windows: builds may then run twice, each still swapped in whole
        yield
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _move_into_place(tmp: Path, dest: Path) -> None:
    """Swap the finished build in; only folder names change, so nobody ever sees half a model."""
    if dest.exists():
        old = tmp.parent / "old"  # inside the build's own temporary folder, removed with it
        dest.rename(old)
    try:
        tmp.rename(dest)
    except OSError:
        if not is_complete(dest):  # unless another process just finished the same (identical) build
            raise


# --- text ----------------------------------------------------------------------------------------
def read_corpus(path: Path = CORPUS_FILE) -> tuple[list[str], list[tuple[str, str]]]:
    """The corpus as (prose passages, chat exchanges); see the header of demo_corpus.txt."""
    passages, exchanges, lines = [], [], []
    for raw in path.read_text(encoding="utf-8").splitlines() + [""]:
        line = raw.strip()
        if line.startswith("#"):
            continue
        if "||" in line:
            question, answer = (part.strip() for part in line.split("||", 1))
            exchanges.append((question, answer))
        elif line:
            lines.append(line)
        if not line and lines:
            passages.append("\n".join(lines))
            lines = []
    return passages, exchanges


def read_sample(path: Path = SAMPLE_FILE) -> tuple[list[str], list[str]]:
    """The sample's questions and answers as two separate lists; empty when the file is absent."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [], []
    if not isinstance(records, list):
        return [], []
    records = [r for r in records if isinstance(r, dict)]
    questions = [str(r.get("instruction", "")).strip() for r in records]
    answers = [str(r.get("output", "")).strip() for r in records]
    return [q for q in questions if q], [a for a in answers if a]


def _chunks(items: list[str], size: int) -> list[str]:
    return ["\n".join(items[i:i + size]) for i in range(0, len(items), size)]


def render_chatml(messages: list[dict]) -> str:
    """A conversation in the demo model's own chat template (needs no tokenizer, so BPE can learn it)."""
    import jinja2

    return jinja2.Template(CHATML_TEMPLATE).render(messages=messages, add_generation_prompt=False)


def pretraining_documents(rng: random.Random) -> list[str]:
    """Plain-text documents, and the corpus exchanges rendered as ChatML conversations.

    The sample's answers and its questions go in as separate shuffled lists of lines, so the base model
    learns their words but never which answer belongs to which question: that is LoRA's job.
    """
    passages, exchanges = read_corpus()
    questions, answers = read_sample()
    rng.shuffle(questions)
    rng.shuffle(answers)
    documents = passages + _chunks(answers, 6) + _chunks(questions, 8)
    for i in range(0, len(exchanges), 2):
        messages = [{"role": "system", "content": PRETRAIN_SYSTEMS[i // 2 % len(PRETRAIN_SYSTEMS)]}]
        for question, answer in exchanges[i:i + 2]:
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        if not messages[0]["content"]:
            messages = messages[1:]
        documents.append(render_chatml(messages))
    rng.shuffle(documents)
    return documents


# --- tokenizer -----------------------------------------------------------------------------------
def train_tokenizer(texts: list[str], recipe: DemoRecipe):
    """A byte-level BPE tokenizer (any text round-trips) with ChatML special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    # trim_offsets=False keeps character offsets exact; the chat renderer locates answers by them.
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=recipe.vocab_size, special_tokens=[END_OF_TEXT, IM_START, IM_END],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token=END_OF_TEXT, pad_token=END_OF_TEXT,
        extra_special_tokens=[IM_START, IM_END], clean_up_tokenization_spaces=False,
        model_max_length=recipe.max_position_embeddings)
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


# --- model ---------------------------------------------------------------------------------------
def _create_model(tokenizer, recipe: DemoRecipe):
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    eos, im_end = tokenizer.convert_tokens_to_ids(END_OF_TEXT), tokenizer.convert_tokens_to_ids(IM_END)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size, num_hidden_layers=recipe.num_hidden_layers,
        num_attention_heads=recipe.num_attention_heads, num_key_value_heads=recipe.num_attention_heads,
        max_position_embeddings=recipe.max_position_embeddings, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=eos, pad_token_id=eos)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=[im_end, eos], pad_token_id=eos)
    return model


def _pretrain(model, token_ids: list[int], recipe: DemoRecipe, say: Progress) -> tuple[float, float]:
    """Next-token training of all weights on random windows of the token stream; returns first/last loss."""
    import torch

    stream = torch.tensor(token_ids, dtype=torch.long)
    windows = torch.Generator().manual_seed(recipe.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, recipe))
    model.train()
    first = last = float("nan")
    for step in range(recipe.steps):
        starts = torch.randint(0, len(stream) - recipe.seq_len, (recipe.batch_size,), generator=windows)
        batch = torch.stack([stream[s:s + recipe.seq_len] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        last = loss.item()
        first = last if step == 0 else first
        if (step + 1) % 100 == 0 or step == 0:
            say(msg("models.demo_step", step=step + 1, steps=recipe.steps, loss=last))
    model.eval()
    return first, last


def _lr_factor(step: int, recipe: DemoRecipe) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < recipe.warmup_steps:
        return (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def _build_into(folder: Path, recipe: DemoRecipe, say: Progress) -> None:
    import torch

    started = time.perf_counter()
    threads = torch.get_num_threads()
    # One thread: the bytes come out the same on every machine, and on shared cores it is also the
    # fastest for a model this small. fork_rng keeps the caller's random state untouched.
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            documents = pretraining_documents(random.Random(recipe.seed))
            say(msg("models.demo_tokenizer", vocab=recipe.vocab_size, documents=len(documents)))
            tokenizer = train_tokenizer(documents, recipe)
            ids = []
            for document in documents:
                ids += tokenizer(document + END_OF_TEXT, add_special_tokens=False)["input_ids"]
            model = _create_model(tokenizer, recipe)
            params = sum(p.numel() for p in model.parameters())
            say(msg("models.demo_pretraining", millions=params / 1e6, tokens=len(ids), steps=recipe.steps))
            first, last = _pretrain(model, ids, recipe, say)
    finally:
        torch.set_num_threads(threads)
    folder.mkdir(parents=True)
    _save_quietly(model, folder)
    tokenizer.save_pretrained(folder)
    seconds = time.perf_counter() - started
    used_sample = bool(read_sample()[1])
    _write_model_card(folder, recipe, params, len(ids), (first, last), used_sample)
    info = {"recipe": asdict(recipe), "parameters": params, "tokens": len(ids),
            "loss_first": round(first, 4), "loss_last": round(last, 4), "used_sample": used_sample}
    (folder / BUILD_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    say(msg("models.demo_built", seconds=seconds, first=first, last=last))


def _write_model_card(folder: Path, recipe: DemoRecipe, params: int, tokens: int,
                      losses: tuple[float, float], used_sample: bool) -> None:
    sample = ("\n  and the answers and, separately, the questions of data/huanhuan_sample.json"
              if used_sample else "")
    (folder / "README.md").write_text(f"""# demo-tiny

LoRA Studio's built-in demo model, built on this machine by lora_studio/demo_model.py (rebuild it with
`python studio.py demo-model --force`). It is not a useful language model: it exists so the studio can
be tried and tested offline in minutes on a CPU.

- Llama architecture, {recipe.num_hidden_layers} layers, hidden size {recipe.hidden_size}, \
{recipe.num_attention_heads} heads, {params:,} parameters, float32, tied embeddings.
- Byte-level BPE tokenizer ({recipe.vocab_size} tokens) with the ChatML chat template
  (`<|im_start|>role\\n...<|im_end|>`); generation stops at `<|im_end|>` or `<|endoftext|>`.
- Pre-trained for {recipe.steps} steps ({tokens:,} tokens, loss {losses[0]:.2f} -> {losses[1]:.2f}) on
  lora_studio/demo_corpus.txt (text written for LoRA Studio){sample}.
- Deterministic: the same recipe and text give the same bytes.

本模型是 LoRA Studio 自带的离线演示小模型，仅用于体验和测试 LoRA 微调流程，不具备实际的语言能力。
""", encoding="utf-8")


def _save_quietly(model, folder: Path) -> None:
    """save_pretrained without its "Writing model shards" bar, which would tear our progress lines."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(folder)
    finally:
        if shown:
            hf_logging.enable_progress_bar()
