"""A one-sheet .xlsx writer and reader in the standard library (zip + XML), for MMBench's submission
spreadsheet: upstream writes it with pandas + openpyxl, which this suite does not require.

The writer produces the minimal Office Open XML package every spreadsheet reader accepts (workbook, one
worksheet ``Sheet1``, inline strings, numbers as numbers, empty cells for missing values). The reader reads the
first worksheet of any .xlsx, including openpyxl's (shared strings), into a header and rows.
"""
from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Any, List, Sequence, Tuple, Union
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from internvl.errors import DataError, MissingFileError

_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
# XML 1.0 cannot carry these control characters; openpyxl refuses them, so they are dropped.
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")

_CONTENT_TYPES = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>
<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>
</Types>"""
_ROOT_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>
</Relationships>"""
_WORKBOOK = f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<workbook xmlns="{_NS}" xmlns:r="{_REL_NS}"><sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>"""
_WORKBOOK_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>
</Relationships>"""


def _column_letter(i: int) -> str:
    letters = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        letters = chr(65 + r) + letters
    return letters


def _column_index(ref: str) -> int:
    n = 0
    for ch in ref:
        if not ch.isalpha():
            break
        n = n * 26 + ord(ch.upper()) - 64
    return n - 1


def _cell(ref: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, bool):
        return f'<c r="{ref}" t="b"><v>{int(value)}</v></c>'
    if isinstance(value, (int, float)):
        return f'<c r="{ref}"><v>{value!r}</v></c>'
    text = escape(_ILLEGAL.sub("", str(value)))
    return f'<c r="{ref}" t="inlineStr"><is><t xml:space="preserve">{text}</t></is></c>'


def write_xlsx(path: Union[str, os.PathLike], header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    """Write ``header`` and ``rows`` as the only sheet of ``path`` (atomically)."""
    lines = []
    for r, values in enumerate([list(header)] + [list(row) for row in rows], 1):
        cells = "".join(_cell(f"{_column_letter(c)}{r}", v) for c, v in enumerate(values))
        lines.append(f'<row r="{r}">{cells}</row>')
    sheet = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet xmlns="{_NS}"><sheetData>'
             + "".join(lines) + "</sheetData></worksheet>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", _CONTENT_TYPES)
        z.writestr("_rels/.rels", _ROOT_RELS)
        z.writestr("xl/workbook.xml", _WORKBOOK)
        z.writestr("xl/_rels/workbook.xml.rels", _WORKBOOK_RELS)
        z.writestr("xl/worksheets/sheet1.xml", sheet)
    os.replace(tmp, path)
    return path


def _text(element) -> str:
    return "".join(t.text or "" for t in element.iter(f"{{{_NS}}}t"))


def read_xlsx(path: Union[str, os.PathLike]) -> Tuple[List[str], List[List[Any]]]:
    """The first worksheet of ``path``: its first row as the header, the other rows padded to its width
    (numbers as int or float, empty cells as None)."""
    if not os.path.isfile(path):
        raise MissingFileError(f"{path} not found")
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            shared = []
            if "xl/sharedStrings.xml" in names:
                root = ElementTree.fromstring(z.read("xl/sharedStrings.xml"))
                shared = [_text(si) for si in root.iter(f"{{{_NS}}}si")]
            sheets = sorted(n for n in names if re.fullmatch(r"xl/worksheets/sheet\d+\.xml", n))
            if not sheets:
                raise DataError(f"{path}: no worksheet in the file")
            root = ElementTree.fromstring(z.read(sheets[0]))
    except zipfile.BadZipFile:
        raise DataError(f"{path}: not an .xlsx file (not a zip archive)") from None
    table = []
    for row in root.iter(f"{{{_NS}}}row"):
        values: dict = {}
        for col, c in enumerate(row.iter(f"{{{_NS}}}c")):
            ref, kind = c.get("r"), c.get("t", "n")
            col = _column_index(ref) if ref else col
            v = c.find(f"{{{_NS}}}v")
            if kind == "inlineStr":
                values[col] = _text(c)
            elif v is None or v.text is None:
                values[col] = None
            elif kind == "s":
                values[col] = shared[int(v.text)]
            elif kind in ("str", "e"):
                values[col] = v.text
            elif kind == "b":
                values[col] = v.text == "1"
            else:
                num = float(v.text)
                values[col] = int(num) if num.is_integer() and re.fullmatch(r"-?\d+", v.text) else num
        width = max(values) + 1 if values else 0
        table.append([values.get(i) for i in range(width)])
    if not table:
        raise DataError(f"{path}: the worksheet is empty")
    header = [str(h) if h is not None else "" for h in table[0]]
    rows = [r + [None] * (len(header) - len(r)) for r in table[1:]]
    return header, rows
