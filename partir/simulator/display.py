"""HTML for notebooks: a simulator `Report` as tables, a time breakdown and a memory timeline.

No JAX here. The plots are `Report.plot()` inlined as SVG; they need matplotlib, which
partir does not depend on: without it the HTML says so and shows the tables only.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from partir.simulator.report import Report

STYLE = """<style>
.partir-box{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;font-size:13px;color:#222}
.partir-box h3{font-size:15px;margin:12px 0 6px 0}
.partir-box table.partir-t{border-collapse:collapse;margin:4px 0 8px 0}
.partir-box table.partir-t th{background:#eef1f5;text-align:left;padding:3px 8px;border-bottom:1px solid #ccd}
.partir-box table.partir-t td{text-align:left;padding:2px 8px;border-bottom:1px solid #eee;vertical-align:top}
.partir-box table.partir-t td.num{text-align:right;font-variant-numeric:tabular-nums}
.partir-box .muted{color:#777;font-size:12px}
.partir-box .bad{color:#b00020}.partir-box .good{color:#0a7d28}
.partir-box code{font-size:12px}
</style>"""
"""Shared CSS: every partir HTML block is a ``div.partir-box``."""


def esc(x: Any) -> str:
    """HTML-escaped `str(x)`."""
    return html.escape(str(x))


def fmt_time(s: float) -> str:
    """Seconds in s, ms or us ("-" for NaN: nothing measured)."""
    if s != s:
        return "-"
    a = abs(s)
    if a >= 1:
        return f"{s:.3f} s"
    if a >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.2f} us"


def fmt_mfu(mfu: float) -> str:
    """Model FLOPs utilisation as a percentage with enough digits to be non-zero: a toy
    step on a big chip runs at 0.02%, which ``.1%`` would print as 0.0%."""
    if mfu != mfu:
        return "-"
    if mfu == 0 or mfu >= 1e-3:
        return f"{mfu:.1%}"
    if mfu >= 1e-6:
        return f"{mfu * 100:.2g}%"
    return "<0.0001%"


def fmt_bytes(b: float) -> str:
    """Bytes in GiB, MiB, KiB or B."""
    a = abs(b)
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if a >= size:
            return f"{b / size:.2f} {unit}"
    return f"{b:.0f} B"


def table(header: Sequence[str], rows: Sequence[Any], numeric: Sequence[int] = ()) -> str:
    """An HTML table; cells are escaped unless they are `Raw`; `numeric` columns align right.
    A row that is itself a `Raw` spans the whole table."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for r in rows:
        if isinstance(r, Raw):
            body.append(f'<tr><td colspan="{len(header)}">{r.html}</td></tr>')
            continue
        cells = []
        for i, v in enumerate(r):
            text = v.html if isinstance(v, Raw) else esc(v)
            cls = ' class="num"' if i in numeric else ""
            cells.append(f"<td{cls}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="partir-t"><tr>{head}</tr>{"".join(body)}</table>'


class Raw:
    """A table cell holding HTML that must not be escaped."""

    def __init__(self, html_text: str):
        self.html = html_text


def figure_svg(fig: Any) -> str:
    """A matplotlib figure as inline SVG markup (text kept as text, so it stays small)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg") :]


def report_plots_html(report: Report) -> str:
    """`Report.plot()` (the time breakdown and the memory timeline) as inline SVG, or a note
    saying matplotlib is missing."""
    try:
        fig = report.plot()
    except ImportError:
        return (
            '<p class="muted">plots need matplotlib (<code>pip install matplotlib</code>); '
            "partir does not depend on it.</p>"
        )
    return f'<div class="partir-plots">{figure_svg(fig)}</div>'


def report_html(report: Report, plots: bool = True) -> str:
    """A `Report` as HTML: the headline numbers, the plots, top ops and collectives."""
    hw = report.hardware
    fits = (
        '<span class="good">fits</span>' if report.fits else '<span class="bad">does not fit</span>'
    )
    cats = ", ".join(f"{k} {fmt_bytes(v)}" for k, v in report.memory.by_category.items())
    rows = [
        ("step time", f"{fmt_time(report.step_time_s)} (no overlap), "
         f"{fmt_time(report.step_time_overlap_s)} (full overlap)"),
        ("compute / communication", f"{fmt_time(report.compute_time_s)} / "
         f"{fmt_time(report.communication_time_s)} "
         f"({fmt_bytes(report.communication_bytes)} sent per device)"),
        ("bound", report.bound_text()),
        ("flops per device", f"{report.flops:.4g} as XLA counts them, "
         f"{report.executed_flops:.4g} executed; MFU {fmt_mfu(report.mfu)} "
         f"({fmt_mfu(report.mfu_overlap)} with overlap)"
         + (f". {report.flops_note()}" if report.flops_note() else "")),
        ("peak memory", Raw(f"{esc(fmt_bytes(report.peak_memory_bytes))} of "
                            f"{esc(fmt_bytes(hw.memory_bytes))} ({fits}) at "
                            f"<code>{esc(report.memory.peak_location)}</code>")),
        ("live at the peak", cats),
    ]  # fmt: skip
    parts = [
        STYLE,
        '<div class="partir-box partir-report">',
        f"<h3>Simulated on {esc(hw.name)}</h3>",
        f'<div class="muted">mesh {esc(str(report.topology) or "(one device)")}</div>',
        table(("", ""), rows),
    ]
    if plots:
        parts.append(report_plots_html(report))
    ops = [
        (fmt_time(r.time_s), r.primitive, f"{r.count:g}", f"{r.flops:.3g}", r.location)
        for r in report.top_ops(8)
    ]
    parts.append("<h3>Top compute ops</h3>")
    parts.append(table(("time", "primitive", "runs", "flops", "source"), ops, numeric=(0, 2, 3)))
    summary = sorted(report.collective_summary().items(), key=lambda kv: -kv[1]["time_s"])
    if summary:
        coll = [
            (fmt_time(s["time_s"]), kind, ",".join(axes), f"{s['count']:g}",
             fmt_bytes(s["bytes_sent"]))
            for (kind, axes), s in summary
        ]  # fmt: skip
        parts.append("<h3>Collectives</h3>")
        parts.append(
            table(("time", "kind", "axes", "count", "sent per device"), coll, numeric=(0, 3, 4))
        )
    parts.append("</div>")
    return "".join(parts)
