"""Test settings: offline before any Hugging Face import, a private HF_HOME, the data directory."""

import os
import tempfile

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("HF_UPDATE_DOWNLOAD_COUNTS", "0")
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="glat-hf-home-")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("GLAT_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def multi30k_dir() -> Path:
    """The Multi30k folder of the shared data directory (GLAT_DATA_DIR)."""
    path = DATA_DIR / "multi30k"
    if not path.is_dir():
        pytest.fail(f"Multi30k not found at {path}: set GLAT_DATA_DIR to the folder that holds multi30k/")
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
