"""Rebuild samples/output/ from samples/*.json: the documents crbio produces for each sample.

    python scripts/refresh_sample_outputs.py

Run it after a change that alters the documents on purpose, review the diff, commit it.
tests/test_sample_outputs.py fails while the committed outputs and crbio disagree.
"""

from __future__ import annotations

from pathlib import Path

import crbio

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Build every sample into samples/output/."""
    out = ROOT / "samples" / "output"
    for path in sorted((ROOT / "samples").glob("*.json")):
        # Every sample gives its ids and creation time, so the system clock plays no part.
        crbio.build(crbio.load_report(path)).write(out, stem=path.stem)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
