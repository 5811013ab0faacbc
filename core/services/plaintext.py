"""A readable plain-text version of an HTML mail, for templates that bring no text version.

Standard library only (``html.parser``): the text part is what a text-only client, a screen
reader or a spam filter reads, so it keeps the words, the line structure (paragraphs, line
breaks, list items, table rows) and every link as its URL; it drops what is not read (head,
style, script, comments). Deterministic and never raises on malformed HTML.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

# Elements that end a line of text (a blank line after the ones in _PARAGRAPH).
_BLOCK = frozenset({"address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt", "fieldset",
                    "figcaption", "figure", "footer", "form", "header", "li", "main", "nav", "ol", "section",
                    "table", "tbody", "thead", "tfoot", "tr", "ul"})
_PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "hr", "table", "ul", "ol", "blockquote"})
_SKIP = frozenset({"head", "script", "style", "title", "template", "noscript"})
_VOID = frozenset({"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "source", "wbr"})
_SAFE_SCHEMES = ("http://", "https://", "mailto:", "tel:")


class _TextMaker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.pre = 0
        self.links: list[tuple[str | None, int]] = []  # (href, where its text starts in out)

    def _newline(self, blank: bool = False) -> None:
        self.out.append("\n\n" if blank else "\n")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip += 1
            return
        if self.skip:
            return
        a = dict(attrs)
        if tag == "br":
            self._newline()
        elif tag == "hr":
            self.out.append("\n\n----------\n\n")
        elif tag == "li":
            self._newline()
            self.out.append("- ")
        elif tag in ("td", "th"):
            self.out.append(" ")
        elif tag == "img":
            alt = (a.get("alt") or "").strip()
            if alt:
                self.out.append(f"[{alt}]")
        elif tag == "a":
            self.links.append(((a.get("href") or "").strip() or None, len(self.out)))
        elif tag == "pre":
            self.pre += 1
        if tag in _PARAGRAPH:
            self._newline(blank=True)
        elif tag in _BLOCK and tag != "li":
            self._newline()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
            return
        if self.skip:
            return
        if tag == "a" and self.links:
            href, start = self.links.pop()
            label = " ".join("".join(self.out[start:]).split())
            if href and href.lower().startswith(_SAFE_SCHEMES):
                url = href[7:] if href.lower().startswith("mailto:") else href
                if not label:
                    self.out.append(url)
                elif label != url and label != href:
                    self.out.append(f" ({url})")
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in _PARAGRAPH:
            self._newline(blank=True)
        elif tag in _BLOCK and tag != "li":  # the next item (or the list's end) breaks the line
            self._newline()

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        self.out.append(data if self.pre else re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """The text version of ``html``: words, line structure and link URLs (``label (url)``)."""
    maker = _TextMaker()
    maker.feed(html)
    maker.close()
    lines = [line.strip() for line in "".join(maker.out).replace("\xa0", " ").split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
