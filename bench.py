"""facet benchmarks: each section prints a table whose ratios are measured in the same run.

    python bench.py                 # every section
    python bench.py --only raster   # one section (names: see SECTIONS)

Figures are hardware-dependent; the README quotes the ones measured on the reference machine
(2 CPU cores). Benchmarks are not tests: nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import time


def timed(fn, repeat: int = 3, warmup: int = 1) -> float:
    """Best wall-clock seconds of `repeat` calls of fn() after `warmup` calls."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    """Print a plain-text table with right-aligned columns."""
    cells = [header] + [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n## {title}")
    for j, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if j == 0:
            print("  ".join("-" * w for w in widths))


# --- sections (one function each; register below) ---


SECTIONS = {
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append",
                        help="run only these sections (repeatable)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes")
    args = parser.parse_args()
    for name in args.only or SECTIONS:
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
