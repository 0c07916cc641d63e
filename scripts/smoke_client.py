"""One request to each endpoint of a running service, through the client library (container smoke test)."""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "clients" / "python"))
from cae_client import Client, Unauthorised  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--wait", type=float, default=300)  # the warm-up: about a minute on 2 cores
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    with Client(base_url=args.url, api_key=args.api_key) as cae:
        deadline = time.time() + args.wait
        while not cae.ready():
            if time.time() > deadline:
                print(f"[smoke] not ready after {args.wait:g} s")
                return 1
            time.sleep(0.5)
        listing = cae.models()
        print("[smoke] models:", ", ".join(f"{m['key']} v{m['version']} {m['providers'][0]}" for m in listing["models"]))
        assert cae.reconstruct(image).image.size == (32, 32)
        assert cae.colorize(image.convert("L")).image.size == (32, 32)
        z = cae.encode(image)
        assert cae.decode(z).image.size == (32, 32)
        assert len(cae.reconstruct_batch([image, image])) == 2
        big = Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8))
        assert cae.colorize(big).image.size == (80, 48)
        print(f"[smoke] reconstruct, colorize, encode ({'x'.join(map(str, z.shape))}), decode, batch: ok")
        for member in listing["autoencoders"]:  # every autoencoder of the family, by name
            zm = cae.encode(image, model=member["name"])
            assert zm.model == member["name"] and zm.latent.size == member["latent_size_32x32"]
            assert cae.decode(zm).image.size == (32, 32) and cae.reconstruct(image, model=member["name"]).model == member["name"]
        print(f"[smoke] family by name: {', '.join(a['name'] for a in listing['autoencoders'])} "
              f"(default {listing['default_autoencoder']}): ok")
    with Client(base_url=args.url) as keyless:
        try:
            keyless.reconstruct(image)
            print("[smoke] a request without the API key was served")
            return 1
        except Unauthorised:
            print("[smoke] no API key: 401 as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
