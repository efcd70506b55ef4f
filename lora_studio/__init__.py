"""LoRA Studio: point-and-click LoRA fine-tuning of chat models, with a library and CLI underneath.

The core (`config`, `data`, `templates`, `models`, `training`, `chat`, `hub`) never imports gradio;
only `lora_studio.ui` does.
"""

__version__ = "0.1.0"
