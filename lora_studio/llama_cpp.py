"""llama.cpp's own converters and quantizer: found, or fetched once at a pinned version, and run apart.

LoRA Studio never writes GGUF itself. `convert_hf_to_gguf.py` (a Hugging Face folder to a GGUF model:
f16, bf16, q8_0) and `convert_lora_to_gguf.py` (a PEFT adapter to a GGUF LoRA) come from, in order:

1. the llama.cpp checkout the user names (`ExportRequest.llama_cpp`, `--llama-cpp DIR`);
2. the copy `fetch` put in the workspace, `tools/llama.cpp-<PINNED_VERSION>`: the converters, their
   `conversion/` package, gguf-py and the licence, taken from the llama-cpp-python source package
   (which vendors llama.cpp) at PINNED_VERSION, checked against its sha256, downloaded with pip or
   read from a file ($LORA_STUDIO_LLAMA_CPP_SDIST) for machines without a network;
3. otherwise an error that says how to get it.

A converter runs with this Python in a child process (`child_main`, started by RUNNER),
in a temporary folder, with the converter's own gguf-py first on the path: it needs that one (PyPI's
gguf 0.19.0 lacks `LazyChunkedTensor`, which the converter uses). Its whole output goes to a log file;
tqdm's "Writing: N%" lines become progress. Quants below 8 bits come from llama.cpp's quantizer through
llama-cpp-python's `llama_model_quantize` when that package is installed, in a child process too.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable

from .export import ExportError
from .i18n import msg

PACKAGE = "llama-cpp-python"
PINNED_VERSION = "0.3.36"
PINNED_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"  # its sdist on PyPI
SDIST_VARIABLE = "LORA_STUDIO_LLAMA_CPP_SDIST"
FETCH_COMMAND = "python studio.py fetch-llama-cpp"
CONVERT_HF, CONVERT_LORA = "convert_hf_to_gguf.py", "convert_lora_to_gguf.py"
VENDOR = "vendor/llama.cpp/"
KEPT_FILES = (CONVERT_HF, CONVERT_LORA, "LICENSE")
KEPT_FOLDERS = ("conversion/", "gguf-py/")
SOURCE_FILE = "lora-studio-source.json"  # what was fetched: version, sha256 of the source package
STAGE_FETCH = "gguf.stage_fetch"  # a front end's progress stage while `fetch` runs
TAIL_LINES = 12
# What llama-cpp-python's llama_model_quantize makes, by our name: its LLAMA_FTYPE_* constant.
QUANTIZER_TYPES = MappingProxyType({
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K", "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M", "q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M", "q2_k": "LLAMA_FTYPE_MOSTLY_Q2_K",
})
WRITING = re.compile(r"Writing:\s+(\d+)%")
STARTING = "LoRA Studio: running "  # the child's line before each script
# A child imports this module by its package, from the folder that holds lora_studio/.
RUNNER = "import sys; sys.path.insert(0, sys.argv[1]); from lora_studio.llama_cpp import child_main; child_main()"


@dataclass(frozen=True)
class Converter:
    """A llama.cpp folder with the converters; `version` is PINNED_VERSION for the fetched copy."""
    folder: Path
    version: str = ""

    @property
    def gguf_py(self) -> Path:
        return self.folder / "gguf-py"

    def describe(self):
        """Which llama.cpp this is, as a message."""
        if self.version:
            return msg("gguf.converter_fetched", package=PACKAGE, version=self.version)
        return msg("gguf.converter_folder", path=str(self.folder))


def workspace_folder(workspace) -> Path:
    """Where `fetch` puts the converter in a workspace."""
    return workspace.root / "tools" / f"llama.cpp-{PINNED_VERSION}"


def is_converter_folder(folder: Path) -> bool:
    folder = Path(folder)
    return (folder / CONVERT_HF).is_file() and (folder / "gguf-py" / "gguf" / "__init__.py").is_file()


def is_fetched(folder: Path) -> bool:
    """A whole copy made by `install` at the pinned version."""
    try:
        source = json.loads((Path(folder) / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(source, dict) and source.get("version") == PINNED_VERSION and is_converter_folder(folder)


def find_converter(workspace, folder: Path | None = None) -> Converter:
    """The user's llama.cpp folder when one is named, else the fetched copy; an error says how to get one."""
    if folder:
        folder = Path(folder).expanduser()
        if not is_converter_folder(folder):
            raise ExportError(msg("gguf.not_llama_cpp"), str(folder), msg("gguf.not_llama_cpp_fix"))
        return Converter(folder.resolve())
    fetched = workspace_folder(workspace)
    if is_fetched(fetched):
        return Converter(fetched, PINNED_VERSION)
    raise ExportError(msg("gguf.no_llama_cpp"), str(fetched),
                      msg("gguf.no_llama_cpp_fix", command=FETCH_COMMAND, package=PACKAGE, version=PINNED_VERSION,
                          variable=SDIST_VARIABLE))


