"""Rebuild the test subsets in this folder from the full data sets (the benchmarks' data folder).

    python tests/data/make_subsets.py [/path/to/shared/data]

Deterministic: the same rows every time (every k-th data row of the file, in file order, no shuffling), written
with gzip mtime=0 and no stored name, so a rebuild gives the same bytes. Lines are copied verbatim: Adult keeps
its leading spaces and ' ?' missing values, California housing its empty total_bedrooms values.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (source file, subset file, keep every k-th data row)
SUBSETS = [("adult.csv.gz", "adult.csv.gz", 16), ("california_housing.csv", "california_housing.csv.gz", 10)]


def read_lines(path: Path) -> list[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return f.read().splitlines(keepends=True)


def write_gzip(path: Path, lines: list[bytes]) -> None:
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                compresslevel=9) as f:
        f.writelines(lines)


def main(source: Path) -> None:
    for name, subset, every in SUBSETS:
        header, *rows = read_lines(source / name)
        kept = rows[::every]
        write_gzip(HERE / subset, [header, *kept])
        print(f"{subset}: {len(kept)} of {len(rows)} rows (every {every}th, from the first)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / "shared" / "data")
