#!/usr/bin/env python3
"""Draws one trace from the JSON span lines otlp_receiver.py prints, as an SVG
waterfall (a span tree: one bar per span, indented under its parent, placed
on a shared time axis), and prints the same tree as text.

  render_trace.py SPANS.jsonl OUT.svg [TRACE_ID]

Without TRACE_ID it takes the most recent complete trace that has a retry
event, else the most recent one with the most spans.
"""
import json
import sys
from collections import defaultdict
from html import escape

spans = []
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        spans.append(json.loads(line))
traces = defaultdict(list)
for s in spans:
    traces[s["trace_id"]].append(s)
if len(sys.argv) > 3:
    tid = sys.argv[3]
else:
    def score(t):
        ss = traces[t]
        retry = any(e["name"] == "retry" for s in ss for e in s["events"])
        return (retry, len(ss), max(s["end"] for s in ss))
    tid = max(traces, key=score)
trace = traces[tid]
by_id = {s["span_id"]: s for s in trace}
children = defaultdict(list)
roots = []
for s in trace:
    (children[s["parent_span_id"]] if s["parent_span_id"] in by_id else roots).append(s)
for v in children.values():
    v.sort(key=lambda s: s["start"])
rows = []
def walk(s, depth):
    rows.append((depth, s))
    for c in children[s["span_id"]]:
        walk(c, depth + 1)
for r in sorted(roots, key=lambda s: s["start"]):
    walk(r, 0)

t0 = min(s["start"] for s in trace)
t1 = max(s["end"] for s in trace)
span_ns = max(t1 - t0, 1)

def label(s):
    a = s["attributes"]
    who = s["resource"].get("service.instance.id") or s["service"]
    kind = s["kind"].replace("SPAN_KIND_", "").lower()
    bits = [f'{who}  {kind} {s["name"]}']
    if "url.full" in a:
        bits.append(a["url.full"])
    elif "url.path" in a:
        bits.append(a["url.path"])
    bits.append(f'→ {a.get("http.response.status_code", "-")}')
    if "network.peer.address" in a and kind == "client":
        bits.append(f'peer {a["network.peer.address"]}:{a.get("network.peer.port", "")}')
    if "weft.peer.identity" in a:
        bits.append(a["weft.peer.identity"])
    return "  ".join(str(b) for b in bits)

print(f"trace {tid}: {len(trace)} spans, {(t1 - t0) / 1e6:.2f} ms")
for depth, s in rows:
    dur = (s["end"] - s["start"]) / 1e6
    print(f'{"  " * depth}{label(s)}  [{dur:.2f} ms]')
    for e in s["events"]:
        print(f'{"  " * depth}  · {e["name"]} {json.dumps(e["attributes"])}')

W, LEFT, ROW, TOP = 1100, 20, 44, 70
bar_x, bar_w = 520, W - 540
h = TOP + ROW * len(rows) + 40
o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
     f'<rect width="{W}" height="{h}" fill="white"/>',
     f'<text x="{LEFT}" y="24" font-size="15" font-weight="bold">Weft demo mesh: one trace ({len(trace)} spans, {(t1 - t0) / 1e6:.2f} ms)</text>',
     f'<text x="{LEFT}" y="44" fill="#555">trace {tid} · exported by the sidecars over OTLP/gRPC · frontend → reviews (90/10 canary, retries on 5xx)</text>']
for i in range(5):
    x = bar_x + bar_w * i / 4
    o.append(f'<line x1="{x:.1f}" y1="{TOP - 12}" x2="{x:.1f}" y2="{h - 30}" stroke="#ddd"/>')
    o.append(f'<text x="{x:.1f}" y="{TOP - 16}" fill="#777" text-anchor="middle">{span_ns * i / 4 / 1e6:.2f} ms</text>')
colors = {"frontend": "#4c78a8", "reviews": "#f58518"}
for row, (depth, s) in enumerate(rows):
    y = TOP + row * ROW
    x = bar_x + bar_w * (s["start"] - t0) / span_ns
    w = max(bar_w * (s["end"] - s["start"]) / span_ns, 2)
    err = s["status"] == "STATUS_CODE_ERROR" or s["attributes"].get("http.response.status_code", 0) >= 500
    color = "#d62728" if err else colors.get(s["service"], "#54a24b")
    who = s["resource"].get("service.instance.id") or s["service"]
    kind = s["kind"].replace("SPAN_KIND_", "").lower()
    code = s["attributes"].get("http.response.status_code", "-")
    o.append(f'<text x="{LEFT + 16 * depth}" y="{y + 13}">{escape(who)} sidecar · {kind} {escape(s["name"])} → {code}</text>')
    sub = s["attributes"].get("url.full") or ("from " + s["attributes"].get("weft.peer.identity", ""))
    o.append(f'<text x="{LEFT + 16 * depth}" y="{y + 28}" fill="#666" font-size="11">{escape(str(sub))}</text>')
    o.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="18" rx="3" fill="{color}"/>')
    ms = f'{(s["end"] - s["start"]) / 1e6:.2f} ms'
    if x + w + 60 > W:
        inside = w > 60
        tx, fill = (x + w - 4, "white") if inside else (x - 4, "#333")
        o.append(f'<text x="{tx:.1f}" y="{y + 13}" fill="{fill}" font-size="11" text-anchor="end">{ms}</text>')
    else:
        o.append(f'<text x="{x + w + 4:.1f}" y="{y + 13}" fill="#333" font-size="11">{ms}</text>')
    for e in s["events"]:
        ex = bar_x + bar_w * (e.get("time", s["start"]) - t0) / span_ns
        o.append(f'<path d="M{ex:.1f},{y + 20} l-5,9 h10 z" fill="#b22"/>')
        reason = e["attributes"].get("weft.retry.reason")
        text = e["name"] + (f" ({reason})" if reason else "")
        o.append(f'<text x="{ex + 7:.1f}" y="{y + 29}" fill="#b22" font-size="10">{escape(text)}</text>')
o.append(f'<text x="{LEFT}" y="{h - 12}" fill="#777" font-size="11">blue: frontend sidecar · orange: reviews sidecars · red: a 5xx answer · ▲ span events</text>')
o.append("</svg>")
open(sys.argv[2], "w").write("\n".join(o) + "\n")
print(f"wrote {sys.argv[2]}")
