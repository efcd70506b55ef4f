"""The GGUF export: llama.cpp's own converter, fetched once; f16 GGUFs that answer like transformers.

Three tiny merged models (the demo model's Llama with its LoRA Studio BPE tokenizer, Qwen2 with the
real Qwen2 tokenizer, Index as plain Llama with SentencePiece), each with a LoRA whose B weights were
perturbed so the tuned model is not the base. The converter comes from tests/llama_cpp_fixture.py.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lora_studio import export_gguf, llama_cpp
from lora_studio.export import ExportError, ExportRequest
from lora_studio.export_context import ExportContext
from tests.conftest import QWEN_TOKENIZER
from tests.llama_cpp_fixture import converter, llama_cpp_sdist  # noqa: F401  (session fixtures)

PROMPTS = ["你好，你是谁？", "皇上万福金安", "Hello there, how are you?"]
NEW_TOKENS = 24
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class Case:
    name: str
    base: Path
    adapter: Path
    merged: Path
    config: object
    renderer: object


def make_case(name: str, base: Path, work: Path) -> Case:
    """A LoRA (r 4, alpha 8, B perturbed) on `base`, saved, and merged into a plain folder."""
    import torch
    from peft import LoraConfig, get_peft_model

    from lora_studio import models
    from lora_studio.config import RunConfig
    from lora_studio.workspace import Workspace

    config = RunConfig(model_name_or_path=str(base))
    renderer = models.renderer_for(config, Workspace(work / "ws"))
    model = models.load_model(base, config)
    tuned = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter_name, parameter in tuned.named_parameters():
            if "lora_B" in parameter_name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    adapter, merged = work / f"{name}-adapter", work / f"{name}-merged"
    tuned.save_pretrained(str(adapter))
    tuned.merge_and_unload().save_pretrained(str(merged))
    renderer.tokenizer.save_pretrained(str(merged))
    if (base / "tokenizer.model").is_file():  # as the merged export does: llama.cpp's SentencePiece path
        shutil.copyfile(base / "tokenizer.model", merged / "tokenizer.model")
    return Case(name, base, adapter, merged, config, renderer)


@pytest.fixture(scope="session")
def cases(tmp_path_factory, demo_model_dir) -> dict:
    from tests.index_fixture import build_index_checkpoint
    from tests.qwen2_fixture import build_tiny_qwen2

    work = tmp_path_factory.mktemp("gguf-cases")
    qwen2 = build_tiny_qwen2(QWEN_TOKENIZER, work / "qwen2-base")
    index = build_index_checkpoint(work / "index-base")
    return {name: make_case(name, base, work) for name, base in
            (("demo", Path(demo_model_dir)), ("qwen2", qwen2), ("index", index))}


def context(case: Case, ws, staging: Path, quant: str = "f16", llama_cpp_dir=None, make_merged=None,
            check_stop=lambda: None) -> ExportContext:
    staging.mkdir(parents=True, exist_ok=True)
    request = ExportRequest(run=Path(f"run-{case.name}"), target="gguf", quant=quant, llama_cpp=llama_cpp_dir)
    ctx = ExportContext(request=request, workspace=ws, config=case.config, adapter=case.adapter, staging=staging,
                        renderer=case.renderer, log=lambda line: ctx.logged.append(line),
                        progress=lambda stage, done, total: ctx.stages.append((stage, done, total)),
                        check_stop=check_stop, make_merged=make_merged or (lambda _ctx: case.merged))
    ctx.logged, ctx.stages = [], []
    return ctx


@dataclass
class Built:
    ctx: ExportContext
    gguf: Path
    seconds: float


@pytest.fixture(scope="session")
def built(cases, converter, tmp_path_factory) -> dict:
    """Each case exported once as f16 (the model and the adapter GGUF), with the seconds it took."""
    from lora_studio.workspace import Workspace

    done = {}
    for name, case in cases.items():
        root = tmp_path_factory.mktemp(f"gguf-{name}")
        ctx = context(case, Workspace(root / "ws"), root / "staging", llama_cpp_dir=converter.folder)
        started = time.perf_counter()
        done[name] = Built(ctx, export_gguf.build_gguf(ctx), time.perf_counter() - started)
    return done


def transformers_greedy(folder: Path, case: Case) -> list[list[int]]:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    from lora_studio.probing import greedy_ids

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    model.generation_config = GenerationConfig()
    return [greedy_ids(model, case.renderer.encode_prompt([{"role": "user", "content": p}]),
                       case.renderer.stop_token_ids, NEW_TOKENS) for p in PROMPTS]


def keys(ctx) -> list[str]:
    return [line.key for line in ctx.logged]


def finished_files(staging: Path) -> list[str]:
    """What in the staging folder looks like a finished GGUF (temporary .part files do not)."""
    return sorted(p.name for p in staging.rglob("*.gguf"))


# --- fetching the converter ------------------------------------------------------------------------
def test_fetch_extracts_only_the_converters_once_and_records_the_source(ws, llama_cpp_sdist):
    started = time.perf_counter()  # from the file $LORA_STUDIO_LLAMA_CPP_SDIST names, as offline users do
    fetched = llama_cpp.fetch(ws, log=lambda _m: None, environ={llama_cpp.SDIST_VARIABLE: str(llama_cpp_sdist)})
    seconds = time.perf_counter() - started
    folder = llama_cpp.workspace_folder(ws)
    assert fetched.folder == folder and fetched.version == llama_cpp.PINNED_VERSION
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["LICENSE", "conversion", "convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "gguf-py", llama_cpp.SOURCE_FILE])
    source = json.loads((folder / llama_cpp.SOURCE_FILE).read_text())
    assert source["version"] == llama_cpp.PINNED_VERSION and source["sha256"] == llama_cpp.PINNED_SHA256
    assert llama_cpp.find_converter(ws) == fetched
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 5_000_000  # not 77 MB of C++
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no staging folder left behind
    stamp = (folder / llama_cpp.SOURCE_FILE).stat().st_mtime_ns
    assert llama_cpp.fetch(ws, sdist=Path("/nonexistent.tar.gz")).folder == folder  # once: not read again
    assert (folder / llama_cpp.SOURCE_FILE).stat().st_mtime_ns == stamp
    print(f"\nfetch from the sdist: {seconds:.1f} s, {source['files']} files")


def test_fetch_refuses_another_package_and_leaves_nothing(ws, tmp_path):
    fake = tmp_path / "llama_cpp_python-0.3.36.tar.gz"
    with tarfile.open(fake, "w:gz") as archive:
        data = b"print('not llama.cpp')\n"
        member = tarfile.TarInfo("llama_cpp_python-0.3.36/vendor/llama.cpp/convert_hf_to_gguf.py")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    with pytest.raises(ExportError) as caught:
        llama_cpp.fetch(ws, sdist=fake)
    assert "sha256" in caught.value.render("en") and "sha256" in caught.value.render("zh")
    tools = llama_cpp.workspace_folder(ws).parent
    assert not llama_cpp.workspace_folder(ws).exists() and list(tools.iterdir()) == []


def test_a_fetch_that_fails_half_way_leaves_no_converter(ws, llama_cpp_sdist, monkeypatch):
    import errno

    copy, written = shutil.copyfileobj, []

    def copy_then_fill_the_disk(source, out, *args):
        written.append(out.name)
        if len(written) > 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        return copy(source, out, *args)

    monkeypatch.setattr(llama_cpp.shutil, "copyfileobj", copy_then_fill_the_disk)
    with pytest.raises(OSError):
        llama_cpp.fetch(ws, sdist=llama_cpp_sdist)
    tools = llama_cpp.workspace_folder(ws).parent
    assert list(tools.iterdir()) == []  # no converter, no staging folder
    with pytest.raises(ExportError):
        llama_cpp.find_converter(ws)


def test_a_missing_converter_says_how_to_get_it(ws, tmp_path, cases):
    with pytest.raises(ExportError) as caught:
        llama_cpp.find_converter(ws)
    for lang in ("en", "zh"):
        said = caught.value.render(lang)
        assert llama_cpp.FETCH_COMMAND in said and "--llama-cpp" in said and llama_cpp.SDIST_VARIABLE in said
    ctx = context(cases["demo"], ws, tmp_path / "staging", llama_cpp_dir=tmp_path / "not-llama-cpp")
    (tmp_path / "not-llama-cpp").mkdir()
    with pytest.raises(ExportError) as caught:
        export_gguf.build_gguf(ctx)
    assert "convert_hf_to_gguf.py" in caught.value.render("en")
    assert list(ctx.staging.iterdir()) == []


# --- refusing before converting --------------------------------------------------------------------
def test_an_unknown_quant_lists_the_known_ones(ws, tmp_path, cases, converter):
    ctx = context(cases["demo"], ws, tmp_path / "staging", quant="q9_9", llama_cpp_dir=converter.folder)
    with pytest.raises(ExportError) as caught:
        export_gguf.build_gguf(ctx)
    assert "q9_9" in caught.value.render("en") and "f16, bf16, q8_0, q6_k" in caught.value.render("zh")
    assert list(ctx.staging.iterdir()) == [] and export_gguf.check_quant(" Q8_0 ") == "q8_0"


@pytest.mark.skipif(llama_cpp.quantizer_available(), reason="llama-cpp-python is installed here")
def test_a_k_quant_without_the_quantizer_says_what_to_install_before_any_work(ws, tmp_path, cases, converter):
    def never(_ctx):
        raise AssertionError("merged before the quantizer was checked")

    ctx = context(cases["demo"], ws, tmp_path / "staging", quant="q4_k_m", llama_cpp_dir=converter.folder,
                  make_merged=never)
    with pytest.raises(ExportError) as caught:
        export_gguf.build_gguf(ctx)
    english = caught.value.render("en")
    assert "pip install llama-cpp-python==0.3.36" in english and "q8_0" in english
    assert "llama-cpp-python" in caught.value.render("zh") and list(ctx.staging.iterdir()) == []


def test_the_supported_architectures_come_from_the_converter(converter, tmp_path):
    supported = llama_cpp.supported_architectures(converter)
    assert {"LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"} <= supported
    assert "IndexForCausalLM" not in supported
    old = tmp_path / "old-llama.cpp"  # a llama.cpp from before the conversion/ package
    (old / "gguf-py" / "gguf").mkdir(parents=True)
    (old / "gguf-py" / "gguf" / "__init__.py").write_text("")
    (old / "convert_hf_to_gguf.py").write_text(
        "@Model.register('LlamaForCausalLM', 'MistralForCausalLM')\nclass LlamaModel(Model):\n    pass\n")
    assert llama_cpp.supported_architectures(llama_cpp.Converter(old)) == {"LlamaForCausalLM", "MistralForCausalLM"}


def test_an_unsupported_architecture_is_named_before_converting(ws, tmp_path, cases, converter):
    foo = tmp_path / "foo"
    shutil.copytree(cases["demo"].merged, foo)
    config = json.loads((foo / "config.json").read_text())
    (foo / "config.json").write_text(json.dumps(dict(config, architectures=["FooForCausalLM"])))
    ctx = context(cases["demo"], ws, tmp_path / "staging", llama_cpp_dir=converter.folder, make_merged=lambda _c: foo)
    with pytest.raises(ExportError) as caught:
        export_gguf.build_gguf(ctx)
    english = caught.value.render("en")
    assert "FooForCausalLM" in english and "LlamaForCausalLM" in english and "Qwen2ForCausalLM" in english
    assert "FooForCausalLM" in caught.value.render("zh")
    assert list(ctx.staging.iterdir()) == []  # the converter never ran: not even its log


# --- the converter's own failures ------------------------------------------------------------------
def test_a_bpe_tokenizer_llama_cpp_does_not_know_is_said_so(ws, tmp_path, cases, converter):
    """The demo recipe's tokenizer without the demo model's marker: llama.cpp's hash check refuses it."""
    from tests.tiny_model_fixture import build_tiny_model

    other = build_tiny_model(tmp_path / "not-the-demo")
    case = Case("other", other, cases["demo"].adapter, other, cases["demo"].config.replace(
        model_name_or_path=str(other)), cases["demo"].renderer)
    ctx = context(case, ws, tmp_path / "staging", llama_cpp_dir=converter.folder)
    with pytest.raises(ExportError) as caught:
        export_gguf.build_gguf(ctx)
    english = caught.value.render("en")
    assert "pre-tokenizer" in english and "预分词" in caught.value.render("zh")
    log = ctx.staging / export_gguf.LOG_FILE
    assert str(log) in english and "chkhsh" in log.read_text() and finished_files(ctx.staging) == []


