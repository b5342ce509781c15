#!/usr/bin/env python3
"""Checks every relative link of a built mdBook: its page exists and, with
a fragment, the page has that id. Exits 1 listing the broken ones.

    scripts/check-links.py target/book
"""
import html.parser
import os
import sys
import urllib.parse


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])


def main(book):
    pages = {}
    for base, _, files in os.walk(book):
        for name in files:
            if name.endswith(".html"):
                path = os.path.join(base, name)
                page = Page()
                with open(path, encoding="utf-8") as f:
                    page.feed(f.read())
                pages[os.path.normpath(path)] = page
    broken = []
    for path, page in pages.items():
        if os.path.basename(path) in ("print.html", "404.html", "toc.html"):
            continue
        for link in page.links:
            url = urllib.parse.urlparse(link)
            if url.scheme or link.startswith("//"):
                continue
            target = path if not url.path else os.path.normpath(
                os.path.join(os.path.dirname(path), urllib.parse.unquote(url.path)))
            if target not in pages:
                if os.path.exists(target):
                    continue  # a file the book copies (an image, a script)
                broken.append(f"{os.path.relpath(path, book)}: {link} (no such page)")
                continue
            if url.fragment and url.fragment not in pages[target].ids:
                broken.append(f"{os.path.relpath(path, book)}: {link} (no such anchor)")
    for b in broken:
        print("broken link:", b, file=sys.stderr)
    print(f"check-links: {len(pages)} pages, {sum(len(p.links) for p in pages.values())} links, {len(broken)} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "target/book"))
