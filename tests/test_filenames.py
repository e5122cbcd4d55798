import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.filenames import content_disposition, extension_of, sanitize_filename

BIDI_AND_INVISIBLE = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u200b\u200d\ufeff"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\x\\evil.exe", "evil.exe"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("a\x00b\x07c\x1b\x7f.txt", "abc.txt"),
        ("e\u0301t\u0301e\u0301.txt", "\u00e9t\u0301\u00e9.txt"),
        ("e\u200b\u0301.txt", "\u00e9.txt"),
        ("  . my   report\u00a0 2024 .pdf . ", "my report 2024 .pdf"),
        ("CON.txt", "_CON.txt"),
        ("con", "_con"),
        ("Lpt9.tar.gz", "_Lpt9.tar.gz"),
        ("CONSOLE.txt", "CONSOLE.txt"),
        ("report.txt", "report.txt"),
    ],
)
def test_sanitize(raw: str, expected: str) -> None:
    assert sanitize_filename(raw) == expected


def test_nfc() -> None:
    assert sanitize_filename("e\u0301") == "\u00e9"


@pytest.mark.parametrize("raw", [None, "", "...", " ", "dir/", "/..", "\u202e\u200b", "\x00"])
def test_empty_results_fall_back(raw: str | None) -> None:
    assert sanitize_filename(raw) == "file"
    assert sanitize_filename(raw, fallback="upload.bin") == "upload.bin"


def test_long_name_keeps_extension() -> None:
    name = sanitize_filename("\u00e9" * 300 + ".jpg")
    assert len(name.encode()) <= 255
    assert name.endswith(".jpg")
    assert name == "\u00e9" * 125 + ".jpg"


def test_long_name_cut_on_character_boundary() -> None:
    name = sanitize_filename("a" + "\u20ac" * 100 + ".png")  # 3-byte characters
    assert len(name.encode()) <= 255
    assert name == "a" + "\u20ac" * 83 + ".png"


def test_overlong_extension_is_truncated_with_the_name() -> None:
    name = sanitize_filename("photo." + "x" * 400)
    assert name == ("photo." + "x" * 400)[:255]


@pytest.mark.parametrize(
    "raw",
    [
        "CON." + "x" * 400,
        "CONSOLE." + "x" * 251,  # capping the stem alone would leave "CON.xxx..."
    ],
)
def test_capping_never_yields_a_reserved_name(raw: str) -> None:
    name = sanitize_filename(raw)
    assert name.startswith("_CO")
    assert len(name.encode()) == 255


@pytest.mark.parametrize(
    ("filename", "extension"),
    [("a.tar.gz", "gz"), ("x.jpg.exe", "exe"), (".bashrc", ""), ("noext", ""), ("A.JPG", "jpg"), ("a.", "")],
)
def test_extension_of(filename: str, extension: str) -> None:
    assert extension_of(filename) == extension


@given(st.text() | st.text(min_size=100, max_size=600))
def test_sanitized_name_is_always_safe(raw: str) -> None:
    name = sanitize_filename(raw)
    assert name
    assert len(name.encode()) <= 255
    assert "/" not in name and "\\" not in name
    assert not any(unicodedata.category(ch) in {"Cc", "Cf", "Cs"} for ch in name)
    assert not set(name) & set(BIDI_AND_INVISIBLE)
    assert name == name.strip(" .")
    assert name.split(".", 1)[0].rstrip(" ").upper() not in {"CON", "PRN", "AUX", "NUL", "COM1", "LPT1"}
    assert sanitize_filename(name) == name


def test_content_disposition_ascii() -> None:
    assert content_disposition("inline", "report.pdf") == 'inline; filename="report.pdf"'


def test_content_disposition_non_ascii_gives_both_forms() -> None:
    value = content_disposition("attachment", "r\u00e9sum\u00e9 \u65e5\u672c.pdf")
    assert value == (
        "attachment; filename=\"r_sum_ __.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%E6%97%A5%E6%9C%AC.pdf"
    )


def test_content_disposition_cannot_be_injected() -> None:
    value = content_disposition("attachment", 'evil".txt\r\nSet-Cookie: a=b; x="')
    assert value == (
        'attachment; filename="evil_.txtSet-Cookie: a=b; x=_"; '
        "filename*=UTF-8''evil%22.txtSet-Cookie%3A%20a%3Db%3B%20x%3D%22"
    )


@given(st.text())
def test_content_disposition_is_always_a_single_safe_header(raw: str) -> None:
    value = content_disposition("attachment", raw)
    assert value.isascii()
    assert all(" " <= ch <= "~" for ch in value)
    assert value.split("; filename*=")[0].count('"') == 2


def test_content_disposition_rejects_unknown_disposition() -> None:
    with pytest.raises(ValueError):
        content_disposition("form-data", "a.txt")
