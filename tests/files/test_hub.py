"""Adapters by Hub repo id, from a pre-filled huggingface_hub cache in offline mode (no network here)."""

import pytest

from solo_cli.errors import UsageError
from solo_cli.files import hub

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def prefill(cache, repo_id: str, files: dict, ref: str = "main", commit: str = COMMIT):
    """The layout huggingface_hub leaves after a download: refs/<ref> -> commit, snapshots/<commit>/files."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    return snapshot


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_a_cached_repo_resolves_to_its_snapshot(offline_cache):
    snapshot = prefill(offline_cache, "me/solo-e2e", {"adapter.safetensors": b"x"})
    assert hub.resolve_adapter_ref("me/solo-e2e") == str(snapshot)


def test_a_revision_picks_its_own_snapshot(offline_cache):
    prefill(offline_cache, "me/solo-e2e", {"adapter.safetensors": b"main"})
    tagged = prefill(offline_cache, "me/solo-e2e", {"adapter.safetensors": b"v1"}, ref="v1", commit="f" * 40)
    assert hub.resolve_adapter_ref("me/solo-e2e", "v1") == str(tagged)


def test_local_paths_win_and_take_no_revision(tmp_path, offline_cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "me").mkdir()
    (tmp_path / "me" / "solo-e2e").mkdir()
    prefill(offline_cache, "me/solo-e2e", {"adapter.safetensors": b"x"})
    assert hub.resolve_adapter_ref("me/solo-e2e") == "me/solo-e2e"
    assert hub.resolve_adapter_ref("run/adapter.safetensors") == "run/adapter.safetensors"  # a file name, not a repo
    with pytest.raises(UsageError) as info:
        hub.resolve_adapter_ref("me/solo-e2e", "v1")
    assert info.value.as_flags().startswith("--adapter-revision v1: applies to a Hub repo id")


def test_not_cached_offline_is_one_line(offline_cache):
    with pytest.raises(UsageError) as info:
        hub.resolve_adapter_ref("me/missing")
    message = info.value.as_flags()
    assert message.startswith("--adapter me/missing: no such local path, and the Hub copy is not in the cache")
    assert "HF_HUB_OFFLINE" in message


def test_a_repo_without_an_adapter_is_refused(offline_cache):
    prefill(offline_cache, "me/not-solo", {"README.md": b"hi"})
    with pytest.raises(UsageError, match="holds no adapter.safetensors"):
        hub.resolve_adapter_ref("me/not-solo")
