#!/usr/bin/env python3
"""The concurrency models side by side, as charts: scripts/models.sh runs
this on its results (a TSV, one line per model and size) and writes

  OUT.svg   three panels against the number of connections: memory per
            connection, server CPU per round trip, RTT p99 (one line per
            model; the bare echo loop dashed, as the floor)
  OUT.html  the same SVG inline, the table of figures, and how they were
            made; self-contained, nothing fetched

Usage: scripts/models-chart.py RESULTS.tsv OUT   (writes OUT.svg, OUT.html)
TSV columns: model, connections, held, bytes/conn, CPU us/RT, round trips/s,
p50 us, p99 us.
"""
import html
import math
import platform
import sys

MODELS = [  # name in the TSV, label, colour, dashed
    ("threaded", "thread per connection", "#d97706", False),
    ("tether", "tether (one epoll reactor)", "#2563eb", False),
    ("tokio", "tokio, one task per connection", "#059669", False),
    ("echo", "bare mio echo loop (floor)", "#6b7280", True),
]
PANELS = [  # column, title, unit, log scale
    (3, "Memory per connection", "bytes", True),
    (4, "Server CPU per round trip", "µs", False),
    (7, "RTT p99", "µs", True),
]
PW, PH = 380, 300
M = dict(left=62, right=16, top=40, bottom=46)


def nice_max(v):
    if v <= 0:
        return 1
    mag = 10 ** math.floor(math.log10(v))
    for f in (1, 2, 2.5, 5, 10):
        if f * mag >= v:
            return f * mag
    return 10 * mag


def fmt(v):
    if v >= 10000:
        return f"{v / 1000:.0f}k"
    if v >= 1000:
        return f"{v / 1000:.0f}k" if v % 1000 == 0 else f"{v / 1000:.1f}k"
    if v >= 10 or v == int(v):
        return f"{v:.0f}"
    return f"{v:.1f}"


