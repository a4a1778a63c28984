"""Fuzz the chunk decoder and the store-metadata reader; record outcomes in robustness.md.

    .venv/bin/python benchmarks/fuzz_chunks.py --cases 100000

Inputs: random byte strings, valid chunks with random byte flips / splices / truncations (CRC then
fails), and forged chunks whose CRC is recomputed after mutating header or payload (so the decoder
must survive the entropy decoder on garbage). Each input must end in a decoded block or the one
documented exception (CorruptChunkError) within one second.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, git_rev, machine, md_table  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))


def mutate(rng: np.random.Generator, good: bytes) -> tuple[str, bytes]:
    kind = rng.choice(["random", "flip", "splice", "truncate", "forged-header", "forged-payload"])
    b = bytearray(good)
    if kind == "random":
        return kind, rng.integers(0, 256, int(rng.integers(0, 600)), dtype=np.uint8).tobytes()
    if kind == "flip":
        for _ in range(int(rng.integers(1, 8))):
            b[int(rng.integers(0, len(b)))] ^= 1 << int(rng.integers(0, 8))
        return kind, bytes(b)
    if kind == "splice":
        pos = int(rng.integers(0, len(b)))
        return kind, bytes(b[:pos]) + rng.integers(0, 256, int(rng.integers(1, 32)), dtype=np.uint8).tobytes() + bytes(b[pos:])
    if kind == "truncate":
        return kind, bytes(b[: int(rng.integers(0, len(b)))])
    body = b[:-4]
    if kind == "forged-header":
        field = int(rng.choice([4, 5, 6, 8, 10, 12, 14, 16, 18, 22]))
        width = 1 if field in (4, 5) else (4 if field in (18, 22) else 2)
        body[field : field + width] = rng.integers(0, 256, width, dtype=np.uint8).tobytes()
    else:
        for _ in range(int(rng.integers(1, 6))):
            body[26 + int(rng.integers(0, len(body) - 26))] = int(rng.integers(0, 256))
    return kind, bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "robustness.md")
    a = p.parse_args()

    import torch

    from cps_tiles.coding.bitstream import ChunkCoder
    from cps_tiles.errors import CorruptChunkError, StoreError
    from cps_tiles.store.layout import StoreMeta
    from cps_tiles.transforms.weights import DEFAULT_CODEC, load_codec

    torch.set_num_threads(1)
    codec = load_codec(DEFAULT_CODEC)
    coder = ChunkCoder(codec.model)
    rng = np.random.default_rng(a.seed)
    valid = [coder.encode(np.rint(rng.normal(0, s, (coder.M, h, w))).astype(np.int16), q)
             for s, h, w, q in ((1, 16, 16, 3), (4, 8, 12, 6), (20, 4, 4, 8), (0.2, 16, 16, 1))]
    outcomes: Counter = Counter()
    slowest = 0.0
    bad = []
    t_start = time.perf_counter()
    for i in range(a.cases):
        kind, data = mutate(rng, valid[i % len(valid)])
        t0 = time.perf_counter()
        try:
            coder.decode(data)
            result = "decoded"
        except CorruptChunkError:
            result = "CorruptChunkError"
        except BaseException as exc:  # noqa: BLE001 - anything else is a finding
            result = f"UNDOCUMENTED {type(exc).__name__}"
            bad.append((kind, repr(exc)[:120]))
        dt = time.perf_counter() - t0
        slowest = max(slowest, dt)
        if dt > 1.0:
            bad.append((kind, f"took {dt:.2f} s"))
        outcomes[(kind, result)] += 1
    chunk_time = time.perf_counter() - t_start

    meta_cases = a.cases // 10
    meta_outcomes: Counter = Counter()
    values = [None, True, -1, 0, 1, 7, 64, 10**12, 3.5, float("inf"), "x", "", [], [1, 2], {}, {"a": 1}]
    keys = ["format", "codec", "sha256", "quality", "height", "width", "bands", "chunk", "tile", "rho", "padded",
            "complete", "alpha", "source", "dtype", "junk"]
    for _ in range(meta_cases):
        attrs = {"format": 1}
        for k in rng.choice(keys, size=int(rng.integers(0, len(keys))), replace=False):
            attrs[str(k)] = values[int(rng.integers(0, len(values)))]
        group = type("G", (), {"attrs": {"cps": attrs}})()
        try:
            StoreMeta.read(group, "fuzz")
            meta_outcomes["accepted"] += 1
        except StoreError:
            meta_outcomes["StoreError"] += 1
        except BaseException as exc:  # noqa: BLE001
            meta_outcomes[f"UNDOCUMENTED {type(exc).__name__}"] += 1
            bad.append(("metadata", repr(exc)[:120]))

    rows = [[k, r, n] for (k, r), n in sorted(outcomes.items())]
    md = [
        "# Robustness: fuzzing and failure modes", "",
        f"Command: `python benchmarks/fuzz_chunks.py --cases {a.cases} --seed {a.seed}` (commit {git_rev()}); "
        f"machine: {machine()}; codec {codec.name}.", "",
        f"## Chunk decoder: {a.cases:,} inputs in {chunk_time:.1f} s, slowest {slowest * 1000:.1f} ms, "
        f"{len([b for b in bad if b[0] != 'metadata'])} findings", "",
        md_table(["input kind", "outcome", "count"], rows), "",
        f"## Store metadata reader: {meta_cases:,} random attribute sets", "",
        md_table(["outcome", "count"], [[k, v] for k, v in sorted(meta_outcomes.items())]), "",
        "## Findings", "",
        "\n".join(f"- {k}: {msg}" for k, msg in bad[:50]) or "None: every input ended in a decoded block or the "
        "documented exception, each within one second.", "",
    ]
    extra = a.out.with_name("robustness_failure_modes.md")
    if extra.exists():
        md.append(extra.read_text())
    a.out.write_text("\n".join(md))
    print("\n".join(md))
    if bad:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
