"""Render report sections as Markdown (figures as PNG files beside it) and as one self-contained
HTML file (figures embedded as data URIs)."""

from __future__ import annotations

import base64
import html
import re

from cimtool.report.content import Caveat, Figure, Section, Table

# long unbroken cells (hashes, paths) break anywhere (td.wrap) so a table fits the page; a table that
# still does not fit scrolls inside its own box (.table) rather than running off the page
CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
.table{overflow-x:auto;margin:0.8em 0}table{border-collapse:collapse;font-size:0.85em}
th,td{border:1px solid #ccc;padding:3px 7px;vertical-align:top}
th{background:#f0f0f0;text-align:left}td{font-variant-numeric:tabular-nums}
td.wrap{overflow-wrap:anywhere;font-family:ui-monospace,monospace;font-size:0.95em}
figure{margin:1em 0}img{max-width:100%;height:auto}figcaption{font-size:0.85em;color:#555}
code{font-size:0.85em}
.caveat{background:#fff4d6;border-left:4px solid #d89000;padding:4px 8px;margin:0.6em 0}"""


def _breakable(value) -> str:
    """Escaped text with a line-break opportunity after each / _ - . (a path or name breaks there first)."""
    return re.sub(r"([/_.\-])", r"\1<wbr>", html.escape(str(value)))


def _md_cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _caveat_whose(block: Caveat) -> str:
    """What follows "Caveat": the artifact whose numbers it qualifies."""
    return f" ({block.artifact}): " if block.artifact else ": "


def markdown(title: str, sections: list[Section], figure_dir: str) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        if not section.blocks:
            continue
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                lines.append("| " + " | ".join(block.columns) + " |")
                lines.append("|" + "---|" * len(block.columns))
                lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in block.rows]
            elif isinstance(block, Figure):
                lines.append(f"![{block.caption}]({figure_dir}/{block.name})")
                lines.append(f"*{block.caption}*")
            elif isinstance(block, Caveat):
                lines.append(f"> **Caveat**{_caveat_whose(block)}{block.text}")
            else:
                lines.append(block)
            lines.append("")
    return "\n".join(lines)


def html_page(title: str, sections: list[Section]) -> str:
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             "<meta name='viewport' content='width=device-width,initial-scale=1'>"
             f"<title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for section in sections:
        if not section.blocks:
            continue
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Table):
                head = "".join(f"<th>{html.escape(c)}</th>" for c in block.columns)
                wrap = [c in block.wrap for c in block.columns]
                body = "".join("<tr>" + "".join(f"<td class='wrap'>{_breakable(v)}</td>" if w
                                                else f"<td>{html.escape(str(v))}</td>"
                                                for w, v in zip(wrap, row, strict=True)) + "</tr>"
                               for row in block.rows)
                parts.append(f"<div class='table'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
                             "</table></div>")
            elif isinstance(block, Figure):
                data = base64.b64encode(block.png).decode()
                caption = html.escape(block.caption)
                parts.append(f"<figure><img alt='{caption}' data-name='{html.escape(block.name)}' "
                             f"src='data:image/png;base64,{data}'><figcaption>{caption}</figcaption></figure>")
            elif isinstance(block, Caveat):
                parts.append(f"<p class='caveat'><strong>Caveat</strong>{html.escape(_caveat_whose(block))}"
                             f"{html.escape(block.text)}</p>")
            else:
                parts.append(f"<p>{html.escape(block)}</p>")
    # marks how many figures the browser decoded (a headless browser check reads it from the DOM)
    parts.append("<script>window.addEventListener('load',()=>{const i=[...document.images];"
                 "document.body.dataset.imagesLoaded=i.filter(x=>x.complete&&x.naturalWidth>0).length;"
                 "document.body.dataset.images=i.length;});</script>")
    parts.append("</body></html>")
    return "\n".join(parts)
