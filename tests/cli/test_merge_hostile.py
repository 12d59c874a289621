"""`solo merge` on hostile input: every case one line, the right exit code, nothing half-written.

Ranks above what a merge can fill, absurd ranks and weights, -o with --export, export folders that
cannot be written, and a disk that fills up while merge or export writes.
"""

import tempfile
from pathlib import Path

import pytest
from safetensors import SafetensorError
from support import assert_one_line, info_for, make_adapter, perturb, run
from tiny import HIDDEN, make_model

from solo_cli import save_adapter
from solo_cli.engine.adapter_file import load_adapter


def saved(folder: Path, name: str, rank: int = 4, seed: int = 0, plan=((0, 3), (1, 3))) -> Path:
    model = make_model("llama")
    adapter = perturb(make_adapter(model, "schedule", plan=list(plan), rank=rank, seed=seed))
    return save_adapter(folder / f"{name}.safetensors", adapter, info_for(model, adapter))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --rank: at most what the merge can fill, checked before the merged adapter is allocated.


def test_a_rank_above_the_sum_of_the_input_ranks_is_refused(tmp_path):
    a, b = saved(tmp_path, "a"), saved(tmp_path, "b", seed=1)
    code, lines = run("merge", a, b, "-o", tmp_path / "m.safetensors", "--rank", 9)
    assert code == 2
    assert_one_line(lines, "--rank 9", "4 + 4", "--rank 8 or less")
    assert leftovers(tmp_path) == ["a.safetensors", "b.safetensors"]


def test_the_sum_of_the_input_ranks_is_accepted_and_exact(tmp_path):
    a, b = saved(tmp_path, "a"), saved(tmp_path, "b", seed=1)
    code, lines = run("merge", a, b, "-o", tmp_path / "m.safetensors", "--rank", 8)
    assert code == 0, lines
    adapter, _ = load_adapter(tmp_path / "m.safetensors")
    assert adapter.config.rank == 8
    assert lines[-1].endswith("exact)") and len(lines) == 1  # the rank that makes the merge exact: no error to report


def test_a_rank_above_one_input_of_its_connection_is_refused(tmp_path):
    """Connections no other input shares: the most a merged one holds is its one input's rank."""
    a = saved(tmp_path, "a", plan=[(0, 3)])
    b = saved(tmp_path, "b", seed=1, plan=[(1, 3)])
    code, lines = run("merge", a, b, "-o", tmp_path / "m.safetensors", "--rank", 5)
    assert code == 2
    assert_one_line(lines, "--rank 5", "one input", "--rank 4 or less")


def test_a_rank_above_the_hidden_size_is_refused(tmp_path):
    """Ranks 20 + 20 on d = 32: above 32 the file would be one solo refuses to read back."""
    a, b = saved(tmp_path, "a", rank=20), saved(tmp_path, "b", rank=20, seed=1)
    code, lines = run("merge", a, b, "-o", tmp_path / "m.safetensors", "--rank", HIDDEN + 1)
    assert code == 2
    assert_one_line(lines, f"--rank {HIDDEN + 1}", "hidden size", f"--rank {HIDDEN} or less")
    assert not (tmp_path / "m.safetensors").exists()


def test_an_absurd_rank_is_refused_before_anything_is_allocated(tmp_path, monkeypatch):
    a = saved(tmp_path, "a")
    built = []
    import solo_cli.merging.combine as combine

    monkeypatch.setattr(combine, "SoloAdapter", lambda config: built.append(config.rank))
    code, lines = run("merge", a, a, "-o", tmp_path / "m.safetensors", "--rank", 10**9)
    assert code == 2
    assert_one_line(lines, "--rank 1000000000", "--rank 8 or less")
    assert built == []


# --weights whose weighted maps overflow what an adapter file holds.


@pytest.mark.parametrize("weights", ["1e308,1e308", "1e39,1", "1e300,0"])
def test_weights_that_overflow_are_refused_naming_weights(tmp_path, weights):
    a, b = saved(tmp_path, "a"), saved(tmp_path, "b", seed=1)
    code, lines = run("merge", a, b, "-o", tmp_path / "m.safetensors", "--weights", weights)
    assert code == 2
    assert_one_line(lines, "--weights", "overflows", "smaller weights")
    assert leftovers(tmp_path) == ["a.safetensors", "b.safetensors"]


def test_large_weights_that_fit_still_merge(tmp_path):
    a, b = saved(tmp_path, "a"), saved(tmp_path, "b", seed=1)
    code, lines = run("merge", a, b, "-o", tmp_path / "m.safetensors", "--weights", "1e30,1e30")
    assert code == 0, lines
    load_adapter(tmp_path / "m.safetensors")  # finite, so it reads back


