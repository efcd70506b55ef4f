"""A persona chat Space: the base model from its hub, the run's LoRA adapter, the run's chat format.

This file is the `app.py` of a Space exported by LoRA Studio (export_space.py copies it verbatim), so it
never imports lora_studio: everything it needs is in `space_config.json` beside it, written by the
export from the run: the base model's hub ids, the chat template and its switches, the persona's system
prompt, the stop token ids, the run's sampling, the probe prompts (shown as examples), and every label in
Chinese and English (made from the studio's catalogue, so the catalogue stays the one source of text).
The run's tokenizer is shipped in `tokenizer/`, so prompts tokenise exactly as in the studio.

Base model: `BASE_MODEL_PATH` (a local folder) if set; else the ModelScope id when `BASE_MODEL_SOURCE`
is "modelscope" (ms_deploy.json sets it for 创空间); else the Hugging Face id. Answers stream token by
token (TextIteratorStreamer), stop on the template's stop tokens, and the queue serves a few at once.

    pip install -r requirements.txt && python app.py
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from types import SimpleNamespace

CONFIG_FILE = "space_config.json"
LOCALES = ("zh", "en")


def load_config(folder: Path) -> dict:
    return json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))


def console_text(config: dict, key: str) -> str:
    """A label in both languages, for the console (the page picks one by the browser's language)."""
    return " / ".join(config["labels"][lang][key] for lang in LOCALES)


def base_model_location(config: dict) -> str:
    local = os.environ.get("BASE_MODEL_PATH", "").strip()
    if local:
        return local
    source = os.environ.get("BASE_MODEL_SOURCE", "").strip().lower()
    if source == "modelscope" and config["base_model_modelscope"]:
        from modelscope import snapshot_download

        return snapshot_download(config["base_model_modelscope"])
    if not config["base_model"]:
        raise SystemExit(console_text(config, "no_base_model"))
    return config["base_model"]


def load_model(folder: Path, config: dict):
    """(model with the adapter attached, tokenizer)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location = base_model_location(config)
    cuda = torch.cuda.is_available()
    precision = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
    if config["llama_config"]:  # an Index checkpoint: plain Llama once its head rows are unit length
        from transformers import LlamaConfig, LlamaForCausalLM

        model = LlamaForCausalLM.from_pretrained(location, config=LlamaConfig.from_dict(config["llama_config"]),
                                                 dtype=precision)
        head = model.get_output_embeddings().weight
        with torch.no_grad():
            head.copy_(torch.nn.functional.normalize(head.float(), dim=1).to(head.dtype))
    else:
        model = AutoModelForCausalLM.from_pretrained(location, dtype=precision)
    model = PeftModel.from_pretrained(model, str(folder / config["adapter"]))
    # generate() fills what a passed GenerationConfig leaves unset from the model's own hub defaults
    # (a sampling temperature, a repetition penalty): only the run's settings may decide an answer
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig()
    if cuda:
        model = model.to("cuda")
    return model.eval(), tokenizer


def flatten(content) -> str:
    """Gradio 6 sends history contents as lists of parts; the template wants plain text."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return "".join(flatten(part) for part in content or ())


def generation_config(tokenizer, stop_ids, max_new_tokens, temperature, top_p, top_k, repetition_penalty):
    """transformers' GenerationConfig for the run's sampling: greedy at temperature 0, as in the studio."""
    from transformers import GenerationConfig

    sampling = dict(do_sample=False)
    if temperature > 0:
        sampling = dict(do_sample=True, temperature=float(temperature), top_p=float(top_p), top_k=int(top_k))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    return GenerationConfig(max_new_tokens=int(max_new_tokens), repetition_penalty=float(repetition_penalty),
                            eos_token_id=list(stop_ids), pad_token_id=pad, **sampling)


def prompt_ids(tokenizer, config: dict, message, history, system: str):
    """The prompt's token ids ([1, n]), rendered as the studio's chat renders it (template, switches)."""
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": turn["role"], "content": flatten(turn["content"])} for turn in history or ()]
    messages.append({"role": "user", "content": flatten(message)})
    text = tokenizer.apply_chat_template(messages, chat_template=config["chat_template"], tokenize=False,
                                         add_generation_prompt=True, **config["template_kwargs"])
    return tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]


class Persona:
    """The loaded model and the run's chat format; `reply` streams one answer."""

    def __init__(self, folder: Path, config: dict):
        self.config = config
        self.model, self.tokenizer = load_model(folder, config)
        self.defaults = SimpleNamespace(**config["sampling"])

    def prompt_ids(self, message: str, history, system: str):
        return prompt_ids(self.tokenizer, self.config, message, history, system)

    def reply(self, message, history, system, *values):
        """Stream the answer; `values` are the sliders' (config["sliders"] order)."""
        import torch
        from transformers import TextIteratorStreamer

        chosen = {spec["name"]: value for spec, value in zip(self.config["sliders"], values)}
        ids = self.prompt_ids(message, history, system).to(self.model.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        config = generation_config(self.tokenizer, self.config["stop_token_ids"], **chosen)
        torch.manual_seed(int(self.defaults.seed))
        work = threading.Thread(target=self.model.generate, daemon=True, kwargs=dict(
            input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config, streamer=streamer))
        work.start()
        answer = ""
        for piece in streamer:
            answer += piece
            yield answer
        work.join()


def build_ui(persona: Persona):
    import gradio as gr

    config = persona.config
    labels = dict(config["labels"])
    labels.setdefault("zh-CN", labels["zh"])
    i18n = gr.I18n(**labels)
    inputs = [gr.Textbox(value=config["system"], label=i18n("system"), lines=2)]
    inputs += [gr.Slider(spec["min"], spec["max"], value=spec["value"], step=spec["step"], label=i18n(spec["label"]))
               for spec in config["sliders"]]
    demo = gr.ChatInterface(
        persona.reply, additional_inputs=inputs, title=i18n("title"),
        additional_inputs_accordion=gr.Accordion(label=i18n("settings"), open=False),
        examples=[[prompt] for prompt in config["examples"]] or None, cache_examples=False,
        concurrency_limit=config["concurrency"], api_name="chat")
    return demo.queue(default_concurrency_limit=config["concurrency"]), i18n


def main() -> None:
    folder = Path(__file__).resolve().parent
    config = load_config(folder)
    print(console_text(config, "loading"), flush=True)
    demo, i18n = build_ui(Persona(folder, config))
    demo.launch(i18n=i18n)


if __name__ == "__main__":
    main()
