"""Loading pretrained weights by hub id or local directory, offline-first.

Users with network download from the Hugging Face hub (or the mirror in ``HF_ENDPOINT``);
everyone else runs from the HF cache (``HF_HOME``) or a local directory. When the weights are
neither cached nor reachable we say so in one line within seconds, instead of letting the hub
client retry for a minute.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from plm_bench.errors import BenchError

QUIET_WHILE_LOADING = ("transformers.modeling_utils", "transformers.distributed.tensor_parallel")


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
        try:
            return cls.from_pretrained(source, **kwargs)
        except BenchError:
            raise
        except Exception as exc:  # OSError, safetensors' SafetensorError, a config that does not parse, ...
            raise BenchError(f"{source}: cannot load {cls.__name__} from this folder ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); is it a complete checkpoint "
                             "of this backbone? Point --backbone-path at the saved weights") from None
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


def load_model(cls: Any, source: str, family: str, **kwargs: Any) -> Any:
    """:func:`from_pretrained` for weights, refusing a checkpoint that leaves weights uninitialized.

    transformers only warns (with a long table) when a checkpoint lacks tensors the class needs
    and fills them randomly, which a run would silently train on: e.g. ``--backbone-path`` naming
    a checkpoint of another family. Leftovers the encoder does not use (a T5 decoder, LM heads,
    a pooler) are expected, so the table is not shown (nor transformers' note that single-device
    BERT layers are not tensor-parallel sharded). Off a terminal its "Loading weights" bar is
    off too: a log gets our plain progress lines, not a bar's carriage returns.
    """
    from transformers.utils import logging as transformers_logging

    logs = [logging.getLogger(name) for name in QUIET_WHILE_LOADING]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.ERROR)
    no_bar = not sys.stderr.isatty() and transformers_logging.is_progress_bar_enabled()
    if no_bar:
        transformers_logging.disable_progress_bar()
    try:
        model, info = from_pretrained(cls, source, output_loading_info=True, **kwargs)
    finally:
        for log, level in zip(logs, levels, strict=True):
            log.setLevel(level)
        if no_bar:
            transformers_logging.enable_progress_bar()
    missing = sorted(info["missing_keys"])
    if missing:
        raise BenchError(f"{source} has no weights for {len(missing)} tensors of {cls.__name__} (e.g. {missing[0]}): "
                         f"it is not a {family} checkpoint; check --backbone-path or the registry's family")
    return model
