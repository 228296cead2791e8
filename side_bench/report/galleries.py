"""The runs' candidate galleries, copied into a leaderboard folder (``gallery.py`` draws them)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from side_bench.report.plots import file_stem


@dataclass
class Gallery:
    setup: str
    attack: str
    scale: int
    seed: int
    image: str  # relative to the output folder


def copy_galleries(rows: pd.DataFrame, out: Path | None) -> list[Gallery]:
    """Copy each cell's gallery PNG (when the run wrote one) into ``out/galleries/``."""
    if rows.empty or "gallery_path" not in rows:
        return []
    cells = rows[rows["gallery_path"].notna()].drop_duplicates("config_hash")
    galleries = []
    for cell in cells.sort_values(["setup", "scale", "attack", "seed"]).itertuples(index=False):
        relative = f"galleries/{file_stem(str(cell.config_hash))}.png"
        if out is not None:
            (out / "galleries").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cell.gallery_path, out / relative)
        galleries.append(Gallery(cell.setup, cell.attack, int(cell.scale), int(cell.seed), relative))
    return galleries
