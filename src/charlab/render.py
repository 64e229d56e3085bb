"""Text coloured character by character: self-contained HTML pages and PNG excerpts.

Values are first quantised to a level in -5..5 (0: no colour); negative levels take one hue,
positive the other. A page holds its CSS inline and loads nothing: it opens from the file on
an offline machine.
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on CI or servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Light enough that black text stays readable on the strongest level.
POSITIVE = ("#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6")   # blue
NEGATIVE = ("#fee0d2", "#fcbba1", "#fc9272", "#fb6a4a", "#ef3b2c")   # red
NEWLINE = "\u21b5"  # shown where a newline is, so that it can carry a colour too
MONO = "DejaVu Sans Mono"  # ships with matplotlib: the PNGs need no system font
MONO_ADVANCE = 1233 / 2048  # its advance width in em (every glyph the same)


def levels(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """-5..5: the sign of each value, and how many of the 5 ``edges`` its size reaches."""
    v = np.asarray(values, dtype=np.float64)
    mag = np.searchsorted(np.asarray(edges, dtype=np.float64), np.abs(np.nan_to_num(v)),
                          side="right")
    return (np.sign(np.nan_to_num(v)) * mag).astype(np.int64)


def level_color(level: int) -> str | None:
    if level == 0:
        return None
    return (POSITIVE if level > 0 else NEGATIVE)[min(abs(level), 5) - 1]


CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #111; background: #fff; }
.text { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 14px;
        line-height: 1.45; white-space: pre-wrap; word-break: break-all; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
td.l, th.l { text-align: left; }
.legend span { display: inline-block; padding: 0 6px; margin-right: 2px; }
.ctx { font-family: "DejaVu Sans Mono", monospace; white-space: pre; text-align: left; }
.hit { outline: 2px solid #000; }
""" + "".join(f".p{i + 1} {{ background: {c}; }}\n" for i, c in enumerate(POSITIVE)) + "".join(
    f".m{i + 1} {{ background: {c}; }}\n" for i, c in enumerate(NEGATIVE))


def _cls(level: int) -> str:
    return f"p{level}" if level > 0 else f"m{-level}"


def _shown(ch: str) -> str:
    return NEWLINE + "\n" if ch == "\n" else ch


def colored_html(text: str, lev: np.ndarray) -> str:
    """``text`` as spans, one per run of characters at the same level (a page stays a few
    bytes per character)."""
    if len(text) != len(lev):
        raise ValueError(f"{len(text)} characters but {len(lev)} levels")
    parts = []
    lev = np.asarray(lev)
    cuts = np.flatnonzero(np.diff(lev)) + 1
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(text)], strict=True):
        run = html.escape("".join(_shown(c) for c in text[a:b]), quote=False)
        level = int(lev[a])
        parts.append(run if level == 0 else f'<span class="{_cls(level)}">{run}</span>')
    return '<div class="text">' + "".join(parts) + "</div>"


def legend_html(edges: Sequence[float], positive: str, negative: str) -> str:
    """One row: the negative side's levels strongest first, then the positive side's."""
    cells = [f'<span class="{_cls(-k)}">&ge; {edges[k - 1]:g}</span>' for k in range(5, 0, -1)]
    cells += [f'<span class="{_cls(k)}">&ge; {edges[k - 1]:g}</span>' for k in range(1, 6)]
    return (f'<p class="legend">{html.escape(negative)} {"".join(cells)} '
            f"{html.escape(positive)}</p>")


