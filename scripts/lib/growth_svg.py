#!/usr/bin/env python3
"""B3G's plot: time and peak memory of apply, plan, first sync and idle pass against the
object count, both axes logarithmic, with a dotted line for "linear from the middle size"
under each time line. Reads the TSV bench.sh writes (objects, step, seconds, MiB) and writes
one SVG; the standard library only, so the bench needs nothing installed for it.

    growth_svg.py growth.tsv growth.svg
"""

import math
import sys

STEPS = [("apply", "#1f77b4"), ("plan", "#ff7f0e"), ("sync", "#2ca02c"), ("idle", "#d62728")]
LABELS = {"apply": "apply", "plan": "plan", "sync": "first sync", "idle": "idle pass"}
W, H = 1010, 420
PANEL_W, PANEL_H = 380, 300
MARGIN_L, MARGIN_T = 70, 50


def read(path):
    rows = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 4:
                continue
            n, step, secs, mib = int(parts[0]), parts[1], float(parts[2]), float(parts[3])
            rows.setdefault(step, []).append((n, secs, mib))
    for v in rows.values():
        v.sort()
    return rows


def decades(lo, hi):
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if a == b:
        b += 1
    return a, b


def panel(out, x0, title, unit, rows, col, sizes):
    values = [r[col] for v in rows.values() for r in v if r[col] > 0]
    if not values:
        return
    ylo, yhi = decades(min(values), max(values))
    xlo, xhi = decades(min(sizes), max(sizes))

    def px(n):
        return x0 + (math.log10(n) - xlo) / (xhi - xlo) * PANEL_W

    def py(v):
        return MARGIN_T + PANEL_H - (math.log10(v) - ylo) / (yhi - ylo) * PANEL_H

    out.append(f'<text x="{x0 + PANEL_W / 2}" y="{MARGIN_T - 20}" text-anchor="middle" '
               f'font-size="15">{title}</text>')
    out.append(f'<rect x="{x0}" y="{MARGIN_T}" width="{PANEL_W}" height="{PANEL_H}" '
               'fill="none" stroke="#888"/>')
    for d in range(xlo, xhi + 1):
        x = px(10 ** d)
        out.append(f'<line x1="{x}" y1="{MARGIN_T}" x2="{x}" y2="{MARGIN_T + PANEL_H}" stroke="#eee"/>')
        out.append(f'<text x="{x}" y="{MARGIN_T + PANEL_H + 18}" text-anchor="middle" '
                   f'font-size="12">{10 ** d:,}</text>')
    for d in range(ylo, yhi + 1):
        y = py(10 ** d)
        out.append(f'<line x1="{x0}" y1="{y}" x2="{x0 + PANEL_W}" y2="{y}" stroke="#eee"/>')
        label = f"{10.0 ** d:g}"
        out.append(f'<text x="{x0 - 6}" y="{y + 4}" text-anchor="end" font-size="12">{label}</text>')
    out.append(f'<text x="{x0 + PANEL_W / 2}" y="{MARGIN_T + PANEL_H + 38}" text-anchor="middle" '
               'font-size="12">objects</text>')
    out.append(f'<text x="{x0 - 50}" y="{MARGIN_T + PANEL_H / 2}" font-size="12" '
               f'transform="rotate(-90 {x0 - 50} {MARGIN_T + PANEL_H / 2})" '
               f'text-anchor="middle">{unit}</text>')
    for step, color in STEPS:
        vals = [(n, s if col == 1 else m) for n, s, m in rows.get(step, [])]
        vals = [(n, v) for n, v in vals if v > 0]
        if not vals:
            continue
        path = " ".join(f"{px(n):.1f},{py(v):.1f}" for n, v in vals)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for n, v in vals:
            out.append(f'<circle cx="{px(n):.1f}" cy="{py(v):.1f}" r="3.5" fill="{color}"/>')
        # Linear from the middle size: where the largest would be at the same cost per object.
        if col == 1 and len(vals) >= 2:
            (n1, v1), (n2, _) = vals[-2], vals[-1]
            v_lin = v1 * n2 / n1
            if v_lin > 0:
                out.append(f'<line x1="{px(n1):.1f}" y1="{py(v1):.1f}" x2="{px(n2):.1f}" '
                           f'y2="{py(v_lin):.1f}" stroke="{color}" stroke-dasharray="3,3"/>')


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: growth_svg.py growth.tsv growth.svg")
    rows = read(sys.argv[1])
    sizes = sorted({n for v in rows.values() for n, _, _ in v})
    if not sizes:
        sys.exit(f"{sys.argv[1]}: no rows")
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H + 40}" '
           'font-family="sans-serif">', '<rect width="100%" height="100%" fill="white"/>']
    panel(out, MARGIN_L, "time (dotted: linear from the middle size)", "seconds", rows, 1, sizes)
    panel(out, MARGIN_L + PANEL_W + 110, "peak memory (RSS)", "MiB", rows, 2, sizes)
    x = MARGIN_L
    for step, color in STEPS:
        if step in rows:
            out.append(f'<rect x="{x}" y="{H + 8}" width="14" height="4" fill="{color}"/>')
            out.append(f'<text x="{x + 20}" y="{H + 14}" font-size="13">{LABELS[step]}</text>')
            x += 130
    out.append("</svg>")
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