def panel(x0, rows, col, title, unit, log):
    out = []
    sizes = sorted({r["n"] for r in rows})
    values = [r[col] for r in rows if r[col] is not None and (r[col] > 0 or not log)]
    w, h = PW - M["left"] - M["right"], PH - M["top"] - M["bottom"]
    if log:
        lo = 10 ** math.floor(math.log10(min(values))) if values else 1
        hi = 10 ** math.ceil(math.log10(max(values))) if values else 10
        hi = max(hi, lo * 10)
        ticks = [10 ** e for e in range(round(math.log10(lo)), round(math.log10(hi)) + 1)]
        sy = lambda v: M["top"] + h - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * h
    else:
        hi = nice_max(max(values) * 1.1 if values else 1)
        ticks = [hi * i / 5 for i in range(6)]
        sy = lambda v: M["top"] + h - v / hi * h
    xmax = max(sizes) if sizes else 1
    sx = lambda n: x0 + M["left"] + n / xmax * w
    out.append(f'<text x="{x0 + M["left"]}" y="22" class="title">{html.escape(title)} ({unit}{", log scale" if log else ""})</text>')
    for t in ticks:
        y = sy(t)
        out.append(f'<line x1="{x0 + M["left"]}" x2="{x0 + M["left"] + w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{x0 + M["left"] - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{fmt(t)}</text>')
    for n in sizes:
        out.append(f'<line x1="{sx(n):.1f}" x2="{sx(n):.1f}" y1="{M["top"]}" y2="{M["top"] + h}" class="grid"/>')
        out.append(f'<text x="{sx(n):.1f}" y="{M["top"] + h + 16}" text-anchor="middle" class="tick">{n:,}</text>')
    out.append(f'<path d="M{x0 + M["left"]},{M["top"]}V{M["top"] + h}H{x0 + M["left"] + w}" class="axis"/>')
    out.append(f'<text x="{x0 + M["left"] + w / 2}" y="{PH - 8}" text-anchor="middle" class="tick">connections held</text>')
    for model, label, colour, dashed in MODELS:
        pts = sorted((r["n"], r[col]) for r in rows if r["model"] == model and r[col] is not None and (r[col] > 0 or not log))
        if not pts:
            continue
        d = "".join(("M" if i == 0 else "L") + f"{sx(n):.1f},{sy(v):.1f}" for i, (n, v) in enumerate(pts))
        dash = ' stroke-dasharray="5 4"' if dashed else ""
        out.append(f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="2"{dash} class="series" data-model="{model}"/>')
        for n, v in pts:
            out.append(f'<circle cx="{sx(n):.1f}" cy="{sy(v):.1f}" r="3.5" fill="{colour}"><title>{html.escape(label)}: {v:g} {unit} at {n:,} connections</title></circle>')
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    rows = []
    for line in open(sys.argv[1]):
        f = line.rstrip("\n").split("\t")
        num = lambda s: None if s in ("", "n/a") else float(s)
        rows.append({"model": f[0], "n": int(f[1]), "held": int(f[2]), 3: num(f[3]), 4: num(f[4]), 5: num(f[5]), 6: num(f[6]), 7: num(f[7])})
    width = PW * len(PANELS)
    legend_y = PH + 16
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {PH + 40}" width="{width}" height="{PH + 40}" role="img" font-family="system-ui, sans-serif">',
           "<title>Concurrency models: memory per connection, CPU per round trip, RTT p99 against connections held</title>",
           "<style>.title{font-size:14px;font-weight:600;fill:#1d232b}.tick{font-size:11px;fill:#5a6572}.grid{stroke:#e3e7ec}.axis{fill:none;stroke:#9aa5b1}.legend{font-size:12px;fill:#1d232b}</style>",
           f'<rect width="{width}" height="{PH + 40}" fill="#fff"/>']
    for i, (col, title, unit, log) in enumerate(PANELS):
        svg += panel(i * PW, rows, col, title, unit, log)
    x = 62
    for model, label, colour, dashed in MODELS:
        dash = ' stroke-dasharray="5 4"' if dashed else ""
        svg.append(f'<line x1="{x}" x2="{x + 22}" y1="{legend_y}" y2="{legend_y}" stroke="{colour}" stroke-width="3"{dash}/>')
        svg.append(f'<text x="{x + 28}" y="{legend_y + 4}" class="legend">{html.escape(label)}</text>')
        x += 40 + 7 * len(label)
    svg.append("</svg>")
    svg = "\n".join(svg)
    out = sys.argv[2]
    with open(out + ".svg", "w") as f:
        f.write(svg + "\n")
    table = "".join(
        f"<tr><td>{html.escape(r['model'])}</td><td>{r['n']:,}</td><td>{r['held']:,}</td>"
        + "".join(f"<td>{'n/a' if r[c] is None else f'{r[c]:g}'}</td>" for c in (3, 4, 5, 6, 7))
        + "</tr>"
        for r in rows
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>tether: concurrency models side by side</title>
<style>body{{font:15px/1.45 system-ui,sans-serif;color:#1d232b;margin:16px}}main{{max-width:1180px;margin:0 auto}}
svg{{width:100%;height:auto}}table{{border-collapse:collapse;font-variant-numeric:tabular-nums}}
th,td{{text-align:right;padding:3px 10px;border-bottom:1px solid #e3e7ec}}th:first-child,td:first-child{{text-align:left}}
p{{color:#5a6572}}</style></head>
<body><main><h1>Concurrency models side by side</h1>
<p>The same collar load (scripts/models.sh) against one server per model, on {html.escape(platform.node())} ({html.escape(platform.platform())}).
Memory: the server's RSS growth holding the idle collars, per collar. CPU: the server's user+system time in the
round-trip phase per PING/PONG. RTT p99: the closed-loop collars' round trips; client and server share the cores.</p>
{svg}
<table><thead><tr><th>model</th><th>connections</th><th>held</th><th>bytes/conn</th><th>CPU µs/RT</th><th>round trips/s</th><th>p50 µs</th><th>p99 µs</th></tr></thead>
<tbody>{table}</tbody></table>
</main></body></html>
"""
    with open(out + ".html", "w") as f:
        f.write(page)


if __name__ == "__main__":
    main()
