"""The Train tab's launcher part: which job a start or a resume makes, and the multi-node panel.

When the settings call for a launcher (launch.plan: more than one GPU visible, or torchrun/accelerate
chosen), Start makes a `LaunchedTrainingJob` after releasing the chat model (its memory goes to the
run's processes); otherwise the in-process `TrainingJob`. With more than one node, Start only prepares
the run folder and shows each node's command; "Start node 0 here" then starts node 0 of the newest
prepared run on this machine. The tab calls `job_for` / `resume_job` / `start_or_prepare` and puts
`build`'s panel under its run list.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from ..config import RunConfig, load_yaml
from ..errors import ConfigError, JobError
from ..i18n import msg
from .i18n import language_of, say
from .state import Studio
from .tab_model import TRUST


def launch_plan(studio: Studio, config: RunConfig):
    """launch.plan for this machine, once an accelerate config the page names lies inside the roots."""
    from ..launch import plan, visible_devices

    if config.launcher in ("accelerate", "auto") and config.accelerate_config.strip():
        studio.roots.check(config.accelerate_config, ConfigError)
    return plan(config, visible_devices())


def job_for(studio: Studio, config: RunConfig, found, trusted: bool):
    """A new run's job: launched (the chat model released first) when `found` is a plan, else in-process."""
    from ..launch_job import LaunchedTrainingJob
    from ..training import TrainingJob

    if found is None:
        return TrainingJob(config, studio.workspace, trust_remote_code=trusted)
    studio.chat.release()
    return LaunchedTrainingJob(config, studio.workspace, found, trust_remote_code=trusted)


def resume_job(studio: Studio, folder: Path, trusted: bool):
    """The job that resumes `folder`: under a launcher when the run's settings need one."""
    from ..launch_job import LaunchedTrainingJob
    from ..training import TrainingJob

    checked = TrainingJob.resume(folder, studio.workspace, trust_remote_code=trusted)
    found = launch_plan(studio, checked.config)
    if found is None:
        return checked
    studio.chat.release()
    return LaunchedTrainingJob.resume_checked(checked, found)


def start_or_prepare(studio: Studio, config: RunConfig, trusted: bool, request) -> str:
    """Start's notice: the run started, or (several nodes) the prepared folder and each node's command."""
    from ..launch import prepare_nodes

    lang = language_of(request, studio.lang)
    found = launch_plan(studio, config)
    if found is not None and found.multi_node:
        run_dir, lines = prepare_nodes(config, studio.workspace, found, trust_remote_code=trusted)
        return nodes_markdown(run_dir, lines, lang)
    job = studio.start(studio.training, lambda: job_for(studio, config, found, trusted), request)
    return say("ui.started", lang, run=job.run_dir.name)


def nodes_markdown(run_dir: Path, lines: list[str], lang: str) -> str:
    blocks = [say("launch.nodes_notice", lang, nnodes=len(lines), run=f"`{run_dir.name}`")]
    for rank, line in enumerate(lines):
        blocks += [say("launch.dry_run_node", lang, rank=rank), f"```sh\n{line}\n```"]
    return "\n\n".join(blocks)


def build(labels) -> SimpleNamespace:
    ui = SimpleNamespace()
    with gr.Accordion(labels("launch.multi_node"), open=False, elem_id="multi-node"):
        gr.Markdown(labels("launch.multi_node_hint"))
        ui.start_node = gr.Button(labels("launch.start_node"), elem_id="train-start-node")
    return ui


def wire(studio: Studio, ui: SimpleNamespace, trust, notice, poll: dict) -> None:
    @studio.guarded
    def on_start_node_click(request: gr.Request, **consent):
        from ..launch import prepared_run
        from ..launch_job import LaunchedTrainingJob

        folder = prepared_run(studio.workspace)
        if folder is None:
            raise JobError(msg("launch.no_prepared_run"), msg("ui.where_training"), msg("launch.no_prepared_run_fix"))
        config = studio.checked(load_yaml(folder / "config.yaml"))
        found = launch_plan(studio, config)
        trusted = consent.get(TRUST) is True

        def make():
            studio.chat.release()
            return LaunchedTrainingJob(config, studio.workspace, found, run_dir=folder, trust_remote_code=trusted)

        job = studio.start(studio.training, make, request)
        return say("launch.node_started", language_of(request, studio.lang), run=job.run_dir.name)

    ui.start_node.click(on_start_node_click, None, notice, inputs_kwargs={TRUST: trust},
                        api_name="start_training_node").then(**poll)
