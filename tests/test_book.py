"""mmcourse.book without a browser: the offline scan, the single-notebook page, clear errors."""
from __future__ import annotations

import nbformat
import pytest

from mmcourse import book


def test_external_references_finds_scripts_styles_and_fonts_from_the_web(tmp_path):
    (tmp_path / "a.html").write_text(
        '<script src="https://cdn.example/x.js"></script><script src="_static/local.js"></script>'
        '<link rel="stylesheet" href="//cdn.example/s.css"><a href="https://arxiv.org/abs/1">paper</a>'
        '<img src="http://example.org/i.png">')
    (tmp_path / "s.css").write_text("@font-face { src: url('https://fonts.example/f.woff2'); }\n"
                                    "body { background: url(img/local.png); }")
    found = book.external_references(tmp_path)
    assert len(found) == 4 and not any("arxiv" in f or "local" in f for f in found), found


def test_notebook_page_uses_the_local_mathjax_and_no_cdn(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("$$\\frac{a}{b}$$ and $x^2$"),
                                         nbformat.v4.new_code_cell("1 + 1")])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    book.notebook_html(nb, tmp_path / "page.html")
    page = (tmp_path / "page.html").read_text()
    assert '_static/mathjax/tex-chtml.js' in page and "inlineMath" in page
    assert (tmp_path / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert book.external_references(tmp_path) == []


def test_book_without_executed_notebooks_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="make course"):
        book.build_book(tmp_path)
