"""The baseline the service is measured against: the ~15-line FastAPI + onnxruntime app anyone would write.

Same work per request as the service's /reconstruct (decode the PNG, encoder run, decoder run, encode a
PNG); no validation, limits, metrics, queue or batching. `/raw`: the image as the body (async handler);
`/multipart`: a form upload with a sync handler, as the FastAPI tutorial shows it.
"""

import io
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, File, Request, Response
from PIL import Image

from cae.manifest import read_manifest

models = os.environ.get("CAE_MODEL_DIR", "models")
pair = read_manifest(models).default  # the default autoencoder's files
encoder = ort.InferenceSession(f"{models}/{pair.encoder.file}", providers=["CPUExecutionProvider"])
decoder = ort.InferenceSession(f"{models}/{pair.decoder.file}", providers=["CPUExecutionProvider"])
app = FastAPI()


def reconstruct(data: bytes) -> bytes:
    x = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32).transpose(2, 0, 1)[None] / 255
    y = decoder.run(None, {"latent": encoder.run(None, {"image": x})[0]})[0][0]
    buf = io.BytesIO()
    Image.fromarray((y.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


@app.post("/raw")
async def raw(request: Request):
    return Response(reconstruct(await request.body()), media_type="image/png")


@app.post("/multipart")
def multipart(image: bytes = File(...)):
    return Response(reconstruct(image), media_type="image/png")