def page(title: str, body: str) -> str:
    """A whole HTML document: inline CSS, no scripts, nothing fetched."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def table_html(header: Sequence[str], rows: Sequence[Sequence[object]],
               left: Sequence[int] = (0,)) -> str:
    """A table; columns ``left`` left-aligned, the others right-aligned (numbers). Cells are
    escaped unless they are already markup (:class:`Markup`)."""
    def cell(tag: str, i: int, v: object) -> str:
        text = v.html if isinstance(v, Markup) else html.escape(str(v))
        cls = ' class="l"' if i in left else ""
        return f"<{tag}{cls}>{text}</{tag}>"
    out = ["<table><tr>" + "".join(cell("th", i, h) for i, h in enumerate(header)) + "</tr>"]
    out += ["<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows]
    return "\n".join(out) + "</table>"


class Markup:
    """A table cell that is already HTML."""

    def __init__(self, html_text: str) -> None:
        self.html = html_text


# --- PNG --------------------------------------------------------------------------------

def _grid(text: str, lev: np.ndarray, cols: int) -> tuple[list[str], np.ndarray]:
    """Wrap at newlines and at ``cols``: the rows of text and each cell's level."""
    rows: list[str] = []
    row_lev: list[list[int]] = []
    line, line_lev = "", []
    for ch, lv in zip(text, lev, strict=True):
        line += NEWLINE if ch == "\n" else ch
        line_lev.append(int(lv))
        if ch == "\n" or len(line) == cols:
            rows.append(line)
            row_lev.append(line_lev)
            line, line_lev = "", []
    if line:
        rows.append(line)
        row_lev.append(line_lev)
    grid = np.zeros((len(rows), cols), dtype=np.int64)
    for r, lv in enumerate(row_lev):
        grid[r, :len(lv)] = lv
    return rows, grid


def _rgb(color: str | None) -> tuple[float, float, float]:
    if color is None:
        return (1.0, 1.0, 1.0)
    return tuple(int(color[i:i + 2], 16) / 255 for i in (1, 3, 5))  # type: ignore[return-value]


def colored_png(panels: Sequence[tuple[str, str, np.ndarray]], path: str | Path, *,
                cols: int = 100, fontsize: float = 9.0, legend: str = "") -> None:
    """One or more (title, text, levels) panels of coloured monospace text, one PNG.

    Each character is a cell of a colour grid (one image), each row of text one string
    drawn over it in a font whose every glyph has the same advance, so the two line up."""
    cell_w = MONO_ADVANCE * fontsize / 72  # inches
    cell_h = 1.35 * fontsize / 72
    grids = [(title, *_grid(text, lev, cols)) for title, text, lev in panels]
    title_h = 2.8 * fontsize / 72
    height = sum(title_h + len(rows) * cell_h for _, rows, _ in grids) + (
        title_h if legend else 0)
    width = cols * cell_w
    fig = plt.figure(figsize=(width + 0.2, height + 0.1))
    y = height + 0.05
    for title, rows, grid in grids:
        y -= title_h
        fig.text(0.1 / (width + 0.2), (y + 0.25 * title_h) / (height + 0.1), title,
                 fontsize=fontsize + 1, weight="bold", va="bottom")
        h = len(rows) * cell_h
        y -= h
        ax = fig.add_axes((0.1 / (width + 0.2), y / (height + 0.1), width / (width + 0.2),
                           h / (height + 0.1)))
        img = np.array([[_rgb(level_color(int(v))) for v in row] for row in grid])
        ax.imshow(img, extent=(0, cols, len(rows), 0), aspect="auto", interpolation="nearest")
        for r, line in enumerate(rows):
            ax.text(0, r + 0.55, line, family=MONO, fontsize=fontsize, va="center",
                    ha="left")
        ax.set_xlim(0, cols)
        ax.set_ylim(len(rows), 0)
        ax.axis("off")
    if legend:
        fig.text(0.1 / (width + 0.2), 0.2 * title_h / (height + 0.1), legend,
                 fontsize=fontsize, va="bottom")
    with warnings.catch_warnings():
        # a character the font lacks (CJK, say) is drawn as a box: one warning per distinct
        # character would bury the stage's output; the HTML pages use the browser's fonts
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font")
        fig.savefig(path, format="png", dpi=110)
    plt.close(fig)

