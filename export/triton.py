"""A Triton Inference Server model repository for the exported files.

    <repo>/<key>/config.pbtxt      onnxruntime backend, dynamic batching, the contract's tensors
    <repo>/<key>/1/model.onnx      a copy of the exported file (version 1 = the manifest's version)

<key> is the manifest's: `<autoencoder>.encoder`, `<autoencoder>.decoder`, `colorizer` (the names the
service's own V2 endpoints use).

Triton adds the batch dimension itself (max_batch_size > 0), so dims list C, H, W with -1 for H and W.
"""

from __future__ import annotations

import shutil
from pathlib import Path

MAX_BATCH_SIZE = 64
MAX_QUEUE_DELAY_US = 1000


def _dims(shape: list) -> str:
    return ", ".join(str(d) if isinstance(d, int) and d > 0 else "-1" for d in shape[1:])


def config_pbtxt(name: str, facts: dict) -> str:
    inp, outp = facts["inputs"][0], facts["outputs"][0]
    return f"""name: "{name}"
backend: "onnxruntime"
max_batch_size: {MAX_BATCH_SIZE}
input [
  {{
    name: "{inp['name']}"
    data_type: TYPE_FP32
    dims: [ {_dims(inp['shape'])} ]
  }}
]
output [
  {{
    name: "{outp['name']}"
    data_type: TYPE_FP32
    dims: [ {_dims(outp['shape'])} ]
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}
}}
instance_group [
  {{
    kind: KIND_AUTO
  }}
]
"""


def write_repository(models_dir: Path, manifest: dict, repo: Path) -> list[Path]:
    written = []
    for key, facts in manifest["models"].items():
        version_dir = repo / key / str(facts.get("version", 1))
        version_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(models_dir / facts["file"], version_dir / "model.onnx")
        (repo / key / "config.pbtxt").write_text(config_pbtxt(key, facts))
        written += [version_dir / "model.onnx", repo / key / "config.pbtxt"]
    return written
