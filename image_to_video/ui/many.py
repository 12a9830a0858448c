"""Many pictures at once: the page's "Queue all" makes one job per uploaded picture.

The uploads are image files and ``.zip`` files of images. A zip is read in memory and never
extracted: its member names are only shown, so a name like ``../../x`` reaches no disk. Every
read is capped (a picture at ``max_bytes``, everything one call reads at ``max_total_bytes``,
refused files included) and unpacked ``CHUNK`` bytes at a time, because a zip's declared sizes
can lie; a zip bomb, an encrypted or damaged zip and a file that
is not a picture are each refused with a reason the page shows, never a traceback.

Each job is submitted through ``JobQueue.submit``, exactly as the single Generate submits one,
so its picture is normalised and its settings validated the same way.
"""

from __future__ import annotations

import bz2
import copy
import io
import logging
import lzma
import re
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, BinaryIO, NamedTuple, Protocol

from PIL import Image, UnidentifiedImageError

from ..errors import AppError, InvalidInput
from ..i18n import normalise_language, t
from ..job_queue import JobQueue
from .components import uploaded_file

log = logging.getLogger(__name__)

MB = 1024 * 1024
#: Everything one "Queue all" reads (all its uploads, zips unpacked) is at most this many times
#: the upload limit: 4 x 30 MB by default, so one call holds at most 120 MB of pictures.
TOTAL_UPLOADS_FACTOR = 4
#: The file names taken as pictures: the formats ``err_not_image`` names.
PICTURE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
#: Refusals listed one by one in the summary; the rest are counted.
REFUSALS_LISTED = 20
#: A name is cut to this many characters when it is shown.
NAME_CHARS = 80


class Picture(NamedTuple):
    """One picture to queue: its name as shown (``album.zip/beach/1.jpg``) and its file's bytes."""

    name: str
    data: bytes


class Refused(NamedTuple):
    """A file (or the rest of a call) that was not queued: its name and why, as an i18n key and its
    parameters."""

    name: str
    key: str
    params: dict[str, Any]

    def text(self, lang: str) -> str:
        return t(self.key, lang, **self.params)


#: Files one call looks at beyond ``max_pictures`` (refused ones count): then it stops.
MAX_EXTRA_EXAMINED = 50
#: A zip with more entries than this is refused whole (its listing alone would take long to read).
MAX_ZIP_ENTRIES = 10_000
#: A file is read (and a zip member unpacked) this many bytes at a time: the most one step costs.
CHUNK = 64 * 1024


class _Budget:
    """How many bytes a call may still read; shared by all its uploads."""

    def __init__(self, max_bytes: int, max_total_bytes: int):
        self.max_bytes, self.max_total_bytes, self.left = max_bytes, max_total_bytes, max_total_bytes

    def read(self, chunks: Iterable[bytes], name: str) -> bytes | Refused:
        """A file's bytes, taken from ``chunks`` until one chunk past what is allowed; that chunk tells
        which limit it broke. Everything unpacked counts against the call's total, refused or not
        (a zip of many over-large members must not unpack gigabytes one refusal at a time)."""
        cap = min(self.max_bytes, self.left)
        parts: list[bytes] = []
        size = 0
        try:
            for chunk in chunks:
                parts.append(chunk)
                size += len(chunk)
                if size > cap:
                    break
        finally:
            self.left = max(0, self.left - size)
        if size > cap and cap == self.max_bytes:
            return Refused(name, "many_file_too_large", {"limit_mb": f"{self.max_bytes / MB:g}"})
        if size > cap:
            return Refused(name, "many_total_too_large", {"limit_mb": f"{self.max_total_bytes / MB:g}"})
        return b"".join(parts)


class _Stop(Exception):
    """Raised when a limit of the whole call is reached: nothing after it is read."""


