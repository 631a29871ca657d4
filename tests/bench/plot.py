#!/usr/bin/env python3
"""Plot bench.json (from tests/bench/bench.py): suspend and resume time against VRAM size for
the fast path, the daemon's driver path and a fresh-process toggle, and the PCIe line.

usage: plot.py bench.json bench.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    res = json.load(open(sys.argv[1]))
    sizes = [r["gib"] for r in res["sweep"]]
    link = min(res["pcie"]["h2d_gb_per_s"], res["pcie"]["d2h_gb_per_s"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, op in zip(axes, ("suspend", "resume")):
        for key, label, style in (("fast", "gpu-warmd fast path (shim)", "o-"),
                                  ("driver", "gpu-warmd driver path", "s--"),
                                  ("fresh", "fresh process (cuda-checkpoint-like)", "^:")):
            ax.plot(sizes, [r[key][f"{op}_s"] for r in res["sweep"]], style, label=label)
        ax.plot(sizes, [g * 1.073741824 / link for g in sizes], "k-", alpha=0.3,
                label=f"PCIe pinned copy alone ({link:.0f} GB/s)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes, [f"{g:g}" for g in sizes])
        ax.set_xlabel("VRAM held by the process (GiB)")
        ax.set_title(op)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("seconds")
    axes[1].legend(fontsize=8)
    title = f"{res.get('gpu', '')} - {res.get('date', '')}"
    if "server" in res:
        sv = res["server"]
        title += (f"\nmodel server: cold start to first token {sv['cold']['first_token_s']:.1f} s, "
                  f"restore to first token {sv['fast']['restore_first_token_s']:.2f} s (fast), "
                  f"{sv['driver']['restore_first_token_s']:.1f} s (driver)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
