"""A tiny Qwen2 chat model on the real Qwen2 tokenizer in ../shared, pre-trained so LoRA can learn.

The model has the real vocabulary (151,936 rows, tied embeddings, grouped KV heads like Qwen2.5) but
64 hidden units and 2 layers. Pre-training every step over the full vocabulary would take minutes on one
thread, so it runs on the ~2,000 token ids the text actually uses plus one shared "other" row that
stands for all the rest, with log(rest) added to its logit. Copying that row into every unused id then
gives the full model exactly the pre-trained distribution: the softmax over 150,000 identical rows is
the softmax of the one row times their count. Words a test trains must therefore be in the text: the
tests pass their questions and answers as separate shuffled lines, so the base model knows the words but
not which answer goes with which question. The generation config names only <|endoftext|>, as the
tokenizer does, so stopping on <|im_end|> has to come from the chat template.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

QWEN2_SHAPE = dict(vocab_size=151936, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                   tie_word_embeddings=True)
STEPS, BATCH, WINDOW, LEARNING_RATE, SEED = 400, 16, 64, 3e-3, 7


def build_tiny_qwen2(tokenizer_dir: Path, dest: Path, lines: list[str] = ()) -> Path:
    """Build into `dest`; `lines` (shuffled, one per line) adds words the tests will train answers with."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from lora_studio.demo_model import pretraining_documents

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    end_of_text = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    stream: list[int] = []
    rng = random.Random(SEED)
    lines = list(lines)
    rng.shuffle(lines)
    for document in pretraining_documents(rng) + ["\n".join(lines[i:i + 6]) for i in range(0, len(lines), 6)]:
        stream += tokenizer(document, add_special_tokens=False)["input_ids"] + [end_of_text]
    used = torch.tensor(sorted(set(stream) | set(tokenizer.all_special_ids)))
    compact = torch.full((QWEN2_SHAPE["vocab_size"],), -1, dtype=torch.long)
    compact[used] = torch.arange(len(used))
    stream_t = compact[torch.tensor(stream)]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        config = Qwen2Config(**QWEN2_SHAPE, bos_token_id=None, eos_token_id=end_of_text, pad_token_id=end_of_text)
        model = Qwen2ForCausalLM(config)
        rows = torch.nn.Parameter(model.get_input_embeddings().weight.detach()[used].clone())
        other = torch.nn.Parameter(torch.zeros(config.hidden_size))
        log_rest = math.log(config.vocab_size - len(used))
        body = [p for name, p in model.named_parameters() if "embed_tokens" not in name and "lm_head" not in name]
        optimizer = torch.optim.AdamW([*body, rows, other], lr=LEARNING_RATE, weight_decay=0.0)
        windows = torch.Generator().manual_seed(SEED)
        model.train()
        for step in range(STEPS):
            for group in optimizer.param_groups:  # warm-up, then cosine to a tenth
                group["lr"] = LEARNING_RATE * min(1.0, (step + 1) / 20) * (0.55 + 0.45 * math.cos(math.pi * step / STEPS))
            starts = torch.randint(0, len(stream_t) - WINDOW, (BATCH,), generator=windows).tolist()
            batch = torch.stack([stream_t[s:s + WINDOW] for s in starts])
            hidden = model.model(inputs_embeds=rows[batch], use_cache=False).last_hidden_state[:, :-1]
            logits = torch.cat([hidden @ rows.T, (hidden @ other + log_rest).unsqueeze(-1)], dim=-1)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_([*body, rows, other], 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            weight = model.get_input_embeddings().weight
            weight.copy_(other.expand_as(weight))
            weight[used] = rows
    model.eval()
    model.generation_config = GenerationConfig(eos_token_id=end_of_text, pad_token_id=end_of_text)
    model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    return dest
