"""Adapters from the Hugging Face Hub: ``--adapter user/name`` is downloaded into the hub cache.

A local path always wins; a reference that is not a local path but looks like a repo id
(``owner/name``) is fetched with ``huggingface_hub`` (only the adapter, its model card and config),
into its usual cache (``HF_HOME`` / ``HF_HUB_CACHE``). With ``HF_HUB_OFFLINE=1`` (on a plane) the
cached copy is used and nothing touches the network. Imported only when a Hub id is given.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UsageError, first_line, param

# huggingface_hub's own rule for repo ids: owner/name, letters, digits, "-", "_", "."
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
ADAPTER_FILES = ["adapter.safetensors", "README.md", "config.json"]


def is_hub_id(ref: str) -> bool:
    """``owner/name`` that is not a local path (a missing local path like runs/x also matches: see resolve)."""
    return bool(_REPO_ID.match(ref)) and not ref.endswith((".safetensors", ".json")) and ".." not in ref


def split_revision(ref: str) -> tuple[str, str | None]:
    """``user/name@rev`` -> (``user/name``, ``rev``); anything else (a local path first) as it is, with no revision."""
    repo, at, revision = ref.rpartition("@")
    if at and revision and is_hub_id(repo) and not Path(ref).exists():
        return repo, revision
    return ref, None


def resolve_adapter_ref(ref: str, revision: str | None = None, flag: str = "adapter") -> str:
    """A local adapter path as given, or the cached download folder of a Hub repo id.

    ``revision`` (a branch, tag or commit) applies to Hub ids only; ``user/name@rev`` says it inline.
    """
    ref, inline = split_revision(ref)
    if inline is not None:
        if revision is not None and revision != inline:
            raise UsageError(
                f"{param(flag)} {ref}@{inline}: names revision {inline}, and {param('adapter_revision')} {revision}; give one"
            )
        revision = inline
    if Path(ref).exists() or not is_hub_id(ref):
        if revision is not None:
            raise UsageError(f"{param('adapter_revision')} {revision}: applies to a Hub repo id, and {ref} is a local path")
        return ref
    return str(_download(ref, revision, flag))


def _download(repo_id: str, revision: str | None, flag: str) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{param(flag)} {repo_id}" + (f" (revision {revision})" if revision else "")
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=ADAPTER_FILES, library_name="solo"))
    except LocalEntryNotFoundError:
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        raise UsageError(
            f"{where}: no such local path, and the Hub copy is not in the cache{offline} and cannot be downloaded; "
            "check the path, or download it once with network access"
        ) from None
    except RevisionNotFoundError:
        raise UsageError(f"{where}: the repo has no such revision; pass a branch, tag or commit it has") from None
    except GatedRepoError:
        raise UsageError(f"{where}: the repo is gated; accept its terms on the Hub and log in (hf auth login)") from None
    except RepositoryNotFoundError:
        raise UsageError(
            f"{where}: no such local path, and no such Hub repo (or it is private: log in with hf auth login)"
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise UsageError(f"{where}: downloading from the Hub failed ({first_line(exc)}); try again") from None
    if not (folder / "adapter.safetensors").is_file():
        raise UsageError(f"{where}: the repo holds no adapter.safetensors; is it a solo adapter?")
    return folder