# --- fetching ------------------------------------------------------------------------------------
def fetch(workspace, log: Callable = print, sdist: Path | None = None, environ=None) -> Converter:
    """The converter in the workspace, fetched once: from `sdist`, $LORA_STUDIO_LLAMA_CPP_SDIST, or pip."""
    dest = workspace_folder(workspace)
    if is_fetched(dest):
        return Converter(dest, PINNED_VERSION)
    environ = os.environ if environ is None else environ
    sdist = sdist or environ.get(SDIST_VARIABLE) or None
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".llama-cpp-download-", dir=dest.parent) as tmp:
        return install(Path(sdist) if sdist else download(Path(tmp), log), dest, log)


def download(folder: Path, log: Callable = print) -> Path:
    """The pinned source package, downloaded by pip into `folder` (no build, no dependencies)."""
    log(msg("gguf.downloading", package=PACKAGE, version=PINNED_VERSION))
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               f"{PACKAGE}=={PINNED_VERSION}", "-d", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True, errors="replace")
    found = sorted(Path(folder).glob("*.tar.gz"))
    if result.returncode != 0 or not found:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise ExportError(msg("gguf.download_failed", detail=lines[-1] if lines else result.returncode),
                          f"{PACKAGE}=={PINNED_VERSION}",
                          msg("gguf.download_failed_fix", variable=SDIST_VARIABLE, version=PINNED_VERSION))
    return found[0]


