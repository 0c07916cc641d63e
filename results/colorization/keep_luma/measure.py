"""Does giving the colorizer's output back the input's luma help? Measured on a colorizer ONNX file that does
not do it (models/colorizer.onnx before keeps_input_luma, e.g. `git show e2ffce7:models/colorizer.onnx`), on
the first 2,000 colour images of the validation and test splits:

- as exported: Lab decoded with L computed from luma Y;
- luma put back: R, G and B each shifted by Y - luma(output) (BT.601; Cb and Cr unchanged), then clamped;
- a fitted direction: the shift along the per-channel vector fitted on validation by least squares (the
  best linear use of the luma error; w.v = 1 keeps the luma exact).

    python results/colorization/keep_luma/measure.py /tmp/colorizer_e2ffce7.onnx > results/colorization/keep_luma/measure.log
"""
import sys

import onnxruntime as ort
import torch

from training.color import colourfulness, luma, with_luma
from training.colorize import colour_indices
from training.data import load_images, split_indices
from training.metrics import per_image_psnr

data = load_images("data/train.tar.gz")
split = split_indices(len(data.images), 0)
options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])


def colorized(part: str):
    idx = colour_indices(data.images, getattr(split, part))[:2000]
    x = torch.from_numpy(data.images[idx]).float() / 255
    y = luma(x)
    out = torch.cat([torch.from_numpy(session.run(None, {"gray": y[i : i + 250].numpy()})[0]) for i in range(0, len(y), 250)])
    return x, y, out


parts = {part: colorized(part) for part in ("val", "test")}
x, y, out = parts["val"]
d = y - luma(out)
fitted = ((d * (x - out)).sum((0, 2, 3)) / (d * d).sum()).view(1, 3, 1, 1)
print(f"fitted direction (R, G, B): {[round(v, 3) for v in fitted.flatten().tolist()]}")
for part, (x, y, out) in parts.items():
    base = per_image_psnr(y.expand(-1, 3, -1, -1), x).mean()
    print(f"{part}: grayscale baseline {base:.3f} dB")
    for name, rgb in (("as exported", out), ("luma put back", with_luma(out, y)),
                      ("fitted direction", (out + (y - luma(out)) * fitted).clamp(0, 1))):
        psnr = per_image_psnr(rgb, x).mean()
        ratio = colourfulness(rgb).mean() / colourfulness(x).mean()
        print(f"  {name:17s} {psnr:.3f} dB ({psnr - base:+.3f}), colourfulness {ratio:.1%}, luma error rms {(luma(rgb) - y).pow(2).mean().sqrt():.4f}")
