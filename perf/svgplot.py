"""Minimal SVG charts for the benchmark harness (no dependencies).

Two kinds, both labelled with the machine:
  line_chart: series of points (x, p50, p99, lo, hi) on log or linear axes; each point is
    a marker at the median, a whisker to the p99 and a faint bar over the spread (min..max).
  bar_chart: horizontal bars (label, p50, p99, lo, hi) on a log or linear axis, same marks.
"""

import html
import math

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf",
           "#7f7f7f"]


def _esc(s):
    return html.escape(str(s), quote=True)


def _nice_ticks_log(lo, hi):
    a = math.floor(math.log10(lo))
    b = math.ceil(math.log10(hi))
    return [10.0 ** e for e in range(a, b + 1)], 10.0 ** a, 10.0 ** b


def _nice_ticks_lin(lo, hi):
    if hi <= lo:
        hi = lo + 1
    span = hi - lo
    step = 10 ** math.floor(math.log10(span / 5))
    for m in (1, 2, 5, 10):
        if span / (step * m) <= 6:
            step *= m
            break
    start = math.floor(lo / step) * step
    ticks = []
    t = start
    while not ticks or ticks[-1] < hi:
        ticks.append(t)
        t += step
    return ticks, ticks[0], ticks[-1]


def _fmt(v, unit):
    if unit == "us":
        if v >= 1e6:
            return "%g s" % (v / 1e6)
        if v >= 1e3:
            return "%g ms" % (v / 1e3)
        return "%g µs" % v
    if unit == "bytes":
        for u, d in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
            if v >= d:
                return "%g %s" % (round(v / d, 2), u)
        return "%g B" % v
    if abs(v) >= 1e4 or (0 < abs(v) < 1e-2):
        return "%.0e" % v
    return "%g" % round(v, 3)


class _Axis:
    def __init__(self, lo, hi, log, pix0, pix1):
        self.log = log
        if log:
            lo = max(lo, 1e-12)
            hi = max(hi, lo * 1.0001)
            self.ticks, self.lo, self.hi = _nice_ticks_log(lo, hi)
        else:
            self.ticks, self.lo, self.hi = _nice_ticks_lin(min(lo, 0.0), hi)
        self.p0, self.p1 = pix0, pix1

    def __call__(self, v):
        if self.log:
            v = max(v, self.lo)
            f = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            f = (v - self.lo) / (self.hi - self.lo)
        return self.p0 + f * (self.p1 - self.p0)


def line_chart(path, title, subtitle, xlabel, ylabel, series, logx=True, logy=True,
               xunit="", yunit="us"):
    """series: [{"name": str, "points": [(x, p50, p99, lo, hi)], "dashed": bool}]"""
    W, H = 760, 470
    L, R, T, B = 90, 200, 62, 60
    xs = [p[0] for s in series for p in s["points"]]
    ys = [v for s in series for p in s["points"] for v in p[1:] if v is not None and v > 0]
    if not xs or not ys:
        return False
    ax = _Axis(min(xs), max(xs), logx, L, W - R)
    ay = _Axis(min(ys), max(ys), logy, H - B, T)
    out = [_header(W, H, title, subtitle)]
    out.append(_grid(ax, ay, L, R, T, B, W, H, xunit, yunit))
    for i, s in enumerate(series):
        col = PALETTE[i % len(PALETTE)]
        pts = sorted(s["points"])
        line = " ".join("%.1f,%.1f" % (ax(p[0]), ay(p[1])) for p in pts if p[1] and p[1] > 0)
        dash = ' stroke-dasharray="6,4"' if s.get("dashed") else ""
        out.append('<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>' %
                   (col, dash, line))
        for x, p50, p99, lo, hi in pts:
            if not p50 or p50 <= 0:
                continue
            cx, cy = ax(x), ay(p50)
            if lo and hi and hi > 0:
                out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" '
                           'stroke-width="7" stroke-opacity="0.18"/>' %
                           (cx, ay(max(lo, 1e-12)), cx, ay(hi), col))
            if p99 and p99 > 0:
                out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" '
                           'stroke-width="1.5"/>' % (cx, cy, cx, ay(p99), col))
                out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" '
                           'stroke-width="1.5"/>' % (cx - 4, ay(p99), cx + 4, ay(p99), col))
            out.append('<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>' % (cx, cy, col))
        ly = T + 8 + 20 * i
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>' %
                   (W - R + 14, ly, W - R + 38, ly, col, dash))
        out.append('<text x="%d" y="%d" font-size="12">%s</text>' % (W - R + 44, ly + 4,
                                                                   _esc(s["name"])))
    out.append(_labels(xlabel, ylabel, L, R, T, B, W, H))
    out.append(_legend_note(W, R, T + 8 + 20 * len(series) + 10))
    out.append("</svg>")
    _write(path, out)
    return True