# Flags of the other job (issue 23): -o merges, --export exports.


def test_output_with_export_names_the_conflict_not_the_adapter_count(tmp_path):
    a = saved(tmp_path, "a")
    code, lines = run("merge", a, "-o", tmp_path / "x", "--export", tmp_path / "e")
    assert code == 2
    line = assert_one_line(lines, "-o/--output and --export", "give one of them")
    assert "exactly one adapter" not in line
    assert leftovers(tmp_path) == ["a.safetensors"]


def test_export_with_two_adapters_says_how_many_were_given(tmp_path):
    a = saved(tmp_path, "a")
    code, lines = run("merge", a, a, "--export", tmp_path / "e")
    assert code == 2
    assert_one_line(lines, "--export takes exactly one adapter, not 2", "-o")


@pytest.mark.parametrize(("flags", "named"), [(["--weights", "1"], "--weights"), (["--rank", "2"], "--rank")])
def test_merge_flags_with_export_are_refused(tmp_path, flags, named):
    a = saved(tmp_path, "a")
    code, lines = run("merge", a, "--export", tmp_path / "e", *flags)
    assert code == 2
    assert_one_line(lines, named, "only to merging with -o")


@pytest.mark.parametrize(
    ("flags", "named"), [(["--model", "m"], "--model"), (["--force"], "--force"), (["--revision", "v1"], "--revision")]
)
def test_export_flags_with_output_are_refused(tmp_path, flags, named):
    a = saved(tmp_path, "a")
    code, lines = run("merge", a, a, "-o", tmp_path / "m.safetensors", *flags)
    assert code == 2
    assert_one_line(lines, named, "only to --export")
    assert leftovers(tmp_path) == ["a.safetensors"]


# --export where nothing can be written, checked before the model loads (the model named here does not exist).


def test_export_under_a_file_is_one_line_before_loading(tmp_path):
    a = saved(tmp_path, "a")
    (tmp_path / "afile").write_text("mine")
    code, lines = run("merge", a, "--model", tmp_path / "no-such-model", "--export", tmp_path / "afile" / "e")
    assert code == 2
    assert_one_line(lines, "--export", "is a file, not a folder")
    assert (tmp_path / "afile").read_text() == "mine"


def test_export_into_a_read_only_folder_is_one_line_before_loading(tmp_path, monkeypatch):
    a = saved(tmp_path, "a")
    folder = tmp_path / "ro"
    folder.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):  # root ignores mode bits: refuse the folder's temporary files
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    code, lines = run("merge", a, "--model", tmp_path / "no-such-model", "--export", folder / "e")
    assert code == 2
    assert_one_line(lines, f"--export {folder / 'e'}", "cannot write there")
    assert leftovers(folder) == []


# A full disk, as safetensors reports it: a SafetensorError carrying "(os error 28)", not an OSError.


def _full(*args, **kwargs):
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def test_full_disk_while_merge_writes_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    a, b = saved(tmp_path, "a"), saved(tmp_path, "b", seed=1)
    old = save_adapter(tmp_path / "m.safetensors", *load_adapter(a))
    before = old.read_bytes()
    monkeypatch.setattr("solo_cli.engine.adapter_file.save_file", _full)
    code, lines = run("merge", a, b, "-o", old, "--overwrite")
    assert code == 1
    assert_one_line(lines, "no space left on device", "m.safetensors")
    assert old.read_bytes() == before
    assert leftovers(tmp_path) == ["a.safetensors", "b.safetensors", "m.safetensors"]


@pytest.mark.parametrize("where", ["solo_cli.merging.export.save_file", "transformers.modeling_utils.safe_save_file"])
def test_full_disk_while_export_writes_keeps_the_old_export(tiny_model_dir, tmp_path, monkeypatch, where):
    """The weights (transformers' save_pretrained, or the adapter tensors added after) fail to write."""
    a = saved(tmp_path, "a")
    export = tmp_path / "export"
    code, lines = run("merge", a, "--model", tiny_model_dir, "--export", export)
    assert code == 0, lines
    before = {p.name: p.read_bytes() for p in export.iterdir()}
    monkeypatch.setattr(where, _full)
    code, lines = run("merge", a, "--model", tiny_model_dir, "--export", export, "--overwrite")
    assert code == 1
    assert_one_line(lines, "no space left on device", str(export), "--export")
    assert {p.name: p.read_bytes() for p in export.iterdir()} == before
    assert leftovers(tmp_path) == ["a.safetensors", "export"]  # no staging folder left beside it