def test_a_converter_crash_shows_its_last_lines_and_keeps_its_log(ws, tmp_path, cases, converter):
    torn = tmp_path / "torn"  # a merged folder whose weights file was cut short
    shutil.copytree(cases["index"].merged, torn)
    weights = (torn / "model.safetensors").read_bytes()
    (torn / "model.safetensors").write_bytes(weights[:len(weights) // 2])
    ctx = context(cases["index"], ws, tmp_path / "staging", llama_cpp_dir=converter.folder,
                  make_merged=lambda _c: torn)
    with pytest.raises(ExportError) as caught:
        export_gguf.build_gguf(ctx)
    english = caught.value.render("en")
    assert "convert_hf_to_gguf.py" in english and "exit code 1" in english and "Error" in english
    assert (ctx.staging / export_gguf.LOG_FILE).is_file() and finished_files(ctx.staging) == []


def test_a_gguf_without_weights_is_not_passed_on(tmp_path):
    """The converter exits 0 for a folder without weights, with a GGUF of no tensors: that is an error."""
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") + (0).to_bytes(8, "little"))
    with pytest.raises(ExportError) as caught:
        export_gguf.check_output(empty, "convert_hf_to_gguf.py", tmp_path / "llama-cpp.log")
    assert "no weights" in caught.value.render("en") and "权重" in caught.value.render("zh")
    whole = empty.read_bytes()[:8] + (1).to_bytes(8, "little") + (0).to_bytes(8, "little")
    empty.write_bytes(whole)
    export_gguf.check_output(empty, "convert_hf_to_gguf.py", tmp_path / "llama-cpp.log")


def test_stopping_kills_the_converter_and_leaves_no_gguf(ws, tmp_path, cases, converter):
    class Stopped(Exception):
        pass

    staging = tmp_path / "staging"

    def stop_once_started():
        if (staging / export_gguf.LOG_FILE).is_file():
            raise Stopped()

    ctx = context(cases["demo"], ws, staging, llama_cpp_dir=converter.folder, check_stop=stop_once_started)
    started = time.perf_counter()
    with pytest.raises(Stopped):
        export_gguf.build_gguf(ctx)
    assert time.perf_counter() - started < 10 and finished_files(staging) == []
    assert [p.name for p in staging.iterdir()] == [export_gguf.LOG_FILE]


# --- what comes out ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["demo", "qwen2", "index"])
def test_an_f16_gguf_answers_like_transformers(built, cases, name):
    ctx, gguf_file = built[name].ctx, built[name].gguf
    assert gguf_file == ctx.staging / f"run-{name}-f16.gguf"
    assert finished_files(ctx.staging) == sorted([gguf_file.name, export_gguf.ADAPTER_FILE])
    assert ("gguf.stage_convert", 100, 100) in ctx.stages and "gguf.written" in keys(ctx)
    started = time.perf_counter()
    # Qwen2's 151,643 tokens make transformers' GGUF reader slow (~13 s per read): its tokenizer, which
    # llama.cpp knows by its hash, is not read back a third time here
    answers = export_gguf.gguf_greedy(gguf_file, ctx, PROMPTS, NEW_TOKENS, check_tokenizer=name != "qwen2")
    reloaded = time.perf_counter() - started
    expected = transformers_greedy(cases[name].merged, cases[name])
    assert answers == expected and any(answers)
    notes = [m.render("en") for m in ctx.logged if m.key == "gguf.tokenizer_differs"]
    if name != "index":  # transformers' GGUF reader splits Index's reserved_0/1 into letters: it is reported
        assert notes == []
    print(f"\n{name}: f16 {gguf_file.stat().st_size / 1e6:.2f} MB, adapter "
          f"{(ctx.staging / export_gguf.ADAPTER_FILE).stat().st_size / 1e3:.0f} kB, model + adapter converted in "
          f"{built[name].seconds:.1f} s, reloaded and answered in {reloaded:.1f} s; tokenizer notes: {notes}")


def test_the_demo_model_converts_only_because_it_is_marked_and_splits_like_gpt2(cases, tmp_path):
    from lora_studio.demo_model import BUILD_FILE

    demo = cases["demo"]
    assert (demo.base / BUILD_FILE).is_file() and llama_cpp.is_gpt2_byte_level(demo.merged / "tokenizer.json")
    assert not llama_cpp.is_gpt2_byte_level(cases["qwen2"].merged / "tokenizer.json")  # Qwen2 has its own regex
    spec = json.loads((demo.merged / "tokenizer.json").read_text())
    spec["normalizer"] = {"type": "NFC"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    assert not llama_cpp.is_gpt2_byte_level(tmp_path / "tokenizer.json")


def test_q8_0_converts_and_loads(ws, tmp_path, cases, converter):
    import gguf

    case = cases["demo"]
    ctx = context(case, ws, tmp_path / "staging", quant="q8_0", llama_cpp_dir=converter.folder)
    gguf_file = export_gguf.build_gguf(ctx)
    assert gguf_file.name == "run-demo-q8_0.gguf"
    types = {t.tensor_type.name for t in gguf.GGUFReader(gguf_file).tensors}
    assert "Q8_0" in types
    answers = export_gguf.gguf_greedy(gguf_file, ctx, PROMPTS, NEW_TOKENS, check_tokenizer=False)
    expected = transformers_greedy(case.merged, case)
    from lora_studio.probing import first_difference

    print(f"\nq8_0: {gguf_file.stat().st_size / 1e6:.2f} MB, first differences from transformers: "
          f"{[first_difference(a, b) for a, b in zip(answers, expected)]}")
    assert len(answers) == len(PROMPTS) and any(answers)


def test_the_adapter_gguf_is_a_lora_llama_cpp_can_read(built, cases):
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    case = cases["index"]  # its base config is IndexForCausalLM: the merged folder's Llama config serves
    adapter = built["index"].ctx.staging / export_gguf.ADAPTER_FILE
    assert "gguf.adapter_written" in keys(built["index"].ctx)
    reader = gguf.GGUFReader(adapter)
    fields = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["adapter.lora.alpha"] == 8.0 and fields["general.architecture"] == "llama"
    tensors = {t.name: t for t in reader.tensors}
    layers = json.loads((case.merged / "config.json").read_text())["num_hidden_layers"]
    assert len(tensors) == 2 * len(TARGETS) * layers and all(n.endswith((".lora_a", ".lora_b")) for n in tensors)
    hf = load_file(str(case.adapter / "adapter_model.safetensors"))
    a = hf["base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"]
    b = hf["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"]
    got_a = np.asarray(tensors["blk.1.attn_v.weight.lora_a"].data, dtype=np.float32).reshape(a.shape)
    got_b = np.asarray(tensors["blk.1.attn_v.weight.lora_b"].data, dtype=np.float32).reshape(b.shape)
    assert np.abs(got_b @ got_a - b @ a).max() < 1e-3


def test_an_rslora_adapter_keeps_its_scale_in_llama_cpp(tmp_path, cases):
    from lora_studio.export_gguf import _adapter_for_llama_cpp

    settings = json.loads((cases["demo"].adapter / "adapter_config.json").read_text())
    settings["use_rslora"] = True
    copy = _adapter_for_llama_cpp(cases["demo"].adapter, settings, tmp_path / "scratch")
    changed = json.loads((copy / "adapter_config.json").read_text())
    # llama.cpp scales by alpha / r; rsLoRA means alpha / sqrt(r)
    assert math.isclose(changed["lora_alpha"] / changed["r"], 8 / math.sqrt(4)) and not changed["use_rslora"]
    assert (copy / "adapter_model.safetensors").read_bytes() == (cases["demo"].adapter / "adapter_model.safetensors").read_bytes()


FAKE_LLAMA_CPP = '''"""A stand-in for llama-cpp-python's ctypes API: copies the GGUF and notes the ftype asked for."""
import ctypes, json, pathlib, shutil
LLAMA_FTYPE_MOSTLY_Q4_K_M = 15
LLAMA_FTYPE_MOSTLY_Q6_K = 18


class llama_model_quantize_params(ctypes.Structure):
    _fields_ = [("nthread", ctypes.c_int32), ("ftype", ctypes.c_int)]


def llama_model_quantize_default_params():
    return llama_model_quantize_params()


def llama_model_quantize(source, dest, params):
    shutil.copyfile(source.decode(), dest.decode())
    pathlib.Path(dest.decode() + ".asked").write_text(json.dumps({"ftype": params._obj.ftype}))
    return 0
'''


def test_other_quants_go_through_llama_cpps_quantizer(built, tmp_path, monkeypatch):
    """The plumbing to llama_model_quantize, with a stand-in module (the real one builds llama.cpp)."""
    fake = tmp_path / "fake-site"
    (fake / "llama_cpp").mkdir(parents=True)
    (fake / "llama_cpp" / "__init__.py").write_text(FAKE_LLAMA_CPP)
    monkeypatch.syspath_prepend(str(fake))
    monkeypatch.setenv("PYTHONPATH", str(fake))
    assert llama_cpp.quantizer_available()
    ctx, f16 = built["demo"].ctx, built["demo"].gguf
    source, target = tmp_path / "in-f16.gguf", ctx.staging / "run-demo-q4_k_m.gguf"
    shutil.copyfile(f16, source)
    export_gguf._quantize(ctx, source, target, "q4_k_m")
    assert target.read_bytes() == f16.read_bytes()
    asked = json.loads((ctx.staging / ".run-demo-q4_k_m.gguf.part.asked").read_text())
    assert asked == {"ftype": 15} and ("gguf.stage_quantize", 1, 1) in ctx.stages
    target.unlink()
    assert export_gguf.llama_cpp_greedy  # exists; with the stand-in it is not asked to answer


def test_without_llama_cpp_python_there_is_no_llama_cpp_answer(built):
    if llama_cpp.quantizer_available():
        pytest.skip("llama-cpp-python is installed here")
    assert export_gguf.llama_cpp_greedy(built["demo"].gguf, built["demo"].ctx, PROMPTS) is None


def test_prompt_ids_pass_through_and_conversations_are_rendered(built):
    ctx = built["demo"].ctx
    user = [{"role": "user", "content": PROMPTS[0]}]
    (ids, text), (same, same_text), (given, none) = export_gguf.rendered_prompts(ctx, [PROMPTS[0], user, [1, 2, 3]])
    assert ids == same == ctx.renderer.encode_prompt(user) and text == same_text and text.endswith("assistant\n")
    assert given == [1, 2, 3] and none is None


# --- where llama-cpp-python is installed (it builds llama.cpp from source: not in requirements.txt) ---
def test_llama_cpp_answers_like_transformers(built, cases):
    pytest.importorskip("llama_cpp")
    for name in ("demo", "qwen2", "index"):
        answers = export_gguf.llama_cpp_greedy(built[name].gguf, built[name].ctx, PROMPTS, NEW_TOKENS)
        assert answers == transformers_greedy(cases[name].merged, cases[name]), name
    for name in ("demo", "qwen2"):  # llama.cpp tokenises their prompts as the run does
        assert not [m for m in built[name].ctx.logged if m.key == "gguf.tokenizer_differs"
                    and m.params["reader"] == "llama.cpp"]


def test_a_k_quant_through_llama_cpps_quantizer(ws, tmp_path, cases, converter):
    pytest.importorskip("llama_cpp")
    import gguf

    ctx = context(cases["demo"], ws, tmp_path / "staging", quant="q4_k_m", llama_cpp_dir=converter.folder)
    gguf_file = export_gguf.build_gguf(ctx)
    assert finished_files(ctx.staging) == sorted([export_gguf.ADAPTER_FILE, "run-demo-q4_k_m.gguf"])
    assert gguf.GGUFReader(gguf_file).fields["general.file_type"].contents() == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    answers = export_gguf.llama_cpp_greedy(gguf_file, ctx, PROMPTS, NEW_TOKENS)
    assert len(answers) == len(PROMPTS) and any(answers)