def pictures_from_uploads(paths: list[str] | str | None, *, max_pictures: int, max_bytes: int,
                          max_total_bytes: int) -> tuple[list[Picture], list[Refused]]:
    """Each uploaded file (a path in Gradio's upload folder) as pictures, in the order given: an
    image file as itself, a ``.zip`` as the image files inside it in the natural order of their names
    (``2.jpg`` before ``10.jpg``; folders fine; ``__MACOSX/`` and hidden files skipped).

    At most ``max_pictures`` in all: the first one past them is refused and nothing after it is
    read. A picture is at most ``max_bytes`` and all the pictures together at most
    ``max_total_bytes``, counted as read (uncompressed), not as declared. Anything else (a path
    outside the upload folder, a file that is not a picture, an encrypted, damaged or
    over-large member, a damaged zip) is refused with its reason.
    """
    paths = [paths] if isinstance(paths, str) else list(paths or [])
    if all(isinstance(path, str) for path in paths):
        paths = list(dict.fromkeys(paths))  # the same upload listed twice is read once
    budget = _Budget(max_bytes, max_total_bytes)
    pictures: list[Picture] = []
    refused: list[Refused] = []
    # Files looked at in all (refused ones too): a zip of countless empty or junk members, or one
    # upload listed over and over, must not keep a call busy for minutes.
    examined_limit = max_pictures + MAX_EXTRA_EXAMINED
    try:
        for path in paths[:examined_limit + 1]:
            for found in _pictures_of_upload(path, budget):
                if len(pictures) + len(refused) >= examined_limit:
                    refused.append(Refused(found.name, "many_too_many", {"limit": max_pictures}))
                    raise _Stop
                if isinstance(found, Refused):
                    refused.append(found)
                    if found.key == "many_total_too_large":
                        raise _Stop
                elif len(pictures) == max_pictures:
                    refused.append(Refused(found.name, "many_too_many", {"limit": max_pictures}))
                    raise _Stop
                else:
                    pictures.append(found)
    except _Stop:
        pass
    return pictures, refused


def _pictures_of_upload(path: Any, budget: _Budget) -> Iterator[Picture | Refused]:
    resolved = uploaded_file(path)
    name = PurePosixPath(str(path).replace("\\", "/")).name if isinstance(path, str) else "?"
    if resolved is None:
        yield Refused(name, "err_upload_again", {})
    elif name.lower().endswith(".zip"):
        yield from _pictures_of_zip(resolved, name, budget)
    elif PurePosixPath(name).suffix.lower() not in PICTURE_SUFFIXES:
        yield Refused(name, "many_not_image", {})
    else:
        with open(resolved, "rb") as file:
            yield _picture(name, budget.read(iter(lambda: file.read(CHUNK), b""), name))


def _pictures_of_zip(path: str, zip_name: str, budget: _Budget) -> Iterator[Picture | Refused]:
    """The zip's pictures, each read in memory through ``budget``; a member that cannot be
    read is refused, and a zip that cannot be opened is refused whole."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        log.info("Refused the zip %s: %s", zip_name, error)
        yield Refused(zip_name, "many_zip_damaged", {})
        return
    with archive:
        if len(archive.infolist()) > MAX_ZIP_ENTRIES:
            yield Refused(zip_name, "many_too_many", {"limit": MAX_ZIP_ENTRIES})
            return
        for info in sorted(archive.infolist(), key=lambda info: _natural(info.filename)):
            member = info.filename.replace("\\", "/")
            if info.is_dir() or _is_junk(member):
                continue
            name = f"{zip_name}/{member}"
            if PurePosixPath(member).suffix.lower() not in PICTURE_SUFFIXES:
                yield Refused(name, "many_not_image", {})
            elif info.flag_bits & 0x1:  # encrypted (the zip format's bit 0)
                yield Refused(name, "many_zip_encrypted", {})
            else:
                yield _picture(name, _read_member(archive, info, name, budget))


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, budget: _Budget) -> bytes | Refused:
    try:
        with closing(_unpacked(archive, info)) as chunks:
            return budget.read(chunks, name)
    except NotImplementedError:  # a compression method zipfile cannot unpack
        return Refused(name, "many_zip_method", {})
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, OSError, EOFError, ValueError, RuntimeError) as error:
        log.info("Refused %s: %s", name, error)  # e.g. "Bad CRC-32": the data is not what it declares
        return Refused(name, "many_zip_member_damaged", {})


def _unpacked(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """A member's data, ``CHUNK`` bytes at most at a time, so that no step unpacks more than that.
    zipfile bounds each step of deflate only: of bzip2 and LZMA it unpacks each raw read whole, and
    4 KB of bzip2 unpack to gigabytes. Those two are unpacked here from the member's raw bytes."""
    if info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        with archive.open(info) as file:
            yield from iter(lambda: file.read(CHUNK), b"")
        return
    if info.compress_type not in (zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        raise NotImplementedError(f"compression method {info.compress_type}")
    raw = copy.copy(info)  # the same member read as stored: its compressed bytes, no CRC check
    raw.compress_type, raw.file_size, raw.CRC = zipfile.ZIP_STORED, info.compress_size, None
    with archive.open(raw) as file:
        yield from _decompressed(file, info)


def _decompressed(file: BinaryIO, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """The bzip2 or LZMA stream of ``file`` unpacked ``CHUNK`` bytes at a time; raises ``BadZipFile``
    when it is cut short, longer than declared or fails its CRC (as zipfile does)."""
    decompressor = bz2.BZ2Decompressor() if info.compress_type == zipfile.ZIP_BZIP2 else _lzma_decompressor(file)
    crc, size = 0, 0
    while not decompressor.eof:
        data = file.read(CHUNK) if decompressor.needs_input else b""
        if decompressor.needs_input and not data:
            if size == info.file_size:  # an LZMA stream without its end marker ends at the declared size
                break
            raise zipfile.BadZipFile(f"{info.filename!r} ends early")
        chunk = decompressor.decompress(data, CHUNK)
        crc, size = zlib.crc32(chunk, crc), size + len(chunk)
        if size > info.file_size:
            raise zipfile.BadZipFile(f"{info.filename!r} unpacks past its declared size")
        if chunk:
            yield chunk
    if crc != info.CRC:
        raise zipfile.BadZipFile(f"Bad CRC-32 for file {info.filename!r}")


def _lzma_decompressor(file: BinaryIO) -> lzma.LZMADecompressor:
    """A raw LZMA1 decompressor from the zip format's LZMA header (version, properties' size, properties)."""
    header = file.read(4)
    if len(header) < 4:
        raise zipfile.BadZipFile("LZMA header cut short")
    props = file.read(int.from_bytes(header[2:4], "little"))
    if len(props) != 5:
        raise zipfile.BadZipFile("LZMA properties damaged")
    lc_lp_pb, dict_size = props[0], int.from_bytes(props[1:5], "little")
    lzma1 = {"id": lzma.FILTER_LZMA1, "lc": lc_lp_pb % 9, "lp": lc_lp_pb // 9 % 5, "pb": lc_lp_pb // 45,
             "dict_size": dict_size}
    return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma1])


