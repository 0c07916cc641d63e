# Exploratory decoding experiment (validation, 2,000 colour images). Run: PYTHONPATH=. python results/colorization/cos16g_sat/experiments/gain.py runs/colorization/unet32g_lab_classification_cos16
import sys, time, torch, numpy as np
from training.run import Run
from training.colorize import colour_indices, grayscale_baseline
from training.metrics import image_means
torch.set_num_threads(2)
folder = sys.argv[1]
run = Run.load(folder); model = run.model().eval()
data = run.images(); split = run.split(data)
val = colour_indices(data.images, split.val)[:2000]
print("val baseline", grayscale_baseline(data.images, val))
t0=time.time()
batches=[]
with torch.no_grad():
    for s in range(0, len(val), 250):
        x = torch.from_numpy(data.images[val[s:s+250]]).float()/255
        gray = model.encoding.encode(x)[0]
        batches.append((gray, model.raw(gray).half(), x))
print("logits", time.time()-t0)
bins = model.bins
def run_cfg(T, pc, g, centred):
    bins.temperature, bins.prior_correction = T, pc
    def gen():
        with torch.no_grad():
            for gray, logits, x in batches:
                ab = bins.annealed_mean(logits.float())
                if centred:
                    m = ab.mean((2,3), keepdim=True); ab = m + g*(ab-m)
                else:
                    ab = g*ab
                yield model.encoding.decode(gray, (ab+128)/256), x
    r = image_means(gen(), colour=True)
    print(f"T={T} pc={pc} g={g} centred={centred}: psnr {r['psnr']:.3f} ssim {r['ssim']:.4f} colour {r['colourfulness_ratio']:.3f}", flush=True)
for T, pc in [(0.7,1.0),(1.0,1.0),(0.7,0.75),(1.0,0.75), (0.7, 0.6)]:
    for g in [1.0, 1.2, 1.4, 1.6, 1.8]:
        for c in ([False, True] if g != 1.0 else [False]):
            run_cfg(T, pc, g, c)
