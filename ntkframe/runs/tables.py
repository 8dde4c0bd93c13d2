"""Plain aligned text tables for the terminal: the CLI's listings and the experiments' summaries."""

from __future__ import annotations

from typing import Any, Sequence


def format_cell(v: Any) -> str:
    """A table cell: floats in 4 significant digits, None as "-", anything else as str()."""
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None,
                 rule: bool = True, indent: str = "") -> str:
    """Columns padded to their widest cell; ``align`` gives "l" or "r" per column (default: all
    right-aligned), ``rule`` underlines the headers with dashes, ``indent`` prefixes every line.
    Trailing blanks are stripped, so a row may leave its last cells empty."""
    align = align or "r" * len(headers)
    if len(align) != len(headers):
        raise ValueError(f"align={align!r} gives {len(align)} columns but there are {len(headers)} headers")
    cells = [[format_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells if i < len(r))]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [v.ljust(w) if a == "l" else v.rjust(w) for v, w, a in zip(values, widths, align)]
        return (indent + "  ".join(parts)).rstrip()

    out = [line(headers)]
    if rule:
        out.append(line(["-" * w for w in widths]))
    out += [line(r) for r in cells]
    return "\n".join(out)
