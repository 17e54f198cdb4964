"""The backbone options of `bench run` and `bench models fetch`, end to end."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from plm_bench.cli import main
from plm_bench.results.store import Store

QUICK = ["--limit-train", "32", "--limit-eval", "16", "--epochs", "1"]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, terminal_width=200)


def test_fetch_without_network_fails_fast_in_one_line(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9", "COLUMNS": "400"}
    env.pop("HF_HUB_OFFLINE", None)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", "from plm_bench.cli import main; main()", "models", "fetch",
                             "esm2-8m"], capture_output=True, text=True, env=env, timeout=60)
    assert time.monotonic() - started < 30
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "cannot fetch facebook/esm2_t6_8M_UR50D" in lines[0] and "networked machine" in lines[0]


@pytest.fixture
def fake_hub(tiny_esm):
    """A local stand-in for the hub's HTTP API serving the tiny ESM2 as esm2-8m's repository,
    next to TF and .bin copies of the weights that fetch must leave alone."""
    repo, sha = "facebook/esm2_t6_8M_UR50D", "a" * 40
    files = {p.name: p.read_bytes() for p in tiny_esm.iterdir() if p.is_file()}
    files |= {"tf_model.h5": b"unwanted", "pytorch_model.bin": b"unwanted"}

    class Hub(BaseHTTPRequestHandler):
        def do_GET(self, head: bool = False) -> None:  # noqa: N802 (http.server's naming)
            if self.path.startswith(f"/api/models/{repo}/tree/"):
                body = json.dumps([{"type": "file", "path": n, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                                   for n, b in files.items()]).encode()
            elif self.path.startswith(f"/api/models/{repo}"):
                body = json.dumps({"id": repo, "sha": sha, "siblings": [{"rfilename": n} for n in files]}).encode()
            elif self.path.startswith(f"/{repo}/resolve/"):
                body = files[self.path.rsplit("/", 1)[1]]
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Repo-Commit", sha)
            self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET(head=True)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_fetched_weights_load_offline_by_hub_id(fake_hub, tmp_path):
    """bench models fetch stages config, tokenizer and safetensors (not the TF or .bin copies) in
    HF_HOME; then, with HF_HUB_OFFLINE=1, esm2-8m loads by its hub id from that cache."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": fake_hub}
    env.pop("HF_HUB_OFFLINE", None)
    fetched = subprocess.run([sys.executable, "-c", "from plm_bench.cli import main; main()", "models", "fetch",
                              "esm2-8m"], capture_output=True, text=True, env=env, timeout=120)
    assert fetched.returncode == 0, fetched.stderr
    snapshot = next((tmp_path / "hf" / "hub").glob("models--facebook--esm2_t6_8M_UR50D/snapshots/*"))
    assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "model.safetensors", "tokenizer_config.json",
                                                           "vocab.txt"]
    load = ("from plm_bench import plugins; from plm_bench.models.backbone import load_backbone; "
            "print(load_backbone(plugins.get('backbone', 'esm2-8m'), 'facebook/esm2_t6_8M_UR50D', 'cpu')"
            ".embed(['MKV']).hidden.shape)")
    offline = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, timeout=120,
                             env={**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.strip() == "torch.Size([1, 3, 32])"


def test_fetch_names_backbones_without_hub_weights():
    result = invoke("models", "fetch", "antiberty")
    assert result.exit_code == 2
    assert "antiberty has no hub_id, so there is nothing to fetch" in result.output


def test_random_init_runs_offline_and_is_recorded(data_dir, store_path, tmp_path, monkeypatch):
    monkeypatch.setenv("PLM_BENCH_CACHE", str(tmp_path / "cache"))
    result = invoke("run", "--backbone", "esm2-8m", "--init", "random", "--task", "gb1", "--data-dir", str(data_dir),
                    "--store", str(store_path), "--limit-train", "8", "--limit-eval", "8", "--epochs", "1")
    assert result.exit_code == 0, result.output
    (record,) = Store(store_path).records()
    assert record["status"] == "finished" and record["config"]["init"] == "random"
    assert record["parameters"]["total"] > 7_000_000  # the full ESM2-8M architecture, not a stub


def test_fp16_on_ankh_is_refused_in_one_line(data_dir, store_path, tiny_ankh):
    """The study's notebooks: "Ankh models do not support mixed precision training!" (fp16)."""
    result = invoke("run", "--backbone", "ankh-base", "--backbone-path", str(tiny_ankh), "--dtype", "fp16",
                    "--task", "gb1", "--data-dir", str(data_dir), "--store", str(store_path), *QUICK)
    assert result.exit_code == 2
    assert ("backbone ankh-base cannot compute in fp16 (it supports fp32, bf16); use --precision bf16-mixed"
            in result.output)