def _picture(name: str, data: bytes | Refused) -> Picture | Refused:
    if isinstance(data, Refused):
        return data
    return Picture(name, data) if _recognised(data) else Refused(name, "many_not_image", {})


def _recognised(data: bytes) -> bool:
    """Whether Pillow takes ``data`` for a picture, from its header only. One it recognises but
    finds too large or with too much metadata still counts: ``JobQueue.submit`` refuses it then,
    with the same message a single upload gets."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.open(io.BytesIO(data)).close()
    except UnidentifiedImageError:
        return False
    except (Image.DecompressionBombError, ValueError):  # too many pixels, metadata over Pillow's limit
        pass
    return True


def _is_junk(member: str) -> bool:
    """A folder macOS adds (``__MACOSX/``) or a hidden file or folder (``.DS_Store``, ``.git/``)."""
    parts = PurePosixPath(member).parts
    return parts[:1] == ("__MACOSX",) or any(part.startswith(".") for part in parts)


def _natural(name: str) -> list:
    """Sort key: digits by their number, letters without case (``img2`` before ``IMG10``)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.casefold())
            for part in re.split(r"(\d+)", name) if part]


#: What a user sees as a new line: ``str.splitlines`` also splits on U+2028, U+0085, \v, \f and
#: \x1c-\x1e, which a pasted prompt may hold inside what looks like one line.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def prompts_for(text: Any, count: int) -> list[str]:
    """The prompt of each of ``count`` pictures: one prompt for all (a single non-empty line), or
    one per line in the pictures' order (blank lines ignored).

    Raises ``InvalidInput`` when there is no prompt, or when the number of lines is neither one
    nor ``count`` (the message says how many of each).
    """
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise InvalidInput(key="err_prompt_type", name_key="param_prompt", kind=type(text).__name__)
    lines = [line.strip() for line in _LINE_BREAK.split(text) if line.strip()]
    if not lines:
        raise InvalidInput(key="err_prompt_missing")
    if len(lines) == 1:
        return lines * count
    if len(lines) != count:
        raise InvalidInput(key="many_prompt_lines", lines=len(lines), pictures=count)
    return lines


