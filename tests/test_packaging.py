"""Packaging and building: the source distribution holds what a GPU machine needs to build
the extension; just-in-time builds get their own folder and survive an interrupted build."""

import os
import shutil
import subprocess
import sys
import tarfile
import time
import warnings

import pytest
import torch

from simda_kernels import _toolchain, temporal_adapter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: tracked files that do not belong in the sdist
NOT_SHIPPED = {".gitignore"}


def tracked_files():
    if shutil.which("git") is None or not os.path.isdir(os.path.join(ROOT, ".git")):
        return None
    result = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:  # e.g. a checkout git refuses to read (another owner)
        return None
    return {line for line in result.stdout.splitlines() if line and line not in NOT_SHIPPED}


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
        pytest.skip("not a git checkout git can read")
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


def test_jit_build_folder_is_per_torch_version(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        folder = _toolchain.jit_build_directory("simda_kernels_C")
    assert os.path.isdir(folder) and folder.startswith(str(tmp_path))
    tag = os.path.basename(folder)
    assert tag.startswith("simda_kernels_C-py") and torch.__version__.split("+")[0] in tag
    assert "+" not in tag


def test_jit_build_removes_a_stale_lock_and_waits_for_a_fresh_one(tmp_path, monkeypatch):
    """torch <= 2.13 waits forever for the lock file of a build that was killed; an old one
    is removed (and said so), a recent one is left for its build to finish (and said so)."""
    monkeypatch.setattr(_toolchain, "lock_file_blocks", lambda: True)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    folder = _toolchain.jit_build_directory("simda_cuda_emulator")
    lock = os.path.join(folder, "lock")
    open(lock, "w").close()
    with pytest.warns(UserWarning, match="another process is building.*delete .*lock"):
        _toolchain.jit_build_directory("simda_cuda_emulator")
    assert os.path.exists(lock)
    old = time.time() - _toolchain.STALE_LOCK_S - 60
    os.utime(lock, (old, old))
    with pytest.warns(UserWarning, match="removing .*lock.*did not finish"):
        assert _toolchain.jit_build_directory("simda_cuda_emulator") == folder
    assert not os.path.exists(lock)


def test_jit_build_leaves_an_os_lock_file_alone(tmp_path, monkeypatch):
    """Newer torch locks with flock on a file that stays after the build: nothing to do."""
    monkeypatch.setattr(_toolchain, "lock_file_blocks", lambda: False)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    folder = _toolchain.jit_build_directory("simda_cuda_emulator")
    lock = os.path.join(folder, "lock")
    open(lock, "w").close()
    old = time.time() - _toolchain.STALE_LOCK_S - 60
    os.utime(lock, (old, old))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _toolchain.jit_build_directory("simda_cuda_emulator")
    assert os.path.exists(lock)


def test_lock_kind_matches_what_torch_builds_with():
    """lock_file_blocks() against the installed torch's JIT build itself."""
    import inspect

    from torch.utils import cpp_extension

    source = inspect.getsource(cpp_extension._jit_compile)
    assert ("FileBaton(" in source) == _toolchain.lock_file_blocks()
    assert ("FileLock(" in source) != _toolchain.lock_file_blocks()


def test_the_wheel_installs_simda_and_simda_kernels_only(tmp_path):
    """The packages a wheel installs (setuptools records them in top_level.txt): the library,
    not the benchmark suite (``simda bench`` lives in the CLI)."""
    subprocess.run(
        [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "SIMDA_SKIP_CUDA_BUILD": "1"},
        check=True,
        capture_output=True,
    )
    (info,) = [p for p in tmp_path.iterdir() if p.name.endswith(".egg-info")]
    assert (info / "top_level.txt").read_text().split() == ["simda", "simda_kernels"]
    assert "simda/cli/bench.py" in (info / "SOURCES.txt").read_text().split()
