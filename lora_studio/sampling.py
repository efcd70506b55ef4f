"""SamplingConfig: the one list of chat decoding settings, shared by both panes, the CLI and the API.

Like RunConfig, each field's metadata carries its label, help text (English and Chinese) and bounds;
`python studio.py chat` makes its flags from it and the chat tab its sliders. Built by keyword only,
so reordering the fields can never swap `top_p` and `top_k`. The defaults are Index-1.9B-Chat's
official sampling.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field

from .settings import check_mapping, setting


@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    max_new_tokens: int = field(default=256, metadata=setting(
        "sampling", "Longest answer, in tokens.", "回答最长多少个 token。", "最大生成长度",
        label="Max new tokens", min=1, max=4096, step=1))
    temperature: float = field(default=0.3, metadata=setting(
        "sampling", "Randomness of the answer; 0 always picks the likeliest token (greedy).",
        "回答的随机程度；0 表示总选概率最高的 token（贪心）。", "温度", label="Temperature",
        min=0.0, max=2.0, step=0.05, widget="slider"))
    top_p: float = field(default=0.8, metadata=setting(
        "sampling", "Sample only from the likeliest tokens whose probabilities add up to this.",
        "只从累计概率达到此值的最可能 token 中采样。", "Top-p", label="Top-p", min=0.0, max=1.0, step=0.05,
        widget="slider"))
    top_k: int = field(default=5, metadata=setting(
        "sampling", "Sample only from this many likeliest tokens (0 = no limit).",
        "只从概率最高的这么多个 token 中采样（0 表示不限）。", "Top-k", label="Top-k", min=0, max=1000, step=1))
    repetition_penalty: float = field(default=1.1, metadata=setting(
        "sampling", "Above 1 makes repeating earlier tokens less likely.", "大于 1 时降低重复已出现 token 的概率。",
        "重复惩罚", label="Repetition penalty", min=1.0, max=2.0, step=0.05, widget="slider"))
    seed: int = field(default=42, metadata=setting(
        "sampling", "Random seed: the same seed and settings give the same answers.",
        "随机种子：相同的种子和设置得到相同的回答。", "随机种子", label="Seed", min=0, max=2**32 - 1, step=1))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SamplingSetting = enum.StrEnum("SamplingSetting", {f.name: f.name for f in dataclasses.fields(SamplingConfig)})


def sampling_from_dict(values: dict, where: str = "sampling") -> SamplingConfig:
    """A SamplingConfig from a mapping (CLI flags, API values): unknown keys and bad values are errors."""
    return SamplingConfig(**check_mapping(SamplingConfig, values, where))
