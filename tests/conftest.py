import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

# datasets caches (Arrow copies of every source, solo's encoded splits, downloaded modules) in a
# folder of this test session, never the user's ~/.cache/huggingface. The variables are set before
# datasets is imported (it reads them then) and are inherited by the `solo` processes tests start.
HF_DATASETS_HOME = Path(tempfile.mkdtemp(prefix="solo-tests-datasets-"))
os.environ["HF_DATASETS_CACHE"] = str(HF_DATASETS_HOME / "datasets")
os.environ["HF_MODULES_CACHE"] = str(HF_DATASETS_HOME / "modules")
# --dtype auto measures bf16 against float32 on the CPU: under the suite's load that measurement
# could differ from one process to the next, so the tests pin what auto means (child processes too).
os.environ["SOLO_AUTO_DTYPE"] = "float32"
if "datasets.config" in sys.modules:  # imported already (by a plugin): point its settings there too
    _config = sys.modules["datasets.config"]
    _config.HF_DATASETS_CACHE = HF_DATASETS_HOME / "datasets"
    _config.HF_MODULES_CACHE = HF_DATASETS_HOME / "modules"
    _config.DOWNLOADED_DATASETS_PATH = HF_DATASETS_HOME / "datasets" / "downloads"
    _config.EXTRACTED_DATASETS_PATH = HF_DATASETS_HOME / "datasets" / "downloads" / "extracted"


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(HF_DATASETS_HOME, ignore_errors=True)


from support import write_jsonl  # noqa: E402
from tiny import make_tokenizer, save_tiny  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Llama model folder with a chat-template tokenizer."""
    return save_tiny(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture
def tiny_data(tmp_path):
    """A train/valid folder of prompt/completion rows the tiny model can overfit."""
    rows = [{"prompt": f"name[Place {i}] ->", "completion": f" Place {i} is a cheap pub."} for i in range(16)]
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", rows)
    write_jsonl(folder / "valid.jsonl", rows[:4])
    return folder


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Tests never touch the user's ~/.cache/solo, except the real-model test, which opts in."""
    monkeypatch.setenv("SOLO_CACHE", str(tmp_path / "cache"))
