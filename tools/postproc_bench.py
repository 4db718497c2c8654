"""Input and Python baseline of the post-processing benchmark (tools/bench_postproc.sh).

  postproc_bench.py gen REALDATA_DIR OUT_JSON   # ~500 candidate soft masks per image, from real GT
  postproc_bench.py time IN_JSON [REPEATS]      # seed's post-processing (numpy + pycocotools +
                                                # opencv + torch CPU), ms per image, as JSON

Two images: Sartorius 0030fd0e6378 (shsy5y, 395 cells) and ffc2ead3e8cc (astro, 134 cells, so the
astro re-corruption runs). Each ground-truth instance is copied with a few pixels of shift and a blur
into a soft uint8 mask (postproc_reference.predictions) until there are 500 candidates.
The Python side receives full-image uint8 masks [n, 520, 704], the seed's own format (get_seg_masks);
the Rust side receives the same bytes cropped to their non-zero rectangle.
"""

import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import postproc_reference as ref  # noqa: E402
import postproc_seed as seed  # noqa: E402

N = 500


def gen(root, out_path):
    rng = np.random.default_rng(1)
    images = {name: (cell, masks) for name, cell, masks in ref.sartorius_images(root)}
    cases = []
    for name in ["0030fd0e6378", "ffc2ead3e8cc"]:
        cell, masks = images[name]
        copies = -(-N // len(masks))
        soft, boxes = ref.predictions(masks, cell, rng, copies)
        pick = np.sort(rng.permutation(len(soft))[:N])
        soft, boxes = soft[pick], boxes[pick]
        idx, out, voted = seed.process_image(boxes, soft, seed.SEED_CONFIG)
        cases.append({
            "id": name,
            "height": ref.H,
            "width": ref.W,
            "boxes": boxes[:, :4].tolist(),
            "scores": [float(s) for s in boxes[:, 4]],
            "labels": [int(v) for v in boxes[:, 5]],
            "soft": [ref.soft_json(u) for u in soft],
            "expected": {"cell": voted, "indices": [int(i) for i in idx],
                         "rles": [seed.kaggle_rle(m) for m in out]},
        })
    with open(out_path, "w") as f:
        json.dump({"images": cases, "shapes": []}, f)


def load(path):
    with open(path) as f:
        d = json.load(f)
    out = []
    for im in d["images"]:
        soft = np.zeros((len(im["soft"]), im["height"], im["width"]), dtype=np.uint8)
        for k, s in enumerate(im["soft"]):
            t, l, h, w = s["rect"]
            soft[k, t:t + h, l:l + w] = np.frombuffer(bytes.fromhex(s["hex"]), dtype=np.uint8).reshape(h, w)
        boxes = np.concatenate([np.array(im["boxes"], dtype=np.float64),
                                np.array(im["scores"], dtype=np.float64)[:, None],
                                np.array(im["labels"], dtype=np.float64)[:, None]], axis=1)
        out.append((im["id"], boxes, soft, im["expected"]))
    return out


def time_it(path, repeats):
    result = {}
    for name, boxes, soft, expected in load(path):
        idx, _, _ = seed.process_image(boxes, soft, seed.SEED_CONFIG)  # warm-up and check
        assert [int(i) for i in idx] == expected["indices"]
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            seed.process_image(boxes, soft, seed.SEED_CONFIG)
            times.append(time.perf_counter() - t)
        result[name] = {"median_ms": 1000 * float(np.median(times)), "min_ms": 1000 * min(times),
                        "candidates": len(boxes), "kept": len(idx)}
    print(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        gen(sys.argv[2], sys.argv[3])
    else:
        time_it(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 5)
