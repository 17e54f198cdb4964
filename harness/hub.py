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
