# Exploratory decoding experiment (validation, 2,000 colour images). Run: PYTHONPATH=. python results/colorization/cos16g_sat/experiments/spread.py runs/colorization/unet32g_lab_classification_cos16
import sys, torch
from training.run import Run
from training.colorize import colour_indices
from training.metrics import image_means
torch.set_num_threads(2)
run = Run.load(sys.argv[1]); model = run.model().eval()
data = run.images(); split = run.split(data)
val = colour_indices(data.images, split.val)[:2000]
bins = model.bins; enc = model.encoding
cache=[]
with torch.no_grad():
    for s in range(0, len(val), 250):
        x = torch.from_numpy(data.images[val[s:s+250]]).float()/255
        gray = enc.encode(x)[0]; cache.append((gray, model.raw(gray), x))
def score(T, pc, c, cap, const=None):
    bins.set_decoding(T, pc, 1.0)
    def gen():
        with torch.no_grad():
            for gray, raw, x in cache:
                ab = bins.decode(raw); m = ab.mean((2,3), keepdim=True)
                S = (ab-m).pow(2).sum(1).mean((1,2)).sqrt()
                g = torch.full_like(S, const) if const else (1 + c / S.clamp_min(1e-3)).clamp(max=cap)
                yield enc.decode(gray, (m + g.view(-1,1,1,1)*(ab-m) + 128)/256), x
    r = image_means(gen(), colour=True)
    print(f"T={T} pc={pc} c={c} cap={cap} const={const}: psnr {r['psnr']:.3f} colour {r['colourfulness_ratio']:.3f}", flush=True)
for T, pc in [(0.7, 1.0), (0.7, 0.75)]:
    for c in (2, 4, 8):
        for cap in (2.0, 3.0):
            score(T, pc, c, cap)