def install(sdist: Path, dest: Path, log: Callable = print) -> Converter:
    """Extract only the converters, gguf-py and the licence from the source package into `dest`.

    They are written into a staging folder beside `dest` and renamed into place when whole, so a
    fetch that stopped half way leaves nothing that looks like a converter.
    """
    sdist, dest = Path(sdist), Path(dest)
    digest = _sha256(sdist)
    if digest != PINNED_SHA256:
        raise ExportError(msg("gguf.sdist_mismatch", version=PINNED_VERSION, expected=PINNED_SHA256, found=digest),
                          str(sdist), msg("gguf.sdist_mismatch_fix", package=PACKAGE, version=PINNED_VERSION))
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        count = _extract(sdist, staging)
        if not is_converter_folder(staging):
            raise ExportError(msg("gguf.sdist_incomplete"), str(sdist), msg("gguf.sdist_mismatch_fix",
                                                                            package=PACKAGE, version=PINNED_VERSION))
        source = {"package": PACKAGE, "version": PINNED_VERSION, "sha256": digest, "sdist": sdist.name,
                  "files": count, "fetched": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (staging / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
        _replace_folder(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(msg("gguf.fetched", path=str(dest), files=count))
    return Converter(dest, PINNED_VERSION)


def _extract(sdist: Path, folder: Path) -> int:
    count = 0
    try:
        with tarfile.open(sdist, "r:gz") as archive:
            for member in archive:
                relative = member.name.split("/", 1)[1] if "/" in member.name else ""
                if not member.isfile() or not relative.startswith(VENDOR):
                    continue
                inside = relative[len(VENDOR):]
                if inside not in KEPT_FILES and not inside.startswith(KEPT_FOLDERS):
                    continue
                if ".." in Path(inside).parts or "__pycache__" in inside:
                    continue
                target = folder / inside
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.extractfile(member) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
                count += 1
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # a full disk or a permission problem is the writer's, not the archive's
        raise ExportError(msg("gguf.sdist_unreadable", detail=str(exc) or type(exc).__name__), str(sdist),
                          msg("gguf.sdist_mismatch_fix", package=PACKAGE, version=PINNED_VERSION)) from None
    return count


def _replace_folder(staging: Path, dest: Path) -> None:
    """Rename `staging` to `dest`; an incomplete `dest` is moved aside first; a whole one another process
    just finished is kept."""
    if dest.exists():
        if is_fetched(dest):
            return
        aside = dest.with_name(f".{dest.name}.old-{os.getpid()}-{int(time.time())}")
        os.replace(dest, aside)
        shutil.rmtree(aside, ignore_errors=True)
    try:
        os.replace(staging, dest)
    except OSError:
        if not is_fetched(dest):
            raise


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise ExportError(msg("gguf.sdist_unreadable", detail=exc.strerror or str(exc)), str(path),
                          msg("gguf.sdist_mismatch_fix", package=PACKAGE, version=PINNED_VERSION)) from None
    return digest.hexdigest()


# --- what the converter supports -----------------------------------------------------------------
def supported_architectures(converter: Converter) -> frozenset[str]:
    """The Hugging Face architectures the converter registers, read from its source (nothing imported).

    Newer llama.cpp lists text models in `conversion/__init__.py`'s TEXT_MODEL_MAP; older ones register
    classes with `@ModelBase.register("LlamaForCausalLM", ...)` (or `@Model.register`) in the script.
    """
    table = converter.folder / "conversion" / "__init__.py"
    if table.is_file():
        names = _dict_keys(ast.parse(table.read_text(encoding="utf-8")), "TEXT_MODEL_MAP")
        if names:
            return frozenset(names)
    found: set[str] = set()
    for path in [converter.folder / CONVERT_HF, *sorted((converter.folder / "conversion").glob("*.py"))]:
        if path.is_file():
            found |= _registered_names(ast.parse(path.read_text(encoding="utf-8")))
    return frozenset(found)


def _dict_keys(tree: ast.AST, name: str) -> set[str]:
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets) and isinstance(node.value, ast.Dict):
            return {k.value for k in node.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    return set()


def _registered_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute) \
                        and decorator.func.attr == "register":
                    names |= {a.value for a in decorator.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return names


def model_architecture(model_folder: Path) -> str:
    """The architecture the converter will look up for a model folder (as its get_model_architecture)."""
    try:
        config = json.loads((Path(model_folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    text_config = config.get("text_config") or {}
    names = text_config.get("architectures") or config.get("architectures") or []
    return str(names[0]) if names else ""


def is_gpt2_byte_level(tokenizer_file: Path) -> bool:
    """Whether a tokenizer.json splits text exactly as llama.cpp's "gpt-2" pre-tokenizer does: no
    normaliser, a ByteLevel pre-tokenizer with GPT-2's regex and no prefix space, a plain byte BPE."""
    try:
        spec = json.loads(Path(tokenizer_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    pre, model = spec.get("pre_tokenizer") or {}, spec.get("model") or {}
    return (spec.get("normalizer") is None and pre.get("type") == "ByteLevel" and pre.get("use_regex", True)
            and not pre.get("add_prefix_space") and model.get("type") == "BPE" and not model.get("byte_fallback")
            and not model.get("continuing_subword_prefix") and not model.get("end_of_word_suffix"))


# --- running a converter -------------------------------------------------------------------------
@dataclass
class Outcome:
    returncode: int
    tail: list[str]      # the last lines of its output
    log_file: Path
    script: str = ""     # the script that ran last (the one that failed, when one did)


def run_converters(converter: Converter, jobs: list[tuple[str, list[str]]], log_file: Path,
                   check_stop: Callable[[], None] = lambda: None,
                   progress: Callable[[str, int, int], None] = lambda script, done, total: None,
                   gpt2_pre: bool = False) -> Outcome:
    """Run llama.cpp's scripts, each `(script, args)`, one after the other in one child process (torch
    and transformers are imported once), stopping at the first that fails. `progress(script, done,
    total)` follows each one's writing. `gpt2_pre` lets an unknown BPE pre-tokenizer hash stand for
    "gpt-2" (only for a tokenizer the caller proved splits like GPT-2, see is_gpt2_byte_level)."""
    child = ["convert", str(converter.folder), "1" if gpt2_pre else "0", json.dumps([list(j) for j in jobs])]
    return _run_child(child, converter.gguf_py, log_file, check_stop, progress)


def quantizer_available() -> bool:
    """Whether llama-cpp-python (with llama.cpp's quantizer and runtime) is installed."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def require_quantizer(quant: str) -> None:
    if not quantizer_available():
        raise ExportError(msg("gguf.no_quantizer", quant=quant), PACKAGE,
                          msg("gguf.no_quantizer_fix", package=PACKAGE, version=PINNED_VERSION))


def quantize(source: Path, dest: Path, quant: str, log_file: Path,
             check_stop: Callable[[], None] = lambda: None) -> Outcome:
    """llama.cpp's quantizer (llama_model_quantize) from an f16 GGUF `source` to `quant` in `dest`."""
    return _run_child(["quantize", str(source), str(dest), QUANTIZER_TYPES[quant]], None, log_file, check_stop,
                      lambda script, done, total: None)


def _run_child(child_args: list[str], gguf_py: Path | None, log_file: Path, check_stop, progress) -> Outcome:
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    env.pop("NO_LOCAL_GGUF", None)  # the converter's own gguf-py, never PyPI's (see the docstring)
    if gguf_py is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(gguf_py), env.get("PYTHONPATH", "")) if p)
    package_root = str(Path(__file__).resolve().parent.parent)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    tail: list[str] = []
    script = child_args[0]
    with tempfile.TemporaryDirectory(prefix="lora-studio-llama-cpp-") as cwd, \
            open(log_file, "a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(child_args)}\n")
        process = subprocess.Popen([sys.executable, "-c", RUNNER, package_root, *child_args], cwd=cwd, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        lines: queue.Queue = queue.Queue()
        reader = threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True)
        reader.start()
        try:
            while True:
                try:
                    line = lines.get(timeout=0.5)
                except queue.Empty:
                    check_stop()
                    continue
                if line is None:
                    break
                log.write(line + "\n")
                if line.startswith(STARTING):
                    script, tail = line[len(STARTING):].strip(), []
                elif line.strip():
                    tail = (tail + [line])[-TAIL_LINES:]
                found = WRITING.search(line)
                if found:
                    progress(script, int(found.group(1)), 100)
                check_stop()
        except BaseException:
            process.kill()
            raise
        finally:
            returncode = process.wait()
            reader.join(timeout=5)
    return Outcome(returncode, tail, log_file, script)


def _read_lines(stream, lines: queue.Queue) -> None:
    """Lines of the child's output; tqdm's carriage returns end a line too."""
    pending = ""
    for chunk in iter(lambda: stream.read1(1 << 14), b""):
        pending += chunk.decode("utf-8", errors="replace")
        parts = re.split(r"\r\n|\r|\n", pending)
        pending = parts.pop()
        for part in parts:
            lines.put(part)
    if pending:
        lines.put(pending)
    lines.put(None)


# --- the child process ---------------------------------------------------------------------------
def child_main(argv: list[str] | None = None) -> None:
    """What the child process runs (see RUNNER): `convert FOLDER GPT2 JOBS` (JOBS a JSON list of
    [script, args]) or `quantize SOURCE DEST FTYPE`."""
    argv = sys.argv[2:] if argv is None else argv
    if sys.path and sys.path[0] == sys.argv[1]:
        del sys.path[0]  # the folder RUNNER put first: nothing of ours shadows the converter's imports
    if argv[0] == "quantize":
        raise SystemExit(_child_quantize(*argv[1:4]))
    folder, gpt2_pre, jobs = Path(argv[1]), argv[2] == "1", json.loads(argv[3])
    sys.path[:0] = [str(folder), str(folder / "gguf-py")]
    import gguf

    if not Path(gguf.__file__).resolve().is_relative_to(folder.resolve()):
        raise SystemExit(f"LoRA Studio: gguf was imported from {gguf.__file__}, not from {folder / 'gguf-py'}")
    main = None
    if gpt2_pre:
        try:
            from conversion import base
        except ImportError:  # a llama.cpp from before the conversion/ package: the classes are in the script
            import importlib

            module = importlib.import_module(Path(CONVERT_HF).stem)
            _allow_gpt2_pre(getattr(module, "TextModel", None) or module.Model)
            main = module.main
        else:
            _allow_gpt2_pre(base.TextModel)
    import runpy

    for script, args in jobs:
        print(f"{STARTING}{script}", flush=True)
        sys.argv = [str(folder / script), *args]
        try:
            if main is not None and script == CONVERT_HF:
                main()
            else:
                runpy.run_path(str(folder / script), run_name="__main__")
        except SystemExit as exc:
            if exc.code not in (None, 0):
                raise
        sys.stdout.flush()


def _allow_gpt2_pre(owner) -> None:
    """Let the BPE pre-tokenizer check answer "gpt-2" where llama.cpp does not know the tokenizer's hash.

    llama.cpp names pre-tokenizers by the hash of one test string's ids; a tokenizer trained by LoRA
    Studio has ids no published model has, so its hash is unknown although it splits text exactly as
    GPT-2 does (the caller checked the tokenizer.json). Every known hash still gets llama.cpp's answer.
    """
    known = owner.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return known(self, tokenizer)
        except NotImplementedError:
            print("LoRA Studio: this tokenizer (built by LoRA Studio) splits text as GPT-2 does: "
                  "pre-tokenizer 'gpt-2'", flush=True)
            return "gpt-2"

    owner.get_vocab_base_pre = get_vocab_base_pre


def _child_quantize(source: str, dest: str, ftype: str) -> int:
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype)
    returncode = llama_cpp.llama_model_quantize(source.encode(), dest.encode(), ctypes.byref(params))
    print(f"llama_model_quantize returned {returncode}", flush=True)
    return int(returncode)
