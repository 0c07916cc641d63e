"""The trade between PSNR and colourfulness before and after fine-tuning on the served output, from the two reports'
decoding scans (validation, first 2,000 colour images, fed luma Y as served): for each colourfulness floor, the best
decoding that keeps it. Run from the repository root: python results/colorization/served80/compare.py"""

import json
from pathlib import Path

REPORTS = {"24 epochs, classification loss (cos24w64gf)": ("results/colorization/cos24w64gf", "unet64g_lab_classification_cos24f"),
           "then 3 epochs on the served output (served80, shipped)": ("results/colorization/served80", "unet64g_served80"),
           "or 6 epochs (served80_e6)": ("results/colorization/served80_e6", "unet64g_served80_e6")}
FLOORS = (0.7, 0.75, 0.8, 0.85, 0.9)


def front(scan: list[dict]) -> list[dict | None]:
    best = []
    for floor in FLOORS:
        vivid = [s for s in scan if s["colourfulness_ratio"] >= floor]
        best.append(max(vivid, key=lambda s: s["psnr"]) if vivid else None)
    return best


fronts = {label: front(json.loads((Path(folder) / "results.json").read_text())["temperatures"][run]["scan"])
          for label, (folder, run) in REPORTS.items()}
print("| colourfulness at least | " + " | ".join(fronts) + " | gain of the shipped (dB) |")
print("|---" * (len(fronts) + 2) + "|")
for i, floor in enumerate(FLOORS):
    cells = [f"{b['psnr']:.2f} dB at {b['colourfulness_ratio']:.1%} (T {b['temperature']:g}, pc {b['prior_correction']:g}, "
             f"sat {b['saturation']:g})" if b else "-" for b in (f[i] for f in fronts.values())]
    before, after = list(f[i] for f in fronts.values())[:2]
    gain = f"{after['psnr'] - before['psnr']:+.2f}" if before and after else "-"
    print(f"| {floor:.0%} | " + " | ".join(cells) + f" | {gain} |")
