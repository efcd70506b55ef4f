"""llama.cpp's converter for the GGUF tests, fetched at most once per machine and kept in the system temp.

Where it comes from, in order:
1. $LLAMA_CPP_DIR, a llama.cpp checkout (convert_hf_to_gguf.py, gguf-py/);
2. CACHE (tempfile.gettempdir()/lora-studio-llama-cpp-<version>), extracted by an earlier test session;
3. extracted into CACHE from the llama-cpp-python source package: a local copy ($LORA_STUDIO_LLAMA_CPP_SDIST,
   /work/cache/, or SDIST_CACHE from an earlier download), else downloaded once from PyPI by pip into
   SDIST_CACHE (the only network a test uses: the package registry).
When none of these works the GGUF tests are skipped, and the reason says why.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from lora_studio import llama_cpp

VERSION = llama_cpp.PINNED_VERSION
SDIST_NAME = f"llama_cpp_python-{VERSION}.tar.gz"
CACHE = Path(tempfile.gettempdir()) / f"lora-studio-llama-cpp-{VERSION}"
SDIST_CACHE = Path(tempfile.gettempdir()) / f"lora-studio-{SDIST_NAME}"
LOCAL_SDISTS = (Path("/work/cache") / SDIST_NAME, SDIST_CACHE)


def local_sdist() -> Path | None:
    named = os.environ.get(llama_cpp.SDIST_VARIABLE)
    for candidate in ([Path(named)] if named else []) + list(LOCAL_SDISTS):
        if candidate.is_file():
            return candidate
    return None


def sdist_or_skip() -> Path:
    """The pinned source package on this machine, downloaded once when it is not."""
    found = local_sdist()
    if found is not None:
        return found
    with tempfile.TemporaryDirectory(prefix="lora-studio-sdist-") as tmp:
        try:
            downloaded = llama_cpp.download(Path(tmp), log=lambda _message: None)
        except Exception as exc:  # no network, no pip: the GGUF tests cannot run here
            pytest.skip(f"llama-cpp-python {VERSION} source package not available: {exc}")
        part = SDIST_CACHE.with_name(SDIST_CACHE.name + f".part-{os.getpid()}")
        shutil.copyfile(downloaded, part)
        os.replace(part, SDIST_CACHE)  # whole or not at all, for the next session
    return SDIST_CACHE


def converter_or_skip() -> llama_cpp.Converter:
    named = os.environ.get("LLAMA_CPP_DIR")
    if named:
        if not llama_cpp.is_converter_folder(Path(named)):
            pytest.skip(f"LLAMA_CPP_DIR={named} is not a llama.cpp checkout")
        return llama_cpp.Converter(Path(named).resolve())
    if llama_cpp.is_fetched(CACHE):
        return llama_cpp.Converter(CACHE, VERSION)
    try:
        return llama_cpp.install(sdist_or_skip(), CACHE, log=lambda _message: None)
    except llama_cpp.ExportError as exc:
        pytest.skip(f"llama.cpp's converter could not be extracted: {exc}")


@pytest.fixture(scope="session")
def converter() -> llama_cpp.Converter:
    """llama.cpp's converter folder (see the module docstring), shared by every test of the session."""
    return converter_or_skip()


@pytest.fixture(scope="session")
def llama_cpp_sdist() -> Path:
    """The pinned llama-cpp-python source package as a local file."""
    return sdist_or_skip()
