"""Plain text from man pages written with the troff `man` macros, standard library only.

Enough of troff for the Linux man-pages and most section 1 pages: section headings
(`.SH`, `.SS`), paragraphs (`.PP`, `.TP`, `.IP`...), font macros (`.B`, `.BR`, `.IR`...:
their arguments joined, alternating fonts without spaces), no-fill blocks (`.nf`, `.EX`),
tables (`.TS`...`.TE`, cells separated by spaces), links (`.UR`, `.MT`) and the common
escapes (`\\-`, `\\(em`, `\\[aq]`, `\\fB`...). Filled lines are joined into paragraphs.
Comments, macro definitions, conditionals and unknown requests are dropped. A page that
is only `.so other-page` (an alias) gives empty text, which the builder drops.
"""

from __future__ import annotations

import re
from typing import List

SPECIAL_CHARS = {
    "em": "\u2014", "en": "\u2013", "hy": "-", "aq": "'", "dq": '"', "lq": "\u201c",
    "rq": "\u201d", "oq": "\u2018", "cq": "\u2019", "bu": "\u2022", "co": "\u00a9",
    "rg": "\u00ae", "tm": "\u2122", "mu": "\u00d7", "di": "\u00f7", "+-": "\u00b1",
    "<=": "\u2264", ">=": "\u2265", "!=": "\u2260", "->": "\u2192", "<-": "\u2190",
    "ga": "`", "ti": "~", "ha": "^", "rs": "\\", "bv": "|", "ba": "|", "de": "\u00b0",
    "sc": "\u00a7", "ps": "\u00b6", "dg": "\u2020", "lh": "<=", "rh": "=>", "Fo": "\u00ab",
    "Fc": "\u00bb", "fo": "\u2039", "fc": "\u203a", "ct": "\u00a2", "Po": "\u00a3",
    "Eu": "\u20ac", "mc": "\u00b5", "sq": "\u25a1", "eq": "=", "pl": "+", "mi": "-",
    "sl": "/", "lB": "[", "rB": "]", "lC": "{", "rC": "}", "la": "\u27e8", "ra": "\u27e9",
    "at": "@", "sh": "#", "Do": "$", "pc": "\u00b7", "ss": "\u00df", "ae": "\u00e6",
    "AE": "\u00c6", "'e": "\u00e9", "'a": "\u00e1", ":u": "\u00fc", ":o": "\u00f6",
    ":a": "\u00e4", "oe": "\u0153", "ue": "\u00fc", "or": "|", "ul": "_", "ru": "_",
}  # fmt: skip
# \*(lq-style predefined strings of the man macros
STRINGS = {
    "lq": "\u201c", "rq": "\u201d", "Lq": "\u201c", "Rq": "\u201d", "R": "\u00ae", "Tm": "\u2122",
    "S": "",
}  # fmt: skip

_ESCAPE = re.compile(
    r"\\(?:"
    r"\((?P<two>..)"                       # \(xx
    r"|\[(?P<named>[^\]]*)\]"              # \[name]
    r"|\*(?:\((?P<str2>..)|\[(?P<strn>[^\]]*)\]|(?P<str1>.))"  # \*x \*(xx \*[name]
    r"|f(?:\((?P<font2>..)|\[(?P<fontn>[^\]]*)\]|(?P<font1>.))"  # font changes
    r"|s[-+]?(?:\d|\(\d\d|\[\d+\])"        # point size
    r"|[nkg](?:\(..|\[[^\]]*\]|.)"         # registers
    r"|[hvwlLDxXbNoZCRSAu]'[^']*'"         # escapes with a quoted argument
    r"|(?P<simple>.)"
    r")"
)  # fmt: skip
_SIMPLE = {"-": "-", "e": "\\", "\\": "\\", "~": " ", " ": " ", "0": " ", "t": "\t",
           "&": "", ",": "", "/": "", ":": "", "|": "", "^": "", "%": "", "c": "", "{": "",
           "}": "", "a": "", "d": "", "r": "", "p": "", "'": "\u00b4", "`": "`", ".": ".",
           "E": "\\", "z": ""}  # fmt: skip

FONT_MACROS = {"B", "I", "SM", "SB"}
ALTERNATING_MACROS = {"BR", "RB", "BI", "IB", "IR", "RI"}
PARAGRAPH_MACROS = {"PP", "P", "LP", "sp", "HP", "PD"}
LINE_BREAK_MACROS = {"br", "TQ"}
NOFILL_START, NOFILL_END = {"nf", "EX"}, {"fi", "EE"}
BLOCK_SKIP = {"de": "..", "de1": "..", "ig": "..", "am": "..", "EQ": "EN"}


def _named_char(name: str) -> str:
    if name.startswith("u") and re.fullmatch(r"u[0-9A-Fa-f]{4,6}", name):
        return chr(int(name[1:], 16))
    if name.startswith("char") and name[4:].isdigit():
        return chr(int(name[4:]))
    return SPECIAL_CHARS.get(name, "")


def unescape(text: str) -> str:
    """Troff escapes to text: special characters, strings, fonts and sizes removed."""

    def replace(match: re.Match) -> str:
        if match["two"] is not None:
            return SPECIAL_CHARS.get(match["two"], "")
        if match["named"] is not None:
            return _named_char(match["named"])
        for key in ("str2", "strn", "str1"):
            if match[key] is not None:
                return STRINGS.get(match[key], "")
        if match["simple"] is not None:
            return _SIMPLE.get(match["simple"], match["simple"])
        return ""  # fonts, sizes, registers, motions

    # a `\"` comment runs to the end of the line
    text = re.sub(r'(?<!\\)(?:\\\\)*\\".*$', lambda m: m.group(0)[: m.group(0).index('\\"')], text)
    return _ESCAPE.sub(replace, text)


