"""Reading a written report back: its elements, the text under each id, and its data block."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser


class Html(HTMLParser):
    """The parts of a page the tests look at: elements with their attributes and the text under
    each element that has an id."""

    VOID = {"img", "input", "meta", "br", "hr", "link", "source"}

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.text_by_id: dict[str, list[str]] = {}
        self._open: list[tuple[str, str | None]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.elements.append((tag, a))
        if tag not in self.VOID:
            self._open.append((tag, a.get("id")))
            if a.get("id"):
                self.text_by_id.setdefault(a["id"], [])

    def handle_endtag(self, tag):
        while self._open:
            t, _ = self._open.pop()
            if t == tag:
                break

    def handle_data(self, data):
        for _, eid in self._open:
            if eid:
                self.text_by_id[eid].append(data)

    def text(self, eid: str) -> str:
        return re.sub(r"\s+", " ", " ".join(self.text_by_id.get(eid, []))).strip()

    def find(self, tag: str, cls: str | None = None, **attrs: str) -> list[dict]:
        """Elements `tag` with these exact attributes (and class `cls` among their classes)."""
        return [a for t, a in self.elements if t == tag and all(a.get(k) == v for k, v in attrs.items())
                and (cls is None or cls in a.get("class", "").split())]


def payload(page: str) -> dict:
    """The JSON the page's script reads."""
    m = re.search(r'<script type="application/json" id="gf-data">(.*?)</script>', page, re.S)
    assert m, "the page carries no data block"
    return json.loads(m.group(1))
