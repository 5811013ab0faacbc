"""Which files may be attached to a mail, judged by name, declared type and content.

An allow-list, not a deny-list: a type is accepted only when its content starts with that type's
magic bytes (a ``.pdf`` that is an executable is refused), the file name's extension belongs to the
declared type, and, for Office documents (ZIP containers), nothing inside is a macro project or an
executable. Executables, scripts, HTML, SVG, archives and macro-enabled documents are refused:
they are how malware and phishing travel, and mailbox providers mark mail carrying them as spam.
SES itself rejects a message carrying any of ``SES_UNSUPPORTED_EXTENSIONS`` (moto does not): none
of them is in the allow-list, so such a message is refused at upload, never by SES mid-campaign.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, replace

from core.domain.errors import InvalidInput

_OOXML = "application/vnd.openxmlformats-officedocument."


@dataclass(frozen=True)
class FileType:
    extensions: tuple[str, ...]
    magic: tuple[bytes, ...]  # the content starts with one of these (empty: a text type)


ALLOWED: dict[str, FileType] = {
    "application/pdf": FileType((".pdf",), (b"%PDF-",)),
    "image/png": FileType((".png",), (b"\x89PNG\r\n\x1a\n",)),
    "image/jpeg": FileType((".jpg", ".jpeg"), (b"\xff\xd8\xff",)),
    "image/gif": FileType((".gif",), (b"GIF87a", b"GIF89a")),
    "text/plain": FileType((".txt",), ()),
    "text/csv": FileType((".csv",), ()),
    "text/calendar": FileType((".ics",), (b"BEGIN:VCALENDAR",)),
    _OOXML + "wordprocessingml.document": FileType((".docx",), (b"PK\x03\x04",)),
    _OOXML + "spreadsheetml.sheet": FileType((".xlsx",), (b"PK\x03\x04",)),
    _OOXML + "presentationml.presentation": FileType((".pptx",), (b"PK\x03\x04",)),
}
# Refused by name whatever the declared type, with a message that says so.
DANGEROUS_EXTENSIONS = frozenset({
    ".exe", ".com", ".bat", ".cmd", ".scr", ".pif", ".msi", ".msp", ".dll", ".cpl", ".jar", ".js", ".jse",
    ".vbs", ".vbe", ".wsf", ".wsh", ".ps1", ".psm1", ".sh", ".bash", ".py", ".pl", ".rb", ".php", ".hta",
    ".lnk", ".reg", ".iso", ".img", ".vhd", ".apk", ".app", ".dmg", ".html", ".htm", ".xhtml", ".svg", ".swf",
    ".docm", ".xlsm", ".pptm", ".dotm", ".xltm", ".xlam", ".ppam", ".zip", ".rar", ".7z", ".gz", ".tar",
})
# Content that is executable whatever its name says.
# "Unsupported attachment types" of the SES developer guide (mime-types.html).
SES_UNSUPPORTED_EXTENSIONS = frozenset(
    "." + e for e in (
        "ade adp app asp bas bat cer chm cmd com cpl crt csh der exe fxp gadget hlp hta inf ins isp its js jse "
        "ksh lib lnk mad maf mag mam maq mar mas mat mau mav maw mda mdb mde mdt mdw mdz msc msh msh1 msh2 "
        "mshxml msh1xml msh2xml msi msp mst ops pcd pif plg prf prg reg scf scr sct shb shs sys ps1 ps1xml "
        "ps2 ps2xml psc1 psc2 tmp url vb vbe vbs vps vsmacros vss vst vsw vws wsc wsf wsh xnk").split())
_EXECUTABLE_MAGIC = (b"MZ", b"\x7fELF", b"\xca\xfe\xba\xbe", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"#!")
_FILENAME = re.compile(r"[^\x00-\x1f\x7f/\\\"]{1,200}")
MAGIC_BYTES = 64  # how much of a file the type check needs


def check_declared(filename: str, content_type: str) -> None:
    """At registration: the name and the declared type are allowed and agree. Raises InvalidInput."""
    name = filename.strip()
    if not _FILENAME.fullmatch(name) or name in (".", ".."):
        raise InvalidInput(f"filename {filename[:80]!r} is not a valid file name (1-200 characters, no "
                           f"control characters, slashes or quotes)", [{"loc": ["body", "filename"]}])
    ext = _extension(name)
    if ext in DANGEROUS_EXTENSIONS:
        raise InvalidInput(f"{ext} files are refused as attachments (executables, scripts, HTML, SVG, archives "
                           f"and macro-enabled documents can carry malware)", [{"loc": ["body", "filename"]}])
    kind = ALLOWED.get(content_type)
    if kind is None:
        raise InvalidInput(f"content type {content_type!r} is not accepted for attachments; accepted: "
                           f"{', '.join(sorted(ALLOWED))}", [{"loc": ["body", "content_type"]}])
    if ext not in kind.extensions:
        raise InvalidInput(f"filename {name!r} does not end in {' or '.join(kind.extensions)}, as a "
                           f"{content_type} file should", [{"loc": ["body", "filename"]}])


def check_content(content_type: str, data: bytes) -> None:
    """On confirm: the uploaded bytes are what the declared type says. Raises InvalidInput."""
    if not data:
        raise InvalidInput("the attachment is empty")
    if data.startswith(_EXECUTABLE_MAGIC):
        raise InvalidInput("the attachment's content is an executable or a script; it is refused")
    kind = ALLOWED[content_type]
    if kind.magic and not data.startswith(kind.magic):
        raise InvalidInput(f"the attachment's content is not {content_type} (its first bytes do not match)")
    if content_type.startswith("text/"):
        if b"\x00" in data:
            raise InvalidInput(f"the attachment's content is not {content_type} (it holds binary data)")
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"the attachment is not UTF-8 text (byte {exc.start})") from None
    if content_type.startswith(_OOXML):
        _check_office(content_type, data)


def _check_office(content_type: str, data: bytes) -> None:
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except (zipfile.BadZipFile, ValueError, OSError):
        raise InvalidInput(f"the attachment's content is not {content_type} (not a readable Office file)") from None
    if "[Content_Types].xml" not in names:
        raise InvalidInput(f"the attachment's content is not {content_type} (no [Content_Types].xml)")
    for n in names:
        low = n.lower()
        if low.endswith("vbaproject.bin") or _extension(low) in DANGEROUS_EXTENSIONS - {".xml"}:
            raise InvalidInput(f"the document contains {n!r} (macros or an embedded executable); it is refused")


def _extension(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


@dataclass(frozen=True)
class AttachedFile:
    """One file as a mail carries it; with ``content_id`` an inline image the HTML shows
    (``<img src="cid:<content_id>">``) rather than a file to download."""

    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None


INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif"})


def as_inline_if_shown(attachment_id: str, f: AttachedFile, html: str) -> AttachedFile:
    """An image attachment the rendered HTML refers to as ``cid:<attachment id>`` goes inline
    (multipart/related); every other file stays an attachment."""
    if f.content_type in INLINE_TYPES and f"cid:{attachment_id}" in html:
        return replace(f, content_id=attachment_id)
    return f
