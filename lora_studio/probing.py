"""Greedy answers of a plain transformers model, as token ids, and where two answers part.

Export's proof and evaluation compare models by their greedy answers to the run's probe prompts:
the same prompt ids (the chat renderer's), argmax decoding, stopped at the template's stop tokens.
This is the one place that decoding is written for models that are not the studio's ChatEngine.
"""

from __future__ import annotations


def greedy_ids(model, prompt_ids: list[int], stop_ids, max_new_tokens: int = 64) -> list[int]:
    """The new token ids `model` picks greedily after `prompt_ids`, without the stop token."""
    import torch
    from transformers import GenerationConfig

    stop_ids = [int(i) for i in stop_ids]
    config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=stop_ids or None,
                              pad_token_id=stop_ids[0] if stop_ids else 0)
    ids = torch.tensor([list(prompt_ids)], device=model.device)
    # transformers 5 fills whatever `config` leaves at its default from the model's own
    # generation_config (a saved repetition_penalty of 1.1 would bend "greedy"): blank it meanwhile
    saved, model.generation_config = model.generation_config, GenerationConfig()
    try:
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
    finally:
        model.generation_config = saved
    new = out[0, len(prompt_ids):].tolist()
    for index, token in enumerate(new):
        if token in stop_ids:
            return new[:index]
    return new


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first token where two answers differ (a length difference counts); None if equal."""
    for index, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return index
    return None if len(a) == len(b) else min(len(a), len(b))
