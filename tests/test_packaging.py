"""The source distribution: what a GPU machine needs to build the extension from it."""

import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from simda_kernels import _toolchain, temporal_adapter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: tracked files that do not belong in the sdist
NOT_SHIPPED = {".gitignore"}


def tracked_files():
    if shutil.which("git") is None or not os.path.isdir(os.path.join(ROOT, ".git")):
        return None
    out = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return {line for line in out.splitlines() if line and line not in NOT_SHIPPED}


@pytest.fixture(scope="module")
def sdist_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sdist")
    subprocess.run(
        [
            sys.executable,
            "setup.py",
            "-q",
            "egg_info",
            "--egg-base",
            str(tmp),
            "sdist",
            "--dist-dir",
            str(tmp),
        ],
        cwd=ROOT,
        env={**os.environ, "SIMDA_SKIP_CUDA_BUILD": "1"},
        check=True,
        capture_output=True,
    )
    (archive,) = [p for p in tmp.iterdir() if p.name.endswith(".tar.gz")]
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    prefix = names[0].split("/")[0] + "/"
    return {n[len(prefix) :] for n in names if n.startswith(prefix)}


def test_sdist_holds_the_cuda_sources_and_build_files(sdist_files):
    """An sdist made without CUDA still builds the extension on a GPU machine: every source
    and header of csrc/ (a missing header only shows when nvcc runs), setup.py and its
    toolchain helper, the CMake build."""
    needed = {f"csrc/{name}" for name in os.listdir(os.path.join(ROOT, "csrc"))}
    assert any(n.endswith(".cuh") for n in needed) and any(n.endswith(".cu") for n in needed)
    needed |= {"setup.py", "simda_kernels/_toolchain.py", "CMakeLists.txt", "MANIFEST.in"}
    assert needed <= sdist_files, sorted(needed - sdist_files)


def test_sdist_holds_every_tracked_file(sdist_files):
    tracked = tracked_files()
    if tracked is None:
        pytest.skip("not a git checkout")
    assert tracked <= sdist_files, sorted(tracked - sdist_files)


def test_jit_build_without_sources_is_explained(tmp_path, monkeypatch):
    """An installed wheel has no csrc/: the opt-in JIT build says so instead of failing in
    os.listdir."""
    monkeypatch.setattr(temporal_adapter, "CSRC", str(tmp_path / "csrc"))
    monkeypatch.setattr(_toolchain, "cuda_home", lambda: str(tmp_path))
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "CUDA_HOME", cpp_extension.CUDA_HOME)
    with pytest.raises(RuntimeError, match=r"CUDA sources in .*csrc.*source checkout"):
        temporal_adapter._jit_build()
