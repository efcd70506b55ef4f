"""The message catalogue: one key, two languages, parameters, and messages that travel through events."""

import pytest

from lora_studio.errors import ConfigError, describe
from lora_studio.events import Failed, Log, event_from_json
from lora_studio.i18n import Msg, language_from_env, language_from_header, msg, text


def test_a_message_renders_in_each_language_with_its_parameters():
    message = msg("config.unknown_key", key="lora_rank")
    assert message.render("en") == "unknown setting 'lora_rank'"
    assert message.render("zh") == "未知的设置项 'lora_rank'"
    assert text("status.completed", "zh") == "已完成" and text("status.completed", "en") == "completed"


def test_an_unknown_key_fails_where_the_message_is_made():
    with pytest.raises(KeyError, match="no message 'config.no_such_thing'"):
        msg("config.no_such_thing")


def test_errors_read_as_sentences_in_both_languages():
    error = ConfigError(msg("config.unknown_key", key="lora_rank"), "--set", msg("config.did_you_mean", name="lora_alpha"))
    assert error.render("en") == "--set: unknown setting 'lora_rank'. Did you mean 'lora_alpha'?"
    assert error.render("zh") == "--set：未知的设置项 'lora_rank'。你是不是想写 'lora_alpha'？"
    assert str(error) == error.render("en")


def test_an_error_needs_catalogue_messages():
    with pytest.raises(TypeError):
        ConfigError("a plain English string")


def test_messages_survive_the_event_file_and_render_later_in_another_language():
    error = ConfigError(msg("config.out_of_range", key="r", value=0, min=1, max=1024), "run.yaml")
    failed = event_from_json(Failed(text=describe(error), step=3).to_json())
    assert failed.text.render("zh") == "run.yaml：'r' 为 0，超出允许范围 [1, 1024]。"
    assert failed.message == "run.yaml: 'r' is 0, outside the allowed range [1, 1024]."
    logged = event_from_json(Log(text=msg("status.stopped")).to_json())
    assert logged.text.render("zh") == "已停止"


def test_events_written_before_the_catalogue_still_show_their_text():
    old = event_from_json({"kind": "log", "message": "Loading model demo-tiny", "level": "info", "time": 1.0})
    assert old.text.render("zh") == "Loading model demo-tiny"


def test_a_bug_is_an_internal_error_with_its_first_line():
    message = describe(TypeError("unsupported operand\nmore detail"))
    assert message.render("en").startswith("Internal error: TypeError: unsupported operand.")
    assert "more detail" not in message.render("en") and "内部错误" in message.render("zh")


@pytest.mark.parametrize("environ,lang", [
    ({"LANG": "zh_CN.UTF-8"}, "zh"), ({"LANG": "en_US.UTF-8"}, "en"), ({}, "en"), ({"LANG": "C"}, "en"),
    ({"LC_ALL": "zh_TW.UTF-8", "LANG": "en_US.UTF-8"}, "zh"), ({"LANGUAGE": "en:zh", "LANG": "zh_CN"}, "en"),
])
def test_the_command_line_language_follows_the_locale(environ, lang):
    assert language_from_env(environ) == lang


def test_the_browser_language_picks_the_first_one_we_have():
    assert language_from_header("zh-CN,zh;q=0.9,en;q=0.8") == "zh"
    assert language_from_header("fr-FR,en;q=0.5,zh;q=0.3") == "en"
    assert language_from_header("") == "en"


def test_msg_round_trips_nested_messages():
    nested = Msg("errors.raw", {"text": msg("status.failed")})
    assert Msg.from_json(nested.to_json()).render("zh") == "失败"
