"""Issue 10 item 7: a value typed into the studio is judged by the settings check, which names the field.

Many bad values over every setting (out of range, wrong type, a fraction for a whole number, no
value, a word for a choice or a switch), sent through gradio_client as the page or a script would:
each is reported with the field's label in the reader's language and what the field allows, never
with Gradio's own "Value -1 is less than minimum value ..." or "Could not preprocess ...". The YAML
preview says a value is invalid rather than showing the last valid YAML.
"""

from __future__ import annotations

import dataclasses
import shutil

import pytest

pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402

from lora_studio.config import RunConfig  # noqa: E402
from lora_studio.i18n import text  # noqa: E402
from lora_studio.sampling import SamplingConfig  # noqa: E402
from lora_studio.settings import default_of  # noqa: E402

from .studio_fixture import close_studio, launch_studio  # noqa: E402
from .test_ui_api import settings  # noqa: E402

GRADIO_WORDS = ("Value ", "less than minimum", "greater than maximum", "Could not preprocess", "not in the list",
                "Traceback")


def bad_values(spec: dataclasses.Field) -> list:
    """Values a field refuses: past each bound, the wrong type, a fraction for a whole number, none."""
    meta, default = spec.metadata, default_of(spec)
    if meta.get("kind") == "paths":
        return [""]
    if meta.get("kind") == "modules":
        return ["", " , "]
    if meta.get("choices") is not None:
        return ["no-such-choice", 3]
    if isinstance(default, bool):
        return ["maybe", 2]
    if isinstance(default, (int, float)):
        lo, hi = meta.get("min"), meta.get("max")
        values = ["abc", None, "1e999", True]
        if lo is not None:
            values.append(lo - 1 if isinstance(default, int) else lo - 0.5)
        if hi is not None:
            values.append(hi * 2 + 1)
        if isinstance(default, int):
            values.append(max(lo or 0, 0) + 0.5)  # a fraction for a whole number
        return values
    return []


def cases(cls) -> list[tuple[str, object]]:
    return [(spec.name, value) for spec in dataclasses.fields(cls) for value in bad_values(spec)]


RUN_CASES, SAMPLING_CASES = cases(RunConfig), cases(SamplingConfig)


def label(name: str, lang: str) -> str:
    shown = text(f"field.{name}", lang)
    return name if shown == name else text("ui.field_name", lang, label=shown, name=name)


def assert_names_the_field(message: str, name: str, cls, lang: str) -> None:
    spec = {f.name: f for f in dataclasses.fields(cls)}[name]
    assert f"'{label(name, lang)}'" in message, message
    assert not any(word in message for word in GRADIO_WORDS), message
    meta = spec.metadata
    for bound in (meta.get("min"), meta.get("max")):
        if bound is not None and meta.get("choices") is None:
            assert str(bound) in message, (bound, message)  # the allowed range
    if meta.get("choices") is not None:
        assert all(str(choice) in message for choice in meta["choices"]), message


@pytest.fixture(scope="module")
def clients(tmp_path_factory, demo_model_dir):
    from lora_studio.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("inputs") / "workspace")
    shutil.copytree(demo_model_dir, ws.models / "demo-tiny")
    url, state, demo = launch_studio(ws)  # the page's language follows the browser
    yield {"en": Client(url, verbose=False, headers={"Accept-Language": "en-US"}),
           "zh": Client(url, verbose=False, headers={"Accept-Language": "zh-CN,zh;q=0.9"})}, state
    close_studio(state, demo)


def test_the_cases_cover_every_kind_of_setting():
    names = {name for name, _ in RUN_CASES}
    numbers = [f.name for f in dataclasses.fields(RunConfig)
               if isinstance(default_of(f), (int, float)) and not isinstance(default_of(f), bool)
               and f.metadata.get("choices") is None]
    assert set(numbers) <= names and len(RUN_CASES) > 120 and len(SAMPLING_CASES) > 25
    assert ("r", 1.5) in RUN_CASES and ("learning_rate", "abc") in RUN_CASES


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_bad_setting_is_named_in_the_yaml_preview(clients, lang):
    client = clients[0][lang]
    for name, value in RUN_CASES:
        yaml_text, command = client.predict(preset="demo-tiny", api_name="/settings_yaml",
                                            **{**settings(), name: value})
        assert yaml_text.startswith("# ") and command.startswith("# "), (name, value, yaml_text)
        assert "max_steps:" not in yaml_text and "learning_rate: 0.003" not in yaml_text  # no stale YAML
        assert_names_the_field(yaml_text, name, RunConfig, lang)


