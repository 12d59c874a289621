"""A Hub dataset in the datasets cache, as a connected ``load_dataset(repo_id)`` leaves it, for offline tests."""

import shutil
from pathlib import Path

import pandas as pd


def prefill_hub_cache(cache: Path, tmp_path: Path, repo_id: str, sha: str, splits: dict[str, list[dict]]) -> None:
    """The datasets cache that a connected ``load_dataset(repo_id)`` of a Parquet repo leaves.

    Online, datasets builds the repo's Parquet files into ``<cache>/<owner>___<name>/<config>/
    <version>/<commit>/`` (``<name>-<split>.arrow`` and ``dataset_info.json``). Offline it finds
    that folder again (``CachedDatasetModuleFactory`` and the ``cache`` builder): the path these
    tests take. The same Parquet builder writes it here, from local files, under that name.
    """
    from datasets.packaged_modules.parquet.parquet import Parquet

    files = {}
    for split, rows in splits.items():
        files[split] = tmp_path / f"hub-{split}.parquet"
        pd.DataFrame(rows).to_parquet(files[split])
    name = repo_id.split("/")[1]
    builder = Parquet(
        cache_dir=str(cache), dataset_name=name, config_name="default", hash=sha, data_files={k: str(v) for k, v in files.items()}
    )
    builder.download_and_prepare()
    target = cache / repo_id.replace("/", "___") / "default" / "0.0.0" / sha
    target.parent.mkdir(parents=True)
    shutil.move(builder.cache_dir, target)