def bar_chart(path, title, subtitle, bars, unit="us", log=True, xlabel=""):
    """bars: [(label, p50, p99, lo, hi)]; None for missing marks."""
    bars = [b for b in bars if b[1] is not None and b[1] > 0]
    if not bars:
        return False
    W = 760
    L, R, T, B = 250, 40, 62, 56
    H = T + B + 30 * len(bars)
    vals = [v for b in bars for v in b[1:] if v is not None and v > 0]
    ax = _Axis(min(vals), max(vals), log, L, W - R)
    out = [_header(W, H, title, subtitle)]
    for t in ax.ticks:
        x = ax(t)
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>' % (x, T, x, H - B))
        out.append('<text x="%.1f" y="%d" font-size="11" text-anchor="middle">%s</text>' %
                   (x, H - B + 16, _esc(_fmt(t, unit))))
    for i, (label, p50, p99, lo, hi) in enumerate(bars):
        y = T + 30 * i + 15
        col = PALETTE[i % len(PALETTE)]
        x0 = ax(ax.lo)
        out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="16" fill="%s" '
                   'fill-opacity="0.75"/>' % (x0, y - 8, max(1.0, ax(p50) - x0), col))
        if lo and hi:
            out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#000" '
                       'stroke-opacity="0.35" stroke-width="5"/>' % (ax(lo), y, ax(hi), y))
        if p99:
            out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#000" '
                       'stroke-width="1.5"/>' % (ax(p50), y, ax(p99), y))
            out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#000" '
                       'stroke-width="1.5"/>' % (ax(p99), y - 5, ax(p99), y + 5))
        out.append('<text x="%d" y="%.1f" font-size="12" text-anchor="end">%s</text>' %
                   (L - 8, y + 4, _esc(label)))
        out.append('<text x="%.1f" y="%.1f" font-size="11">%s</text>' %
                   (min(ax(p99 or p50), W - R - 60) + 6, y - 9, _esc(_fmt(p50, unit))))
    out.append('<text x="%d" y="%d" font-size="12" text-anchor="middle">%s</text>' %
               ((L + W - R) // 2, H - 18, _esc(xlabel)))
    out.append('<text x="%d" y="%d" font-size="10" fill="#555">bar: median; black whisker: '
               'to p99; grey band: min..max</text>' % (L, H - 4))
    out.append("</svg>")
    _write(path, out)
    return True


def _header(W, H, title, subtitle):
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
            'viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif">'
            '<rect width="100%%" height="100%%" fill="white"/>'
            '<text x="14" y="24" font-size="16" font-weight="bold">%s</text>'
            '<text x="14" y="44" font-size="11" fill="#444">%s</text>' %
            (W, H, W, H, _esc(title), _esc(subtitle)))


def _grid(ax, ay, L, R, T, B, W, H, xunit, yunit):
    out = []
    for t in ax.ticks:
        x = ax(t)
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e5e5e5"/>' %
                   (x, T, x, H - B))
        out.append('<text x="%.1f" y="%d" font-size="11" text-anchor="middle">%s</text>' %
                   (x, H - B + 16, _esc(_fmt(t, xunit))))
    for t in ay.ticks:
        y = ay(t)
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e5e5e5"/>' %
                   (L, y, W - R, y))
        out.append('<text x="%d" y="%.1f" font-size="11" text-anchor="end">%s</text>' %
                   (L - 6, y + 4, _esc(_fmt(t, yunit))))
    out.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#888"/>' %
               (L, T, W - R - L, H - B - T))
    return "\n".join(out)


def _labels(xlabel, ylabel, L, R, T, B, W, H):
    return ('<text x="%d" y="%d" font-size="12" text-anchor="middle">%s</text>'
            '<text x="18" y="%d" font-size="12" text-anchor="middle" '
            'transform="rotate(-90 18 %d)">%s</text>' %
            ((L + W - R) // 2, H - 18, _esc(xlabel), (T + H - B) // 2, (T + H - B) // 2,
             _esc(ylabel)))


def _legend_note(W, R, y):
    return ('<text x="%d" y="%d" font-size="10" fill="#555">dot: median</text>'
            '<text x="%d" y="%d" font-size="10" fill="#555">whisker: to p99</text>'
            '<text x="%d" y="%d" font-size="10" fill="#555">band: min..max</text>' %
            (W - R + 14, y, W - R + 14, y + 14, W - R + 14, y + 28))


def _write(path, parts):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
        f.write("\n")
