"""Written files follow the umask, as any other tool's: a shared adapter is readable by a teammate or a server.

mkstemp, mkdtemp and safetensors create owner-only files (0600, folders 0700); solo's one writer
(files/atomic.py) gives them the usual permissions before renaming them into place.
"""

import os
import stat

import pytest
import torch
from safetensors.torch import save_file
from support import run

from solo_cli.files.atomic import atomic_dir, write_atomic, write_text


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_an_atomic_file_gets_the_permissions_the_umask_gives(tmp_path, umask):
    write_atomic(tmp_path / "a.safetensors", lambda tmp: save_file({"x": torch.zeros(2)}, str(tmp)))
    write_text(tmp_path / "config.json", "{}\n")
    assert mode(tmp_path / "a.safetensors") == 0o666 & ~umask
    assert mode(tmp_path / "config.json") == 0o666 & ~umask


def test_an_atomic_folder_and_everything_in_it_get_the_permissions_the_umask_gives(tmp_path, umask):
    with atomic_dir(tmp_path / "export") as staging:
        save_file({"x": torch.zeros(2)}, str(staging / "model.safetensors"))
        (staging / "sub").mkdir(mode=0o700)
        (staging / "sub" / "run.sh").write_text("#!/bin/sh\n")
        os.chmod(staging / "sub" / "run.sh", 0o700)
    assert mode(tmp_path / "export") == 0o777 & ~umask
    assert mode(tmp_path / "export" / "model.safetensors") == 0o666 & ~umask
    assert mode(tmp_path / "export" / "sub") == 0o777 & ~umask
    assert mode(tmp_path / "export" / "sub" / "run.sh") == 0o777 & ~umask  # executable stays executable


def test_a_run_folder_is_readable_by_others_under_umask_022(tiny_model_dir, tiny_data, tmp_path):
    previous = os.umask(0o022)
    try:
        out = tmp_path / "run"
        code, lines = run(
            "train", "--model", tiny_model_dir, "--data", tiny_data, "-o", out, "--max-steps", 2, "--save-every", 1,
            "--no-chat-template", "--batch-size", 4,
        )  # fmt: skip
        assert code == 0, lines
        merged = tmp_path / "merged.safetensors"
        code, lines = run("merge", out, out, "-o", merged)
        assert code == 0, lines
    finally:
        os.umask(previous)
    files = [out / "adapter.safetensors", out / "best" / "adapter.safetensors", out / "config.json", merged]
    files += list((out / "checkpoints" / "step-1").iterdir())
    assert {f.name: mode(f) for f in files} == {f.name: 0o644 for f in files}
    assert mode(out / "checkpoints" / "step-1") == 0o755
