"""The studio's words: a thin adapter from the message catalogue (`lora_studio.i18n`) to Gradio.

There is one source of text, the catalogue (locale/ui.yaml for the studio's own words, the settings'
field metadata for their labels and help), reached two ways:

- static labels are `gr.I18n` keys, `labels("ui.tab_model")`, that the browser translates in its own
  language (or in the one forced with --lang);
- texts a handler composes at run time (status lines, tables, toasts) are rendered in the request's
  language: `say(key, language_of(request, studio.lang), **params)`.

Gradio translates labels, button texts and Markdown values, but not table headers, plot titles or
dropdown choice labels: those are handler texts, filled in when the page loads.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from .. import i18n as catalogue

# Browser locales that get each language's words (svelte-i18n falls back from en-US to en itself).
LOCALES = MappingProxyType({"en": ("en",), "zh": ("zh", "zh-CN", "zh-Hans", "zh-TW", "zh-Hant")})
# The catalogue areas Gradio shows as labels. Texts with {fields} are for handlers: the browser's
# ICU formatter would read the braces as its own placeholders.
LABEL_AREAS = ("ui.", "field.", "help.", "compare.", "chat.", "demo.", "evaluation.", "launch.", "export_ui.")


def table(lang: str) -> dict[str, str]:
    """Every label key and its text in `lang`."""
    words = {}
    for key in catalogue.keys():
        texts = catalogue.entry(key)
        if key.startswith(LABEL_AREAS) and not any("{" in value for value in texts.values()):
            words[key] = catalogue.text(key, lang)
    return words


class Labels:
    """The app's `gr.I18n`, callable with a catalogue key; an unknown key fails while the page is built."""

    def __init__(self, forced: str | None = None):
        import gradio as gr

        translations = {}
        for lang, locales in LOCALES.items():
            words = table(forced or lang)
            for locale in locales:
                translations[locale] = words
        self.known = frozenset(words)
        self.gradio = gr.I18n(**translations)

    def __call__(self, key: str):
        if key not in self.known:
            raise KeyError(f"'{key}' is not a label in the catalogue (a text with fields is for handlers)")
        return self.gradio(key)


def language_of(request, forced: str | None = None) -> str:
    """'zh' or 'en' for a handler's texts: the forced language, else the browser's Accept-Language."""
    if forced:
        return forced
    headers = getattr(request, "headers", None) or {}
    return catalogue.language_from_header(headers.get("accept-language", "") if hasattr(headers, "get") else "")


def say(key: str, lang: str, /, **params: Any) -> str:
    """A catalogue text in `lang` (the one way handlers word things)."""
    return catalogue.text(key, lang, **params)


def clock(seconds: float) -> str:
    """A duration as a clock reads: 4:05, or 1:02:03 from an hour on."""
    seconds = int(seconds or 0)
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else \
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
