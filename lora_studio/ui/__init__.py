"""The studio web app (Gradio). The only part of LoRA Studio that imports gradio.

`app.build_app(Studio())` makes the gr.Blocks; `cli.register` adds the `studio` command. Each tab is one
module (tab_model, tab_data, tab_params, tab_train, tab_chat) that builds its components and wires its
handlers, which only call the library.
"""
