"""Compare two results folders of the same sweep: final checkpoints (every array) per case-seed.

    python results/kill_resume/compare.py FOLDER_A FOLDER_B

Needs the folders' ``checkpoints/`` (not committed: run the two sweeps again to have them)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def final_checkpoints(folder: Path) -> dict[str, Path]:
    return {
        f"{seed.parent.name}/{seed.name}": sorted(seed.glob("run*.npz"))[-1]
        for seed in sorted((folder / "checkpoints").glob("*/seed*"))
    }


def main(a: Path, b: Path) -> int:
    left, right = final_checkpoints(a), final_checkpoints(b)
    if left.keys() != right.keys():
        print(f"different case-seeds: {sorted(left.keys() ^ right.keys())}")
        return 1
    same = 0
    for key in left:
        za, zb = np.load(left[key]), np.load(right[key])
        arrays = [k for k in za.files if k != "__meta__"]  # __meta__ holds the write time
        equal = za.files == zb.files and all(np.array_equal(za[k], zb[k]) for k in arrays)
        same += equal
        print(f"{key}: {'bit-identical' if equal else 'DIFFERENT'}")
    print(f"{same} of {len(left)} final checkpoints bit-identical")
    return 0 if same == len(left) else 1


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1]), Path(sys.argv[2])))