def test_every_bad_setting_is_one_clear_error_where_it_is_used(clients):
    client = clients[0]["en"]
    for name, value in RUN_CASES:
        with pytest.raises(Exception) as error:
            client.predict(api_name="/preflight", **{**settings(), name: value})
        message = str(error.value)
        assert message.startswith("【Setting problem】 the studio's settings: "), message
        assert message.count("【") == 1  # one message, not the same twice
        assert_names_the_field(message, name, RunConfig, "en")
    assert clients[1].training.job is None


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_bad_sampling_value_is_named_before_a_model_loads(clients, lang):
    client = clients[0][lang]
    for name, value in SAMPLING_CASES:
        with pytest.raises(Exception) as error:
            client.predict(message="你好", adapter="", model="", system="", base_history=[], tuned_history=[],
                           api_name="/chat_compare", **{name: value})
        assert_names_the_field(str(error.value), name, SamplingConfig, lang)
    assert clients[1].chat.model is None  # refused before anything was loaded


def test_integers_are_integers(clients):
    client = clients[0]["en"]
    for name in ("r", "lora_alpha", "cutoff_len", "max_steps", "save_steps"):
        for endpoint in ("/preflight", "/start_training", "/load_dataset"):
            with pytest.raises(Exception) as error:
                client.predict(api_name=endpoint, **{**settings(), name: 16.5})
            assert "must be a whole number, got 16.5" in str(error.value), str(error.value)
            assert "Allowed: a whole number" in str(error.value)
    assert clients[1].training.job is None  # r=2.5 is never trained as 2
    yaml_text, _ = client.predict(preset="demo-tiny", api_name="/settings_yaml", **{**settings(), "r": 4.0})
    assert "\nr: 4\n" in f"\n{yaml_text}" and "4.0" not in yaml_text  # 4.0 from a number box is 4
    client.predict(api_name="/preflight", **{**settings(), "r": 4.0})  # and it is accepted as 4


def test_the_yaml_preview_follows_every_change(clients):
    client = clients[0]["en"]
    shown = []
    for value in (4, -1, 16, 2.5, 32):
        yaml_text, command = client.predict(preset="demo-tiny", api_name="/settings_yaml", **{**settings(), "r": value})
        shown.append(yaml_text)
    assert "r: 4" in shown[0] and "r: 16" in shown[2] and "r: 32" in shown[4]
    assert shown[1].startswith("# ") and "'r' is -1, outside the allowed range [1, 1024]" in shown[1]
    assert shown[3].startswith("# ") and "'r' must be a whole number, got 2.5" in shown[3]
    assert "r: 4" not in shown[1] and "r: 16" not in shown[3]  # never the last valid YAML


@pytest.mark.parametrize("value,expected", [
    (-1, "'Record number' is -1, outside the allowed range [1, ∞]"), (0, "outside the allowed range [1, ∞]"),
    (2.5, "'Record number' must be a whole number, got 2.5"), ("abc", "'Record number' must be a number"),
    (None, "must be a number, got None"), (500, "there is no record 500"),
])
def test_a_record_number_is_checked_by_its_label(clients, value, expected):
    client = clients[0]["en"]
    with pytest.raises(Exception) as error:
        client.predict(record=value, **settings(), api_name="/inspect_record")
    assert expected in str(error.value) and not any(w in str(error.value) for w in GRADIO_WORDS), str(error.value)
    with pytest.raises(Exception) as error:
        clients[0]["zh"].predict(record=value, **settings(), api_name="/inspect_record")
    assert "记录编号" in str(error.value) or "没有第 500 条" in str(error.value), str(error.value)


@pytest.mark.parametrize("value", [-3, 0, 1.5, "x", None])
def test_a_page_number_is_checked_by_its_label(clients, value):
    with pytest.raises(Exception) as error:
        clients[0]["en"].predict(page=value, **settings(), api_name="/dataset_page")
    assert "'Page'" in str(error.value) and not any(w in str(error.value) for w in GRADIO_WORDS), str(error.value)
    table, page, pages = clients[0]["en"].predict(page=99, **settings(), api_name="/dataset_page")
    assert page == 6 and pages == "/ 6"  # past the end: the last page


def test_nan_and_infinity_are_not_numbers():
    from lora_studio.config import apply_overrides
    from lora_studio.errors import ConfigError

    for value in (".nan", ".inf", "-.inf", "nan", "inf"):
        with pytest.raises(ConfigError, match="must be a number"):
            apply_overrides(RunConfig(), [f"learning_rate={value}"])
