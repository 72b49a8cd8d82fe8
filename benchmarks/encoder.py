"""Batching where it matters most: a BERT-base-sized encoder, in-process and served over HTTP (issue 13).

    .venv/bin/python benchmarks/encoder.py                                   # BERT-base size: for a GPU
    .venv/bin/python benchmarks/encoder.py --device cuda --precision fp16    # on a GPU machine
    .venv/bin/python benchmarks/encoder.py --layers 2 --hidden 256 --heads 4 --tokens 64   # a small CPU

The model: INT64 token ids (N x tokens) -> token + position embeddings -> ``torch.nn.TransformerEncoder``
(``layers`` x hidden, ``heads`` heads, feed-forward 4 x hidden, GELU) -> mean pooling -> 2 logits; random
weights (seed 0). BERT-base is the default: 12 layers, hidden 768, 12 heads, 128 tokens.

Measured, each as rows (sequences) answered per second:
1. in-process: the module itself on the device under ``torch.inference_mode()`` (and autocast for
   fp16/bf16) at batch 1, 2, 4 ... 32, each for ``--seconds``; the best batch is the reference;
2. over HTTP with modelport batching: ``modelport.register`` (torch runtime unless ``--runtime onnx``),
   then a real ``modelport serve`` subprocess on port 0 (one worker, ``--device``), and
   ``--concurrency`` clients, each on its own keep-alive connection, sending one row per V2 request
   (the load generator of ``modelport bench``), for ``--seconds``;
3. the same server with ``--no-batching``: the batch-1 server.
Then the ratios issue 13 names: HTTP batched / in-process best (target >= 0.5) and HTTP batched /
batch-1 server (target >= 20). The load generator runs on this machine too, sharing its cores
with the server: on a small CPU machine it takes a real share of them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
from torch import nn

import modelport
from modelport.bench.load import run_load
from modelport.server.spawn import serving
from modelport.settings import Settings

VOCAB = 30522  # BERT's vocabulary
BATCHES = (1, 2, 4, 8, 16, 32)


class Encoder(nn.Module):
    def __init__(self, *, layers: int, hidden: int, heads: int, tokens: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, hidden)
        self.positions = nn.Parameter(torch.randn(1, tokens, hidden) * 0.02)
        layer = nn.TransformerEncoderLayer(
            hidden, heads, dim_feedforward=4 * hidden, activation="gelu", batch_first=True, dropout=0.0
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(hidden, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.tokens(ids) + self.positions).mean(dim=1))


def in_process(module: nn.Module, args: argparse.Namespace) -> dict[int, float]:
    """Rows per second of the module itself at each batch size."""
    rng = np.random.default_rng(1)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    rates = {}
    for batch in BATCHES:
        ids = torch.from_numpy(rng.integers(0, VOCAB, size=(batch, args.tokens))).to(args.device)
        with torch.inference_mode(), torch.autocast(args.device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            for _ in range(2):
                module(ids)  # warm-up
            _sync(args.device)
            rows, start = 0, time.perf_counter()
            while time.perf_counter() - start < args.seconds or rows < 3 * batch:
                module(ids)
                rows += batch
            _sync(args.device)
            rates[batch] = rows / (time.perf_counter() - start)
        print(f"  in-process, batch {batch:>2}: {rates[batch]:10.1f} rows/s", flush=True)
    return rates


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def over_http(home: Path, args: argparse.Namespace, *, batching: bool) -> tuple[float, str]:
    """Rows per second answered by a real ``modelport serve``, one row per request."""
    ids = np.random.default_rng(2).integers(0, VOCAB, size=(1, args.tokens))
    body = orjson.dumps(
        {"inputs": [{"name": "input", "shape": [1, args.tokens], "datatype": "INT64", "data": ids.ravel().tolist()}]}
    )
    serve = ["encoder", "--workers", "1", "--threads", str(args.threads), "--device", args.device]
    serve += ["--max-batch-size", str(args.max_batch_size)] if batching else ["--no-batching"]
    with serving(serve, env={**os.environ, "MODELPORT_HOME": str(home)}) as server:
        url = f"{server.base}/v2/models/encoder/infer"
        asyncio.run(run_load(url, body, concurrency=args.concurrency, duration_s=min(3.0, args.seconds)))  # warm-up
        run = asyncio.run(run_load(url, body, concurrency=args.concurrency, duration_s=args.seconds))
    if run.errors:
        print(f"  errors: {dict(run.errors)}; first: {run.first_error}")
    latencies = sorted(run.latencies_s)
    p50 = latencies[len(latencies) // 2] * 1000 if latencies else float("nan")
    return len(run.latencies_s) / run.elapsed_s, f"p50 {p50:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--runtime", default="torch", choices=("torch", "onnx"), help="what serves it over HTTP")
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--concurrency", type=int, default=64, help="HTTP clients, one row per request each")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="the server's compute threads")
    args = parser.parse_args()
    torch.manual_seed(0)
    module = Encoder(layers=args.layers, hidden=args.hidden, heads=args.heads, tokens=args.tokens).eval()
    gpu = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "none"
    print(
        f"# encoder benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
        f"model: {args.layers} layers, hidden {args.hidden}, {args.heads} heads, {args.tokens} tokens, "
        f"{sum(p.numel() for p in module.parameters()) / 1e6:.1f} M parameters, {args.precision}\n"
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, GPU {gpu}; "
        f"torch {torch.__version__}, device {args.device}",
        flush=True,
    )
    torch.set_num_threads(args.threads)
    rates = in_process(module.to(args.device), args)
    best = max(rates, key=lambda batch: rates[batch])
    with tempfile.TemporaryDirectory(prefix="encoder-bench-") as tmp:
        home = Path(tmp) / "home"
        sample = np.random.default_rng(3).integers(0, VOCAB, size=(4, args.tokens))
        placement: dict[str, Any] = {} if args.precision == "fp32" else {"precision": args.precision}
        started = time.perf_counter()
        version = modelport.register(
            module.cpu(), name="encoder", sample_input=sample, runtime=args.runtime, settings=Settings(home=home),
            **placement,
        )  # fmt: skip
        print(f"  registered in {time.perf_counter() - started:.1f} s, served by the {version.runtime} runtime")
        batched, batched_latency = over_http(home, args, batching=True)
        print(f"  HTTP, batching on:  {batched:10.1f} rows/s ({batched_latency})", flush=True)
        single, single_latency = over_http(home, args, batching=False)
        print(f"  HTTP, --no-batching: {single:10.1f} rows/s ({single_latency})", flush=True)
    print(
        f"\n| measure | rows/s |\n|---|---|\n"
        f"| in-process, batch 1 | {rates[1]:.1f} |\n"
        f"| in-process, best batch ({best}) | {rates[best]:.1f} |\n"
        f"| HTTP, modelport batching ({args.concurrency} clients, 1 row each) | {batched:.1f} |\n"
        f"| HTTP, batch-1 server (--no-batching) | {single:.1f} |\n\n"
        f"HTTP batched / in-process best: {batched / rates[best]:.2f} (target >= 0.5)\n"
        f"HTTP batched / batch-1 server: {batched / single:.1f}x (target >= 20x)\n"
        f"in-process best / batch 1: {rates[best] / rates[1]:.1f}x (the most batching can give on this device)"
    )


if __name__ == "__main__":
    main()
