"""report.html: report.md as one self-contained page, every figure inline (base64 PNG), so the one
file can be copied off a cluster and opened anywhere.

report.md uses a small subset of Markdown (headings, paragraphs, "- " lists, pipe tables, images,
whole-line italics, **bold**, `code`); this converts exactly that subset, nothing more.
"""

from __future__ import annotations

import base64
import html
import pathlib
import re

STYLE = """
body { font-family: system-ui, sans-serif; line-height: 1.45; max-width: 62em; margin: 1em auto;
       padding: 0 1em; overflow-wrap: anywhere; }
img { display: block; max-width: 100%; height: auto; margin: 0.5em auto; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.4em; vertical-align: top; }
code { background: #f3f3f3; padding: 0 0.2em; }
.missing { color: #a00; }
"""
IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)$")
LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def inline(text: str) -> str:
  """Escaped text with **bold**, `code` and [links](url); a '*' elsewhere (R_D*) stays a star."""
  out = html.escape(text, quote=False)
  out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
  out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
  return LINK.sub(lambda m: f'<a href="{html.escape(m.group(2))}">{m.group(1)}</a>', out)


def image(alt: str, src: str, root: pathlib.Path) -> str:
  path = root / src
  if not path.is_file():
    return f'<p class="missing">Figure {html.escape(src)} is missing.</p>'
  data = base64.b64encode(path.read_bytes()).decode("ascii")
  return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(rows: list[str]) -> str:
  cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
  head, body = cells[0], [c for c in cells[1:] if not all(set(x) <= set("-: ") for x in c)]
  th = "".join(f"<th>{inline(c)}</th>" for c in head)
  trs = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in body)
  return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def _list(lines: list[str]) -> str:
  items: list[str] = []
  for line in lines:
    if line.startswith("- "):
      items.append(line[2:])
    else:  # an indented continuation belongs to the item above
      items[-1] += " " + line.strip()
  return "<ul>" + "".join(f"<li>{inline(i)}</li>" for i in items) + "</ul>"


def _block(lines: list[str], root: pathlib.Path) -> str:
  first = lines[0]
  if first.startswith("#"):
    level = len(first) - len(first.lstrip("#"))
    return f"<h{level}>{inline(first[level:].strip())}</h{level}>"
  if first.startswith("|"):
    return _table(lines)
  if first.startswith("- "):
    return _list(lines)
  m = IMAGE.match(first)
  if m and len(lines) == 1:
    return image(m.group(1), m.group(2), root)
  text = " ".join(lines)
  if len(lines) == 1 and text.startswith("*") and text.endswith("*") and not text.startswith("**"):
    return f"<p><em>{inline(text[1:-1])}</em></p>"
  return f"<p>{inline(text)}</p>"


def blocks(md: str) -> list[list[str]]:
  """Lines grouped by blank lines; a heading is a block of its own."""
  out: list[list[str]] = [[]]
  for line in md.splitlines():
    if not line.strip() or line.startswith("#"):
      out.append([line] if line.startswith("#") else [])
      if line.startswith("#"):
        out.append([])
      continue
    out[-1].append(line)
  return [b for b in out if b]


def render(md: str, root: pathlib.Path, title: str = "dlmscale report") -> str:
  """The page for report.md, whose figure links are relative to `root`."""
  body = "\n".join(_block(b, root) for b in blocks(md))
  return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
          f'<meta name="viewport" content="width=device-width, initial-scale=1">'
          f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n"
          f"<body>\n{body}\n</body></html>\n")
