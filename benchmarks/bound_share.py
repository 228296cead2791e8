"""Issue 18: per scale, the exact-classifier bound, and how much of its gain each realized SIDE keeps.

    python benchmarks/bound_share.py results/digits-power-bound results/digits-power-side \\
        [--bound side-exact] [--reference uncond] [--attacks side-paper,side-pgd,side-kernel] [--out FILE.md]

Reads the Gu rows (``gu-ratio``: a copy is a candidate whose NN1/NN2 pixel distance ratio is
below 1/3) of the named run or suite folders, which must have attacked the same target models
(companion suites; ``model_key`` is checked). Per scale and seed it prints, as Markdown:

1. the bound against plain sampling: UnCond's and ``side-exact``'s copies out of N_G with
   Wilson 95% intervals, the gain in points and Fisher's exact test (two-sided);
2. per realized attack: its copies with the interval, Fisher's test against UnCond (two-sided)
   and against the bound (one-sided: is it below?), and the **share of the bound's gain it
   keeps**, (rate - UnCond's) / (bound's - UnCond's), a point estimate without an interval
   (a ratio of two differences; read it beside the tests), left out where the bound does not
   beat UnCond significantly; and the row's guidance diagnostics (classifier-against-exact-
   posterior gradient cosine and guidance strength per noise band, target-cluster hit rate).

Every p-value in a table is Holm-corrected over that table. Where several rows of one attack
exist at a scale and seed (one suite at 16,384, another at 4,096), the largest N_G is used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from side_bench.errors import BenchError
from side_bench.results.records import find_rows_files, read_rows_file
from side_bench.scoring.stats import holm, rate_test, wilson

BANDS = ("100-300", "300-600", "600-1000")  # the noise bands of the guidance diagnostics that matter here


def gu_rows(paths: list[str]) -> dict[tuple[str, int, int], dict]:
    """(attack, scale, seed) -> its gu-ratio row with the largest N_G."""
    found: dict[tuple[str, int, int], dict] = {}
    for rows_file in find_rows_files(paths):
        for row in read_rows_file(rows_file):
            if row["metric"] != "gu-ratio" or row.get("model_level"):
                continue
            key = (row["attack"], int(row["scale"]), int(row["seed"]))
            if key not in found or int(row["n"]) > int(found[key]["n"]):
                found[key] = row
    return found


def percent(count: int, n: int) -> str:
    low, high = wilson(count, n)
    return f"{count:,} / {n:,} = {100 * count / n:.2f}% [{100 * low:.2f}, {100 * high:.2f}]"


def per_band(diagnostics: dict, name: str, digits: int) -> str:
    values = ((diagnostics or {}).get("guidance") or {}).get(name) or {}
    return " / ".join(f"{values[b]:.{digits}g}" if b in values else "-" for b in BANDS)


def counts(row: dict) -> tuple[int, int]:
    return int(row["count"]), int(row["n"])


def holm_column(lines: list[list], column: int) -> None:
    """Holm-correct one column of p-values over the table, in place (None: no test, left so)."""
    tested = [line for line in lines if line[column] is not None]
    for line, p in zip(tested, holm([line[column] for line in tested]), strict=True):
        line[column] = f"{p:.2g}"


def tables(rows: dict, bound: str, reference: str, attacks: list[str]) -> str:
    cells = sorted({(scale, seed) for _, scale, seed in rows})
    bound_lines, attack_lines = [], []
    for scale, seed in cells:
        ref, top = rows.get((reference, scale, seed)), rows.get((bound, scale, seed))
        if ref is None:
            continue
        for row in (top, *(rows.get((a, scale, seed)) for a in attacks)):
            if row is not None and row.get("model_key") != ref.get("model_key"):
                raise BenchError(f"{row['attack']} at scale {scale}, seed {seed} attacked another model than "
                                 f"{reference} (model_key differs)")
        k0, n0 = counts(ref)
        gain = None
        if top is not None:
            kb, nb = counts(top)
            gain = kb / nb - k0 / n0
            bound_lines.append([scale, seed, percent(k0, n0), percent(kb, nb), f"{100 * gain:+.2f}",
                                rate_test(kb, nb, k0, n0),
                                f"{int((top.get('diagnostics') or {}).get('query_cost', 0)):,}"])
        for name in attacks:
            row = rows.get((name, scale, seed))
            if row is None:
                continue
            k, n = counts(row)
            p_bound = rate_test(k, n, *counts(top), "less") if top is not None else None
            share = f"{(k / n - k0 / n0) / gain:+.2f}" if gain is not None and gain > 0 else ""
            diagnostics = row.get("diagnostics") or {}
            hit = (diagnostics.get("target_hit") or {}).get("value")
            attack_lines.append([scale, seed, name, (row.get("extractor_settings") or {}).get("guidance_scale", ""),
                                 percent(k, n), rate_test(k, n, k0, n0), p_bound, share,
                                 per_band(diagnostics, "alignment", 2), per_band(diagnostics, "strength", 2),
                                 "" if hit is None else f"{100 * hit:.1f}%"])
    holm_column(bound_lines, 5)
    holm_column(attack_lines, 5)
    holm_column(attack_lines, 6)
    out = ["| scale | seed | UnCond | bound (side-exact) | gain (points) | p (Fisher, Holm) | query cost |",
           "|---:|---:|---|---|---:|---:|---:|"]
    out += ["| " + " | ".join(str(v) for v in line) + " |" for line in bound_lines]
    out += ["", "| scale | seed | attack | λ | Gu copies | p vs UnCond | p below bound | share of the gain kept | "
            "alignment (t 100-300 / 300-600 / 600-1000) | strength (same bands) | target hit |",
            "|---:|---:|---|---:|---|---:|---:|---:|---|---|---:|"]
    out += ["| " + " | ".join("-" if v is None else str(v) for v in line) + " |" for line in attack_lines]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run or suite folders on the same target models")
    parser.add_argument("--bound", default="side-exact")
    parser.add_argument("--reference", default="uncond")
    parser.add_argument("--attacks", default=None, help="comma-separated (default: every other attack found)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    try:
        rows = gu_rows(args.paths)
        attacks = ([a.strip() for a in args.attacks.split(",") if a.strip()] if args.attacks else
                   sorted({a for a, _, _ in rows} - {args.bound, args.reference}))
        text = tables(rows, args.bound, args.reference, attacks)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
