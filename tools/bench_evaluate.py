"""Times whole processes of the `evaluate` example against pycocotools and faster-coco-eval on the same
files (run by tools/bench_evaluate.sh): each command RUNS times after one warm-up, the commands taking
turns, single-threaded (RAYON_NUM_THREADS=1, OMP_NUM_THREADS=1); prints the median wall time of each and
the ratios, and the largest difference of the 12 COCO stats from pycocotools'.

usage: bench_evaluate.py EVALUATE_BIN PYTHON DATA_DIR [RUNS]
"""
import json
import os
import statistics
import subprocess
import sys
import time

ENV = dict(os.environ, RAYON_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")


def run(cmd):
    t = time.perf_counter()
    out = subprocess.run(cmd, env=ENV, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t, out


def last_json(out):
    return json.loads(out.strip().splitlines()[-1])


def with_int_ids(gt, res):
    """faster-coco-eval needs integer image ids; the Sartorius files use the competition's string
    ids. Writes copies with the ids numbered (same order) that all three tools then read."""
    g, r = json.load(open(gt)), json.load(open(res))
    if all(isinstance(im["id"], int) for im in g["images"]):
        return gt, res
    ids = {im["id"]: k + 1 for k, im in enumerate(g["images"])}
    for im in g["images"]:
        im["id"] = ids[im["id"]]
    for a in g["annotations"]:
        a["image_id"] = ids[a["image_id"]]
    for a in r:
        a["image_id"] = ids[a["image_id"]]
    out_g, out_r = gt.replace(".json", "_int.json"), res.replace(".json", "_int.json")
    json.dump(g, open(out_g, "w"))
    json.dump(r, open(out_r, "w"))
    return out_g, out_r


def main():
    evaluate, python, data = sys.argv[1:4]
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    here = os.path.dirname(os.path.abspath(__file__))
    base = [python, os.path.join(here, "evaluate_baseline.py")]
    cases = []
    for name in sorted(os.listdir(data)):
        d = os.path.join(data, name)
        exp = os.path.join(d, "expected.json")
        if name == "competition" or not os.path.exists(exp):
            continue
        max_dets = ",".join(str(x) for x in json.load(open(exp))["max_dets"])
        gt, res = with_int_ids(os.path.join(d, "gt.json"), os.path.join(d, "segm.json"))
        cases.append((name + " segm", {
            "evaluate": [evaluate, "--coco-truth", gt, "--coco-pred", res, "--iou-type", "segm",
                         "--max-dets", max_dets, "--json"],
            "pycocotools": base + ["pycocotools", gt, res, "segm", max_dets],
            "faster-coco-eval": base + ["faster", gt, res, "segm", max_dets],
        }))
    comp = os.path.join(data, "competition")
    t, s = os.path.join(comp, "truth.csv"), os.path.join(comp, "submission.csv")
    cases.append(("competition metric (CSV)", {
        "evaluate": [evaluate, "--truth", t, "--pred", s, "--json"],
        "pycocotools": base + ["competition", t, s],
    }))
    help_times = [run([evaluate, "--help"])[0] for _ in range(runs + 1)][1:]
    print(f"evaluate --help: median {statistics.median(help_times) * 1e3:.1f} ms over {runs} runs")
    print(f"{'file':<36}{'evaluate':>10}{'pycocotools':>13}{'faster-coco':>13}{'vs pycoco':>11}{'vs faster':>11}{'max |dstat|':>13}")
    for name, cmds in cases:
        times = {k: [] for k in cmds}
        outs = {}
        for i in range(runs + 1):
            for k, cmd in cmds.items():
                dt, out = run(cmd)
                outs[k] = out
                if i:
                    times[k].append(dt)
        med = {k: statistics.median(v) for k, v in times.items()}
        if "faster-coco-eval" in cmds:
            rep = json.loads(outs["evaluate"])
            st = rep["stats"]
            ours = [st[n] for n in ["AP", "AP50", "AP75", "APs", "APm", "APl"]] + \
                [st[f"AR@{m}"] for m in rep["max_dets"]] + [st[n] for n in ["ARs", "ARm", "ARl"]]
            ref = last_json(outs["pycocotools"])
            diff = max(abs(a - b) for a, b in zip(ours, ref))
            fast = f"{med['faster-coco-eval']:>13.3f}"
            vs_fast = f"{med['faster-coco-eval'] / med['evaluate']:>10.1f}x"
        else:
            ours = json.loads(outs["evaluate"])["overall"]
            diff = abs(ours - last_json(outs["pycocotools"]))
            fast, vs_fast = f"{'-':>13}", f"{'-':>11}"
        print(f"{name:<36}{med['evaluate']:>10.3f}{med['pycocotools']:>13.3f}{fast}"
              f"{med['pycocotools'] / med['evaluate']:>10.1f}x{vs_fast}{diff:>13.1e}")


if __name__ == "__main__":
    main()
