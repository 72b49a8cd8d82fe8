"""docs/benchmarks.png from benchmarks/.work/results.json (run in benchmarks/.venvs/chart).

benchmarks/.venvs/chart/bin/python benchmarks/chart.py RESULTS.json OUT.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = {"ceiling": "#9e9e9e", "flask": "#8d6e63", "fastapi": "#26a69a", "mlserver": "#5c6bc0",
          "bentoml": "#ef6c00", "modelport": "#d81b60"}  # fmt: skip


def main(results_path: str, out_path: str) -> None:
    info = json.loads(Path(results_path).read_text())
    results = info["results"]
    models = list(dict.fromkeys(r["model"] for r in results))
    cases = info["cases"]
    rows = max(sum(1 for r in results if r["model"] == m and r["cases"]) for m in models)
    fig, axes = plt.subplots(len(cases), len(models), figsize=(7 * len(models), (0.3 * rows + 1) * len(cases) + 1),
                             squeeze=False)  # fmt: skip
    for col, model in enumerate(models):
        measured = [r for r in results if r["model"] == model and r["cases"]]
        for row, case in enumerate(cases):
            ax = axes[row][col]
            names = [r["server"] for r in measured]
            values = [r["cases"].get(case, {}).get("rps", 0) for r in measured]
            ax.barh(range(len(names)), values, color=[COLORS.get(r["group"], "black") for r in measured])
            for y, value in enumerate(values):
                ax.text(value, y, f" {value:,.0f}", va="center", fontsize=7)
            ax.set_yticks(range(len(names)), names, fontsize=7)
            ax.invert_yaxis()
            ax.set_xscale("log")
            ax.set_xlim(left=1, right=max([*values, 10]) * 3)
            rows_, conns = case.split("x")
            ax.set_title(f"{model}: {rows_} row(s)/request, {conns} connections: req/s", fontsize=9)
            ax.tick_params(axis="x", labelsize=7)
    title = "modelport vs peers, wrk on 127.0.0.1"
    if info["quick"]:
        title += "  SMOKE RUN on a loaded machine: not results"
    fig.suptitle(f"{title}\n{info['date']}, {info['machine']['nproc']} cores", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(out_path, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
