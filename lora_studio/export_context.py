"""What every export target is handed: the run, the adapter, where to write, and how to report.

`export.ExportJob` builds one `ExportContext` per export and calls the target's builder
(`build_merged`, `build_gguf`, `build_ollama`, `build_space`) with it. A builder writes only under
`ctx.staging`; the job renames the staging folder into place when the builder and the proof are done,
so an export that stopped half way never looks complete. `ctx.merged()` gives the merged model folder
(built once per export, in a scratch folder beside the staging one), which the GGUF converter reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .config import RunConfig
    from .i18n import Msg
    from .templates import ChatRenderer
    from .workspace import Workspace


@dataclass
class ExportContext:
    request: Any                          # export.ExportRequest
    workspace: "Workspace"
    config: "RunConfig"                   # the run's settings (config.yaml)
    adapter: Path                         # the adapter folder being exported
    staging: Path                         # the target writes here; renamed to the export folder when whole
    renderer: "ChatRenderer"              # the run's chat renderer (template, switches, stop tokens)
    trust_remote_code: bool = False       # the user's consent in this session
    log: Callable[["Msg"], None] = print  # one line for the job's log
    progress: Callable[[str, int, int], None] = lambda stage, done, total: None  # (stage key, done, total)
    check_stop: Callable[[], None] = lambda: None  # raises when the user stopped the export
    make_merged: Callable[["ExportContext"], Path] | None = None  # export_merged.build_merged_into scratch
    _merged: Path | None = field(default=None, repr=False)

    def merged(self) -> Path:
        """The merged model folder (safetensors, tokenizer, template), built on first use."""
        if self._merged is None:
            if self.make_merged is None:
                from .export_merged import merged_scratch

                self._merged = merged_scratch(self)
            else:
                self._merged = self.make_merged(self)
        return self._merged
