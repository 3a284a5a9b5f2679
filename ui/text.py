"""User-supplied strings (a URL's value, a run's, sweep's or upload's name, a file name) shown as
plain text inside Streamlit's Markdown: ``![t](http://...)`` in a link must not make every
visitor's browser fetch an image, ``[login](http://...)`` must not become a link in a warning."""

from __future__ import annotations

import re

# What makes links, images, emphasis, code, HTML, tables and $math$ (a backslash escapes any ASCII
# punctuation in CommonMark); dots, dashes and colons stay as typed, so file names read as usual.
_MARKDOWN = re.compile(r"([\\`*_\[\]()!|<>~$])")


def plain(value) -> str:
    """``value`` as text that Markdown shows verbatim (links, images, emphasis, icons all inert)."""
    return _MARKDOWN.sub(r"\\\1", str(value))


def duration(seconds: float) -> str:
    """A time to wait, in words: ``about 40 s``, ``about 3 min``, ``about 1.5 h``."""
    if seconds < 90:
        return f"about {seconds:.0f} s"
    return f"about {seconds / 60:.0f} min" if seconds < 5400 else f"about {seconds / 3600:.1f} h"
