"""Slider change -> figure updated: median latency of notebook 01's explorers.

    python benchmarks/explorer_latency.py [--repeats 200]

Sets a slider's value from Python (exactly what a browser slider move does on
the kernel side) and times until the explorer's observers have recomputed the
group and written the FigureWidget's traces. Goal: under 20 ms on a 2-core CPU.
"""

import argparse
import statistics
import time

import numpy as np

from tpo_core import teaching as tt


def median_ms(slider, values):
    times = []
    for v in values:
        start = time.perf_counter()
        slider.value = float(v)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), max(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    n = args.repeats
    sweep = np.geomspace(0.05, 20, n)
    group = tt.GroupExplorer(k=8)
    overshoot = tt.OvershootExplorer(k=8, epochs=50)
    rows = [
        ("GroupExplorer eta", group.eta_slider, sweep),
        ("GroupExplorer score", group.score_sliders[0], np.linspace(-5, 5, n)),
        ("OvershootExplorer lr (50 epochs)", overshoot.lr_slider, np.geomspace(0.01, 100, n)),
    ]
    for name, slider, values in rows:
        med, worst = median_ms(slider, values)
        print(f"{name:<34} median {med:6.2f} ms   max {worst:6.2f} ms   ({len(values)} changes)")


if __name__ == "__main__":
    main()
