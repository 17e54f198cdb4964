"""Loading pretrained weights by hub id or local directory, offline-first.

Users with network download from the Hugging Face hub (or the mirror in ``HF_ENDPOINT``);
everyone else runs from the HF cache (``HF_HOME``) or a local directory. When the weights are
neither cached nor reachable we say so in one line within seconds, instead of letting the hub
client retry for a minute.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from plm_bench.errors import BenchError


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub endpoint accepts a TCP connection (honours ``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def from_pretrained(cls: Any, source: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained(source)``: local dir, HF cache, then the hub if reachable.

    Remote code is never trusted; safetensors are used where the checkpoint has them.
    """
    kwargs = {"trust_remote_code": False, **kwargs}
    if Path(source).is_dir():
        return cls.from_pretrained(source, **kwargs)
    try:
        return cls.from_pretrained(source, local_files_only=True, **kwargs)
    except OSError:
        if not hub_reachable():
            cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
            raise BenchError(
                f"weights {source} are not in the HF cache ({cache}) and the hub "
                f"is unreachable: run `hf download {source}` on a networked machine and copy the "
                "cache, set HF_HOME to a cache that has them, or pass --backbone-path DIR"
            ) from None
    return cls.from_pretrained(source, **kwargs)


def fetch(hub_id: str) -> Path:
    """Download a checkpoint into the HF cache (``HF_HOME``) so later runs work offline.

    Takes configs, tokenizer files and one copy of the weights: safetensors where the repository
    has them, else the PyTorch ``.bin``; never the TensorFlow/Flax duplicates.
    """
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    if not hub_reachable():
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"{constants.ENDPOINT} is unreachable"
        raise BenchError(f"cannot fetch {hub_id}: {why}; run `bench models fetch` on a networked machine "
                         f"(HF_ENDPOINT selects a mirror), then copy its HF cache ({constants.HF_HOME}) here")
    try:
        files = [s.rfilename for s in HfApi().model_info(hub_id).siblings or []]
        weights = "*.safetensors" if any(f.endswith(".safetensors") for f in files) else "*.bin"
        return Path(snapshot_download(hub_id, allow_patterns=[weights, "*.json", "*.txt", "*.model"]))
    except (HfHubHTTPError, OSError) as exc:
        raise BenchError(f"cannot fetch {hub_id}: {str(exc).splitlines()[0]}") from None
