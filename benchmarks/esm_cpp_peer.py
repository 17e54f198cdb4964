"""The esm.cpp side of ``embedding_throughput.py --peer esm-cpp``, run by the interpreter of a
separate virtual environment (esm-cpp pins numpy<2; it needs no torch).

Reads a job JSON (``weights``: an ``EsmModel`` safetensors file; ``ids``: token ids per sequence,
``<cls>``/``<eos>`` included; ``check``: which sequences to return hidden states of; ``repeats``; threads come from
``OMP_NUM_THREADS``), converts the weights with esm.cpp's own converter path (safetensors -> GGUF ->
model), times ``forward_scheduled`` (its packed-batch scheduler) over all sequences, and writes
the timings and the final hidden states of the checked sequences (``forward_with_hidden_states``)
to the result ``.npz``.

``forward_scheduled`` returns masked-LM logits, so esm.cpp computes the LM head on top of the
encoder (about 1.5 % of esm2-8m's FLOPs); the weights loaded for it are zero, since only the
timing of that path and the encoder's hidden states are compared.

    /work/venvs/esmcpp/bin/python benchmarks/esm_cpp_peer.py JOB.json RESULT.npz
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import esm_cpp
import numpy as np
from safetensors.numpy import load_file, save_file


def masked_lm_layout(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The published ``EsmForMaskedLM`` files' tensor names, which esm.cpp reads: the encoder under
    ``esm.``, LayerNorm ``weight``/``bias`` (transformers 5 saves ``gamma``/``beta``), the rotary
    ``inv_freq`` once per layer (transformers 5 saves one ``layer.*`` entry), and an all-zero LM
    head of the right shapes."""
    out: dict[str, np.ndarray] = {}
    layers = sorted({name.split(".")[2] for name in weights if name.startswith("encoder.layer.")} - {"*"}, key=int)
    for name, value in weights.items():
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        for layer in layers if ".*." in name else [None]:
            out["esm." + (name if layer is None else name.replace(".*.", f".{layer}."))] = value
    embedding = weights["embeddings.word_embeddings.weight"]
    vocab, hidden = embedding.shape
    out.update({"lm_head.dense.weight": np.zeros((hidden, hidden), np.float32),
                "lm_head.dense.bias": np.zeros(hidden, np.float32),
                "lm_head.layer_norm.weight": np.ones(hidden, np.float32),
                "lm_head.layer_norm.bias": np.zeros(hidden, np.float32),
                "lm_head.decoder.weight": embedding, "lm_head.bias": np.zeros(vocab, np.float32)})
    return out


def main(job_path: str, result_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    with tempfile.TemporaryDirectory(prefix="esm-cpp-peer-") as scratch:
        source = Path(scratch) / "model.safetensors"
        save_file(masked_lm_layout(load_file(job["weights"])), str(source))
        gguf = Path(scratch) / "model.gguf"
        esm_cpp.Model.load_from_safetensors(str(source)).save_to_gguf(str(gguf))  # what esm-cpp-convert does
        model = esm_cpp.Model.load_from_gguf(str(gguf))
    ids = [np.asarray(row, np.int32) for row in job["ids"]]
    model.forward_scheduled(ids[:: max(1, len(ids) // 4)])  # warm-up, as the other paths get
    seconds = []
    for _ in range(job["repeats"]):
        started = time.perf_counter()
        model.forward_scheduled(ids)
        seconds.append(time.perf_counter() - started)
    hidden = {str(i): model.forward_with_hidden_states(ids[i])[1][-1] for i in job["check"]}
    np.savez(result_path, seconds=np.asarray(seconds), isa=np.asarray(esm_cpp.current_isa()),
             threads=np.asarray(esm_cpp.Model.num_threads),
             version=np.asarray(esm_cpp.__version__), **hidden)


if __name__ == "__main__":
    main(*sys.argv[1:])
