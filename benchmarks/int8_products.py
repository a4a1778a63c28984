"""Can an integer entropy network's products run as int8 matrix products, exactly, on any CPU?

    python benchmarks/int8_products.py            # writes benchmarks/int8_products.md

r9's integer networks carry their products in float32 over proven column groups
(``IntegerLinear.accumulate``). int8 x int8 -> int32 products (``torch._int_mm``, oneDNN) are
several times faster where the CPU has VNNI, but without VNNI oneDNN multiplies unsigned by signed
bytes with ``vpmaddubsw``, which saturates pairs of products at 16 bits: exactness would then
depend on the machine. This measures both, each ISA level in a fresh process
(``ONEDNN_MAX_CPU_ISA``, read at start):

* exactness: ``_int_mm`` of operands at their extremes (every entry +-lim, where saturation
  shows first) against the int64 product, for full-range bytes (lim 127) and for 7-bit operands
  (lim 63, whose pair sums stay below 2^15 whichever operand is made unsigned);
* speed: one [1024, 4000] x [4000, 64] product (the largest context convolution, for a batch of
  4 chunks), int8 against float32 (``torch.mm``), 1 thread, median of 20.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, git_rev, machine, md_table  # noqa: E402

ISAS = ["SSE41", "AVX2", "AVX512_CORE", "AVX512_CORE_VNNI", "ALL"]
PROBE = """
import json, statistics, time, torch
torch.set_num_threads(1)
torch.manual_seed(0)

def median_ms(f):
    f()
    times = []
    for _ in range(20):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)

out = {}
for lim in (127, 63):
    a = torch.where(torch.rand(1024, 4000) < 0.5, lim, -lim).to(torch.int8)
    b = torch.where(torch.rand(4000, 64) < 0.5, lim, -lim).to(torch.int8)
    out[f"exact{lim}"] = bool(torch.equal(torch._int_mm(a, b).long(), a.long() @ b.long()))
af, bf = a.float(), b.float()
out["int8_ms"] = median_ms(lambda: torch._int_mm(a, b))
out["f32_ms"] = median_ms(lambda: af @ bf)
print(json.dumps(out))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "int8_products.md")
    a = p.parse_args()
    import torch

    torch.set_num_threads(1)  # as in each probe, so that machine() says so
    rows = []
    for isa in ISAS:
        env = {**os.environ, "ONEDNN_MAX_CPU_ISA": isa, "OMP_NUM_THREADS": "1"}
        run = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
        r = json.loads(run.stdout.strip().splitlines()[-1])
        rows.append([isa, "exact" if r["exact127"] else "**wrong**", "exact" if r["exact63"] else "**wrong**",
                     f"{r['int8_ms']:.2f}", f"{r['f32_ms']:.2f}", f"{r['f32_ms'] / r['int8_ms']:.1f}x"])
        print(rows[-1], flush=True)
    lines = [
        "# int8 products: exactness and speed by CPU instruction set", "",
        f"Command: `python benchmarks/int8_products.py` (commit {git_rev()}); machine: {machine()}. "
        "Method: the script's docstring. `ALL` is what oneDNN picks on this CPU.", "",
        md_table(["ONEDNN_MAX_CPU_ISA", "int8, operands +-127", "int8, operands +-63", "int8 ms", "float32 ms",
                  "int8 speed-up"], rows), "",
    ]
    a.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
