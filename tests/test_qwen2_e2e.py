"""The end-to-end run again, on a tiny Qwen2 over the real Qwen2 tokenizer and its own ChatML template."""

import json

import pytest

from conftest import QWEN_TOKENIZER
from lora_studio.events import Finished
from lora_studio.training import TrainingJob
from qwen2_fixture import build_tiny_qwen2

from .test_training import PALACE_QA, palace_config

RECORDS = json.loads(PALACE_QA.read_text(encoding="utf-8"))[:10]


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory):
    lines = [r["instruction"] for r in RECORDS] + [r["output"] for r in RECORDS]
    return build_tiny_qwen2(QWEN_TOKENIZER, tmp_path_factory.mktemp("qwen2") / "tiny-qwen2", lines)


def test_lora_on_tiny_qwen2_reproduces_answers_and_stops_at_im_end(qwen2_dir, tmp_path, ws):
    from lora_studio.chat import ChatEngine
    from lora_studio.models import load
    from lora_studio.sampling import SamplingConfig
    from lora_studio.trainer_setup import encode_data

    data = tmp_path / "palace10.json"
    data.write_text(json.dumps(RECORDS, ensure_ascii=False), encoding="utf-8")
    config = palace_config(qwen2_dir, data_files=[str(data)], per_device_train_batch_size=5,
                           learning_rate=6e-3, max_steps=120, run_name="qwen2")

    loaded = load(config, ws)
    im_end = loaded.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert loaded.model.generation_config.eos_token_id == loaded.tokenizer.eos_token_id != im_end
    example = encode_data(config, loaded.renderer).train[0]
    trained = [t for t, label in zip(example["input_ids"], example["labels"]) if label != -100]
    assert trained[-1] == im_end  # the template's end of turn is trained, not the tokenizer's eos
    assert im_end in loaded.renderer.stop_token_ids  # ...and generation stops on it

    job = TrainingJob(config, ws).start()
    assert job.join(600)
    end = job.events.last(Finished)
    assert end is not None and end.status == "completed" and end.loss < 0.5

    engine = ChatEngine(ws)
    engine.load_run(job.run_dir / "adapter")
    greedy = SamplingConfig(max_new_tokens=48, temperature=0)
    tuned_hits = base_hits = 0
    for record in RECORDS:
        base, tuned = engine.answer([{"role": "user", "content": record["instruction"]}], sampling=greedy)
        tuned_hits += tuned == record["output"]  # exact, so generation ended right where training did
        base_hits += base == record["output"]
    assert tuned_hits >= 8 and base_hits == 0, (tuned_hits, base_hits)
