"""Display tables as paper-ready LaTeX (booktabs, aligned columns, caption, label, notes) and as Markdown.

A display table is a pandas frame of strings; ``table.attrs`` may hold a ``caption`` and ``notes`` (footnote lines,
each starting with its symbol).  Numeric columns (every filled cell a number, optionally followed by a footnote
symbol) are right-aligned, text columns left-aligned.  The LaTeX needs only ``\\usepackage{booktabs}``; every
character outside ASCII is written as a LaTeX command, so the file compiles with pdfLaTeX as it is.
"""
from __future__ import annotations

import re
import unicodedata

import pandas as pd
from tabulate import tabulate

__all__ = ["MARKS", "latex_escape", "numeric_columns", "render_latex", "render_markdown", "notes_of"]

MARKS = ("†", "‡", "§")  # footnote symbols, in order of use
_NUMBER = re.compile(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?([eE][+-]?\d+)?$|^[+-]?inf$|^nan$")
_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_UNICODE = {"×": r"$\times$", "–": "--", "—": "---", "·": r"$\cdot$", "₀": r"$_0$", "²": r"$^2$", "√": r"$\surd$",
            "σ": r"$\sigma$", "κ": r"$\kappa$", "≥": r"$\geq$", "≤": r"$\leq$", "±": r"$\pm$", "µ": r"$\mu$",
            "μ": r"$\mu$", "…": r"\ldots{}", "→": r"$\rightarrow$", "≈": r"$\approx$", "Δ": r"$\Delta$",
            "†": r"\textsuperscript{\dag}", "‡": r"\textsuperscript{\ddag}", "§": r"\textsuperscript{\S}",
            "’": "'", "“": "``", "”": "''", "\u00a0": "~"}


def latex_escape(text: object) -> str:
    """``text`` with LaTeX's special characters escaped and non-ASCII characters as LaTeX commands.

    A character without a LaTeX form here is written as its ASCII decomposition (``é`` → ``e``) or ``?``.
    """
    out = []
    for ch in str(text):
        if ch in _SPECIAL:
            out.append(_SPECIAL[ch])
        elif ch in _UNICODE:
            out.append(_UNICODE[ch])
        elif ord(ch) < 128:
            out.append(ch)
        else:
            plain = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
            out.append("".join(_SPECIAL.get(c, c) for c in plain) or "?")
    return "".join(out)


def _is_number(cell: str) -> bool:
    """Whether a display cell is a number (thousands separators and a trailing footnote mark allowed)."""
    return bool(_NUMBER.match(cell.rstrip("".join(MARKS)).strip()))


def numeric_columns(table: pd.DataFrame) -> list[bool]:
    """Per column: every filled cell is a number (right-aligned), and at least one is filled."""
    out = []
    for col in table.columns:
        cells = [str(c).strip() for c in table[col] if str(c).strip()]
        out.append(bool(cells) and all(_is_number(c) for c in cells))
    return out


def notes_of(table: pd.DataFrame) -> list[str]:
    """The table's footnote lines (``table.attrs["notes"]``), empty when none."""
    return list(table.attrs.get("notes", ()))


def render_markdown(table: pd.DataFrame) -> str:
    """A Markdown pipe table (numeric columns right-aligned, ``---:``) followed by its footnote lines."""
    align = ["right" if n else "left" for n in numeric_columns(table)]
    text = tabulate(table, headers="keys", tablefmt="pipe", showindex=False, disable_numparse=True,
                    colalign=align or None)
    notes = notes_of(table)
    return text + ("\n\n" + "\n\n".join(notes) if notes else "")


def render_latex(table: pd.DataFrame, label: str, caption: str | None = None) -> str:
    """A ``table`` float: caption, label, booktabs ``tabular`` with aligned columns, and the notes below."""
    caption = caption if caption is not None else table.attrs.get("caption", "")
    spec = "".join("r" if n else "l" for n in numeric_columns(table))
    lines = [r"\begin{table}[tbp]", r"\centering", r"\small"]
    if caption:
        lines.append(r"\caption{" + latex_escape(caption) + "}")
    lines += [r"\label{" + re.sub(r"[^A-Za-z0-9:._-]", "-", label) + "}", r"\begin{tabular}{" + spec + "}",
              r"\toprule", " & ".join(latex_escape(c) for c in table.columns) + r" \\", r"\midrule"]
    for _, row in table.iterrows():
        lines.append(" & ".join(latex_escape(v) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    notes = notes_of(table)
    if notes:
        lines += [r"\par\smallskip", r"\footnotesize", r" \\ ".join(latex_escape(n) for n in notes)]
    lines.append(r"\end{table}")
    return "\n".join(lines)
