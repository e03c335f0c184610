"""A CPU run's resident memory and step time, with and without handing the C heap's free
pages back after each backward and each sampled batch (``tpo_core.llm.release_free_heap``).

    python benchmarks/llm_cpu_memory.py               # notebook 06's CPU size, 3 steps per run
    python benchmarks/llm_cpu_memory.py --steps 12    # a whole run of that size
    python benchmarks/llm_cpu_memory.py --model DIR   # any local model folder instead

Each variant runs in a fresh process (a heap of its own), loads the model, and trains TPO
for ``--steps`` steps through :func:`tpo_core.llm.rlvr_train`, while a thread reads the
process's resident memory every 2 ms: anonymous memory (the heap: activations, optimiser,
Python) and file-backed memory (the model's weights, mapped from the unpacked file). Prints
JSON: each variant's peaks in MB and seconds per step, and the ratios of the two. Run it
on an otherwise idle machine: the step times are compared side by side.
"""

import argparse
import json
import subprocess
import sys
import threading
import time


def resident_mb() -> tuple[float, float]:
    """(anonymous, file-backed) resident memory of this process, in MB."""
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return tuple(int(fields[k].split()[0]) / 1024 for k in ("RssAnon", "RssFile"))


def child(variant: str, steps: int, model: str | None) -> dict:
    from tpo_core import llm
    from tpo_core.llm import model as policy

    if variant == "keep":  # glibc keeps what was freed: release_free_heap finds no malloc_trim
        policy._malloc_trim = lambda: None
    peak = {"total": 0.0, "anon": 0.0, "file": 0.0}

    def poll():
        while True:
            anon, file = resident_mb()
            peak.update(total=max(peak["total"], anon + file), anon=max(peak["anon"], anon))
            peak["file"] = max(peak["file"], file)
            time.sleep(0.002)

    threading.Thread(target=poll, daemon=True).start()
    settings = llm.choose_scale(0, session=True).settings | dict(steps=steps, method="tpo")
    if model is not None:
        settings |= dict(model=model, chat_template=False)
    result = llm.rlvr_train(llm.RLVRConfig(**settings), progress=False)
    seconds = result.history["seconds"]
    time.sleep(0.01)
    return {f"peak_{k}_mb": round(v) for k, v in peak.items()} | dict(
        seconds_per_step=sum(seconds[1:] or seconds) / len(seconds[1:] or seconds),  # not the first
        steps=steps,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="training steps per run (default 3)")
    parser.add_argument("--model", help="a local model folder instead of SmolLM2")
    parser.add_argument("--child", choices=("keep", "trim"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.model)))
        return
    report = {}
    for variant in ("keep", "trim"):
        command = [sys.executable, __file__, "--child", variant, "--steps", str(args.steps)]
        command += ["--model", args.model] if args.model else []
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        report[variant] = json.loads(out.strip().splitlines()[-1])
    keep, trim = report["keep"], report["trim"]
    compared = ("peak_total_mb", "peak_anon_mb", "seconds_per_step")
    report["trim_over_keep"] = {k: round(trim[k] / keep[k], 3) for k in compared}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
