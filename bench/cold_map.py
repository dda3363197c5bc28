"""Wall time of `homeport run` of a cold 1,000-item `.map` (issue 16: it used to end with a 10 s wait
for scale-out containers that were asked to stop before they were ready).

    python bench/cold_map.py [--runs 10] [--n 1000]

Runs on a private control plane (homeport.testing.Platform), stopped at the end. Each run is a new app,
so its function is cold. Measured on 2 shared cores, 8 runs: before the fix 0.71-10.89 s (median
10.50 s, 5 of 8 runs waited the 10 s grace period); after 0.33-0.98 s (median 0.42 s).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

PROGRAM = textwrap.dedent('''
    import modal

    app = modal.App("bench-cold-map")


    @app.function()
    def square(x):
        return x * x


    @app.local_entrypoint()
    def main(n: int = 1000):
        print(sum(square.map(range(n))))
''')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    from homeport.testing import Platform

    with Platform(), tempfile.TemporaryDirectory() as tmp:
        program = Path(tmp) / "cold_map.py"
        program.write_text(PROGRAM)
        walls = []
        for _ in range(args.runs):
            t0 = time.monotonic()
            out = subprocess.run([sys.executable, "-m", "homeport.cli", "run", "-q", str(program), "--n", str(args.n)],
                                 capture_output=True, text=True, timeout=120)
            walls.append(time.monotonic() - t0)
            if out.returncode != 0:
                raise SystemExit(out.stderr)
        print(f"cold map of {args.n}: wall s per run {[round(w, 2) for w in walls]}; "
              f"median {statistics.median(walls):.2f} s, max {max(walls):.2f} s")


if __name__ == "__main__":
    main()