def split_args(rest: str) -> List[str]:
    """Macro arguments: blank-separated, double quotes group, `""` inside quotes is `"`."""
    args, current, quoted, i = [], "", False, 0
    has_arg = False
    while i < len(rest):
        ch = rest[i]
        if quoted:
            if ch == '"':
                if rest[i + 1 : i + 2] == '"':
                    current += '"'
                    i += 1
                else:
                    quoted = False
            else:
                current += ch
        elif ch == '"' and not current:
            quoted, has_arg = True, True
        elif ch in " \t":
            if current or has_arg:
                args.append(current)
            current, has_arg = "", False
        else:
            current += ch
            has_arg = True
        i += 1
    if current or has_arg:
        args.append(current)
    return args


class _ManPage:
    def __init__(self) -> None:
        self.blocks: List[str] = []  # finished paragraphs / headings / no-fill lines
        self.words: List[str] = []  # current filled paragraph
        self.nofill = False
        self.tag_next = False  # .TP: the next text line is the tag

    def flush(self) -> None:
        if self.words:
            self.blocks.append(" ".join(self.words))
            self.words = []

    def paragraph(self) -> None:
        self.flush()
        if self.blocks and self.blocks[-1] != "":
            self.blocks.append("")

    def text(self, line: str) -> None:
        if self.tag_next:
            self.tag_next = False
            self.flush()
            self.blocks.append(line)
            return
        if self.nofill:
            self.flush()
            self.blocks.append(line)
        elif line.strip():
            self.words.append(line.strip())
        else:
            self.paragraph()

    def heading(self, title: str) -> None:
        self.paragraph()
        self.blocks.append(title)

    def result(self) -> str:
        self.flush()
        return "\n".join(self.blocks).strip("\n")


def _table_rows(lines: List[str]) -> List[str]:
    """The data rows of a tbl block (options and format lines up to the one ending in `.`)."""
    body_start, separator = 0, "\t"
    for i, line in enumerate(lines):
        option = re.search(r"tab\s*\((.)\)", line)
        if option and line.rstrip().endswith(";"):
            separator = option[1]
        if line.rstrip().endswith("."):
            body_start = i + 1
            break
    rows = []
    for line in lines[body_start:]:
        if line.startswith(".") or line.strip() in ("_", "=", "T{", "T}"):
            continue
        line = line.replace("T{", "").replace("T}", "")  # text blocks: keep their text
        cells = [unescape(c).strip() for c in line.split(separator)]
        rows.append("  ".join(c for c in cells if c))
    return rows


def man_to_text(source: str) -> str:
    page = _ManPage()
    lines = source.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.startswith((".", "'")):
            page.text(unescape(line))
            continue
        control = line[1:].lstrip()
        if control.startswith(('\\"', "\\#")) or not control:
            continue  # comment or empty request
        name, _, rest = control.partition(" ")
        name = name.strip()
        if name in BLOCK_SKIP:
            end = "." + BLOCK_SKIP[name]
            while i < len(lines) and not lines[i].strip().startswith(end):
                i += 1
            i += 1
            continue
        if name == "so":
            return ""  # an alias of another page
        if name == "TS":
            table = []
            while i < len(lines) and not lines[i].startswith(".TE"):
                table.append(lines[i])
                i += 1
            i += 1
            page.paragraph()
            for row in _table_rows(table):
                page.blocks.append(row)
            page.paragraph()
            continue
        args = [unescape(a) for a in split_args(rest)]
        if name == "TH":
            continue  # title line: the NAME section says the same
        if name in ("SH", "SS"):
            title = " ".join(args)
            if not title and i < len(lines):
                title, i = unescape(lines[i]).strip(), i + 1
            page.heading(title)
        elif name in PARAGRAPH_MACROS:
            page.paragraph()
        elif name in LINE_BREAK_MACROS:
            page.flush()
            if name == "TQ":
                page.tag_next = True
        elif name == "TP":
            page.paragraph()
            page.tag_next = True
        elif name == "IP":
            page.paragraph()
            if args and args[0].strip():
                page.blocks.append(args[0])
        elif name in NOFILL_START:
            page.flush()
            page.nofill = True
        elif name in NOFILL_END:
            page.flush()
            page.nofill = False
        elif name in FONT_MACROS:
            text = " ".join(args)
            if not args and i < len(lines) and not lines[i].startswith("."):
                text, i = unescape(lines[i]), i + 1
            page.text(text)
        elif name in ALTERNATING_MACROS:
            page.text("".join(args))
        elif name in ("UE", "ME"):  # .UR/.MT address: the link text lines say it
            if args:
                page.text("".join(args))
        elif name == "OP":
            page.text("[" + " ".join(args) + "]")
        elif name == "SY":
            page.paragraph()
            page.text(" ".join(args))
        elif name == "YS":
            page.paragraph()
        # everything else (.RS, .RE, .in, .ti, .ne, .ad, .na, .hy, .if, .ie, .el, .ft,
        # .ps, .ds, .nr, .ce, .ll, .PD...) only affects layout or is conditional: dropped
    return page.result()

