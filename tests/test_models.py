"""Finding a model in the workspace, and the one chat renderer every caller gets for it."""

from __future__ import annotations

import json

import pytest

from lora_studio import models
from lora_studio.config import RunConfig
from lora_studio.errors import ModelError

SYSTEM = "现在你要扮演皇帝身边的女人--甄嬛"
CONVERSATION = [{"role": "user", "content": "你是谁？"}, {"role": "assistant", "content": "臣妾甄嬛。"}]


def test_a_hub_id_resolves_to_its_folder_in_the_given_workspace(ws, tmp_path):
    folder = ws.models / models.hub_folder_name("Qwen/Qwen2.5-0.5B-Instruct")
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    assert models.resolve_model_path("Qwen/Qwen2.5-0.5B-Instruct", ws) == folder
    assert models.read_model_config(folder) == {"model_type": "qwen2"}
    with pytest.raises(ModelError) as caught:
        models.resolve_model_path("Qwen/Qwen3-0.6B", ws)
    assert caught.value.render("en") == ("Qwen/Qwen3-0.6B: this model is not downloaded yet. Run: python studio.py "
                                         "download Qwen/Qwen3-0.6B  (or use the studio's Model tab).")
    assert caught.value.render("zh") == ("Qwen/Qwen3-0.6B：这个模型还没有下载。请运行：python studio.py download "
                                         "Qwen/Qwen3-0.6B（或在工作室的“模型”页下载）。")
    with pytest.raises(ModelError, match="model folder not found"):
        models.resolve_model_path(str(tmp_path / "nowhere"), ws)


def test_renderer_for_builds_the_renderer_load_uses(demo_model_dir, ws):
    import torch

    config = RunConfig(model_name_or_path=str(demo_model_dir), system_prompt=SYSTEM)
    loaded = models.load(config, ws)
    for system_prompt in (None, "你是华妃。"):
        alone = models.renderer_for(config, ws, system_prompt)
        used = models.load(config, ws, system_prompt).renderer if system_prompt else loaded.renderer
        assert type(alone) is type(used)
        assert (alone.chat_template, alone.system_prompt, alone.stop_token_ids) == \
            (used.chat_template, used.system_prompt, used.stop_token_ids)
        assert alone.system_prompt == (system_prompt or SYSTEM)
        a, b = alone.encode_example(CONVERSATION), used.encode_example(CONVERSATION)
        assert (a.input_ids, a.labels) == (b.input_ids, b.labels)
        assert alone.encode_prompt(CONVERSATION[:1]) == used.encode_prompt(CONVERSATION[:1])
    assert loaded.tokenizer is loaded.renderer.tokenizer
    assert loaded.model.dtype == torch.float32  # 'auto' on a CPU, as runtime.torch_dtype decides


def test_a_broken_config_json_is_a_model_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError) as caught:
        models.read_model_config(tmp_path)
    assert caught.value.render("en").startswith(f"{tmp_path / 'config.json'}: config.json is not valid JSON (")
    assert "config.json 不是有效的 JSON：" in caught.value.render("zh")