@dataclass(frozen=True)
class ManyResult:
    """What one "Queue all" did: the jobs queued (their ids, in the pictures' order), the pictures
    refused, and, when the queue stopped taking jobs partway, why and how many were left."""

    queued: tuple[str, ...]
    refused: tuple[Refused, ...]
    #: Why the rest were not queued (named by the first picture not queued); None if none was left.
    stopped: Refused | None = None
    left: int = 0
    #: The page's language when it was asked.
    lang: str = "en"

    def text(self, lang: str | None = None) -> str:
        """The summary as Markdown, in ``lang`` (by default the page's language when it was asked)."""
        lang = normalise_language(lang or self.lang)
        parts = [t("many_queued", lang, count=len(self.queued)) if self.queued else t("many_none_queued", lang)]
        if self.stopped is not None:
            parts.append(t("many_stopped", lang, queued=len(self.queued), left=self.left,
                           reason=self.stopped.text(lang)))
        if self.refused:
            items = [f"- **{_markdown(refusal.name)}**: {refusal.text(lang)}"
                     for refusal in self.refused[:REFUSALS_LISTED]]
            if len(self.refused) > REFUSALS_LISTED:
                items.append(f"- {t('many_more_refused', lang, count=len(self.refused) - REFUSALS_LISTED)}")
            parts.append(t("many_refused_title", lang, count=len(self.refused)) + "\n\n" + "\n".join(items))
        return "\n\n".join(parts)


def _markdown(name: str) -> str:
    """A file name as literal Markdown text, cut to ``NAME_CHARS``."""
    if len(name) > NAME_CHARS:
        name = name[:NAME_CHARS] + "…"
    return re.sub(r"([\\`*_{}\[\]()<>#+\-.!|~&])", r"\\\1", name)


class Owners(Protocol):
    """Who a page is (``events.PageOwners``)."""

    def owner(self, token: Any) -> str | None: ...


class ManyPictures:
    """The page's "Queue all": one job per picture for this page's owner, with the form's settings
    (those the single Generate sends, passed through as ``**settings``), each validated by
    ``JobQueue.submit``.

    Nothing is queued when the prompts do not match the pictures. A picture ``submit`` refuses is
    listed with its reason and the others still go; a refusal that is not about the picture (the
    queue is full, the disk is, the server is stopping) stops there and says how many were queued
    and how many were not.
    """

    def __init__(self, queue: JobQueue, owners: Owners, *, max_pictures: int, max_upload_bytes: int):
        """``max_pictures``: the queue's bound (``jobs.max_queued``); ``max_upload_bytes``: one
        picture's limit (``server.max_upload_mb``), of which a call reads ``TOTAL_UPLOADS_FACTOR`` times
        at most in all."""
        self.queue, self.owners = queue, owners
        self.max_pictures, self.max_upload_bytes = max_pictures, max_upload_bytes

    def queue_all(self, paths, prompts_text, owner, lang, **settings) -> ManyResult:
        """Queue one job per picture of ``paths`` (the ``gr.File`` value) for the page whose token is
        ``owner``; the summary speaks ``lang``. Raises ``InvalidInput`` (nothing queued) for a token the server did not sign, no
        files, or prompts that do not match the pictures."""
        lang = normalise_language(lang)
        verified = self.owners.owner(owner)
        if verified is None:
            raise InvalidInput(key="err_page_id")
        if not paths:
            raise InvalidInput(key="many_no_files")
        pictures, refused = pictures_from_uploads(
            paths, max_pictures=self.max_pictures, max_bytes=self.max_upload_bytes,
            max_total_bytes=TOTAL_UPLOADS_FACTOR * self.max_upload_bytes)
        if not pictures:
            return ManyResult(queued=(), refused=tuple(refused), lang=lang)
        prompts = prompts_for(prompts_text, len(pictures))
        return self._submit_each(pictures, prompts, verified, refused, lang, settings)

    def _submit_each(self, pictures: list[Picture], prompts: list[str], owner: str, refused: list[Refused],
                     lang: str, settings: dict) -> ManyResult:
        queued: list[str] = []
        for index, (picture, prompt) in enumerate(zip(pictures, prompts, strict=True)):
            try:
                queued.append(self.queue.submit(picture.data, prompt, owner=owner, source="ui", **settings).id)
            except InvalidInput as error:  # about this picture (or its prompt): the others still go
                refused.append(_refusal(picture.name, error))
            except Exception as error:  # about the server (queue or disk full, stopping): the rest wait
                if isinstance(error, AppError):
                    log.info("Queue all stopped after %d job(s): %s", len(queued), error)
                else:
                    log.exception("Queueing %s failed", picture.name)
                return ManyResult(tuple(queued), tuple(refused), _refusal(picture.name, error),
                                  left=len(pictures) - index, lang=lang)
        log.info("Queue all: %d job(s) queued for %s, %d refused", len(queued), owner[:13], len(refused))
        return ManyResult(tuple(queued), tuple(refused), lang=lang)


def _refusal(name: str, error: Exception) -> Refused:
    """``error`` as a refusal of ``name``: its own text, or the generic one for an unexpected error."""
    if isinstance(error, AppError) and error.key:
        return Refused(name, error.key, error.params)
    return Refused(name, "err_something_wrong", {})
