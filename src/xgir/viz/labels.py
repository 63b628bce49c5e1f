"""Text that fits its panel: shortened names and wrapped titles (figures never overlap)."""

from __future__ import annotations

import textwrap

WIDTH = 26  # characters of a 7 pt title over a 1.7 in panel


def shorten(name: str, width: int = 22) -> str:
    """``name`` cut in the middle to at most ``width`` characters ("IMG_2023…0042.jpg").

    >>> shorten("a_very_long_photograph_name_0042.jpg", 16)
    'a_very_…0042.jpg'
    """
    name = str(name)
    if len(name) <= width or width < 5:
        return name
    tail = width // 2  # the end (number, extension) tells files apart
    return name[: width - 1 - tail] + "…" + name[-tail:]


def wrap(text: str, width: int = WIDTH, lines: int = 3) -> str:
    """``text`` wrapped to ``width`` characters a line (existing line breaks kept), at most
    ``lines`` lines (the last one shortened).

    >>> wrap("cluster {tabby, tiger cat, Egyptian cat}", 20)
    'cluster {tabby,\\ntiger cat, Egyptian\\ncat}'
    """
    out: list[str] = []
    for part in str(text).split("\n"):
        out += textwrap.wrap(part, width, break_long_words=True, break_on_hyphens=False) or [""]
    if len(out) > lines:
        out = out[: lines - 1] + [shorten(" ".join(out[lines - 1:]), width)]
    return "\n".join(out)
