"""charlab.render: colour levels, the HTML of coloured text, PNG excerpts, and the pages in
a real browser."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from conftest import pixels_like, screenshot

from charlab import render


def test_levels_by_hand() -> None:
    edges = (0.25, 0.5, 1, 2, 4)
    values = [0.0, 0.2, 0.25, -0.3, 0.99, 1.0, -2.5, 4.0, 100.0, -100.0, np.nan]
    assert render.levels(np.array(values), edges).tolist() == [0, 0, 1, -1, 2, 3, -4, 5, 5,
                                                                -5, 0]
    assert render.level_color(0) is None
    assert render.level_color(2) == render.POSITIVE[1]
    assert render.level_color(-5) == render.NEGATIVE[4]


def test_colored_html_merges_runs_and_escapes() -> None:
    text = "ab<c\nd&"
    out = render.colored_html(text, np.array([0, 0, 3, 3, -1, -1, 0]))
    assert out == ('<div class="text">ab<span class="p3">&lt;c</span>'
                   f'<span class="m1">{render.NEWLINE}\nd</span>&amp;</div>')
    with pytest.raises(ValueError, match="7 characters but 2 levels"):
        render.colored_html(text, np.array([0, 1]))


def test_page_is_self_contained() -> None:
    doc = render.page("a <title>", render.colored_html("xy", np.array([1, -1])))
    assert doc.startswith("<!DOCTYPE html>") and "a &lt;title&gt;" in doc
    # nothing that a browser would fetch: no scripts, links, images or URLs
    assert not re.search(r"<script|<link|<img|src=|href=|url\(|https?:", doc)


def test_colored_png(tmp_path: Path) -> None:
    text = "KING:\n" + "word " * 50
    lev = np.array([4] * 6 + [-4] * (len(text) - 6))
    render.colored_png([("a title", text, lev)], tmp_path / "x.png", cols=40)
    img = matplotlib.image.imread(tmp_path / "x.png")[..., :3]
    assert pixels_like(img, render.POSITIVE[3]) > 200
    assert pixels_like(img, render.NEGATIVE[3]) > 2000
    assert (img.max(axis=-1) < 0.3).sum() > 500  # dark glyphs: the text is drawn


def test_a_page_renders_coloured_text_in_a_real_browser(browser: str, tmp_path: Path) -> None:
    text = ("To be, or not to be: that is the question.\n" * 6)
    half = len(text) // 2
    lev = np.array([4] * half + [-4] * (len(text) - half))
    page = tmp_path / "p.html"
    page.write_text(render.page("test page", render.colored_html(text, lev)), encoding="utf-8")
    img = screenshot(browser, page, tmp_path / "shot.png", (900, 600))
    blue = pixels_like(img, render.POSITIVE[3])
    red = pixels_like(img, render.NEGATIVE[3])
    assert blue > 3000 and red > 3000, (blue, red)
    # text on the colour: dark glyph pixels inside the coloured rows
    rows = np.flatnonzero((np.abs(img - np.array([0x6B, 0xAE, 0xD6]) / 255).max(-1) < 0.02
                           ).any(axis=1))
    band = img[rows.min():rows.max() + 1]
    assert (band.max(axis=-1) < 0.35).sum() > 500
