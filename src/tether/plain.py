"""Plain text for stdout: aligned tables and exact writes, never through Rich.

stdout is data: Rich reads brackets in model names and item ids as markup and wraps long lines at 80
columns when piped, so whatever a command prints as its result goes through here. Messages and
progress go to stderr (Rich is fine there).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def plain_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int] = frozenset(), title: str = ""
) -> str:
    """Aligned columns separated by two spaces; ``numeric`` columns are right-aligned."""
    lines = [tuple(header), *(tuple(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    body = "\n".join(
        "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    )
    return f"{title}\n{body}" if title else body


def out(text: str) -> None:
    """``text`` and a newline on stdout, exactly as given."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
