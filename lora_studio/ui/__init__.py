"""The studio web app (Gradio). The only part of LoRA Studio that imports gradio.

`app.build_app(Studio(workspace))` makes the gr.Blocks; `cli.register` adds the `studio` command. Each
tab is one module (tab_model, tab_data, tab_params, tab_train, tab_chat) that builds its components and
wires its handlers, which only call the library. Every word a person reads comes from the message
catalogue (locale/ui.yaml, see i18n.py), in the reader's language.

What a page may reach is guarded in three modules: paths.py checks every path a handler is given
against the studio's roots (lora_studio/roots.py), uploads.py checks an upload before it is kept,
and access.py slows down failed logins and keeps each user's jobs theirs.
"""
