"""Reading and writing image files for the command line. Pillow only, no torch.

Read: any mode Pillow knows becomes RGB or RGBA (alpha kept), EXIF orientation applied, an
embedded ICC profile converted to sRGB. Write: the format follows the extension; the file is
written beside its destination and renamed into place, so a failure never leaves half a file.
Animations (``read_clip``/``write_clip``): animated GIF, WebP and APNG with every frame, each
frame's delay as given (0 included) and the loop count. The frame count is read from the
headers before any frame is decoded; APNG frames are composited here (every disposal and
blend); GIF and WebP files are assembled here from frames Pillow encodes one at a time, as
Pillow's and libwebp's writers merge equal consecutive frames.
"""

from __future__ import annotations

import io
import os
import re
import struct
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from .errors import InvalidInput

#: Extension -> (Pillow format, save options).
WRITE_FORMATS: dict[str, tuple[str, dict]] = {
    ".png": ("PNG", {"compress_level": 6}),
    ".jpg": ("JPEG", {"quality": 95, "subsampling": 0}),
    ".jpeg": ("JPEG", {"quality": 95, "subsampling": 0}),
    ".tif": ("TIFF", {}),
    ".tiff": ("TIFF", {}),
}
#: Background a JPEG's transparent pixels are flattened onto (JPEG has no alpha).
JPEG_BACKGROUND = (255, 255, 255)


ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def has_alpha(img: Image.Image) -> bool:
    """True when the image has an alpha channel or a transparent palette entry.

    (Not ``"A" in getbands()``: LAB's second band is also called "A".)
    """
    return img.mode in ALPHA_MODES or (img.mode in ("P", "L", "RGB")
                                       and "transparency" in img.info)


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and float greyscale to 8-bit "L" by scaling, not clipping (Pillow clips)."""
    a = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        a = a * 255.0 if a.max(initial=0.0) <= 1.0 else a
    else:
        a = a / 257.0 if a.max(initial=0) > 255 else a
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def _to_srgb(img: Image.Image) -> Image.Image:
    """Apply the embedded ICC profile (if any), giving sRGB RGB(A)."""
    icc = img.info.get("icc_profile")
    if not icc:
        return img
    alpha = img.convert("RGBA").getchannel("A") if has_alpha(img) else None
    base = img.convert("RGB") if img.mode in (*ALPHA_MODES, "P") else img
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        rgb = ImageCms.profileToProfile(base, src, ImageCms.createProfile("sRGB"),
                                        outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        # A broken profile is common in the wild; the pixels are still usable as they are.
        return img
    if alpha is not None:
        rgb.putalpha(alpha)
    return rgb


def _bomb(path: Path, e: Exception) -> InvalidInput:
    """Pillow's ``DecompressionBombError`` in the user's words."""
    pixels = re.search(r"\((\d+) pixels\)", str(e))
    size = f" has {int(pixels.group(1)):,} pixels, which" if pixels else ""
    return InvalidInput(f"Cannot read image '{path}': it{size} is more than the "
                        f"{2 * Image.MAX_IMAGE_PIXELS:,} pixels this engine opens (a file "
                        "this large is most likely a decompression bomb).",
                        "Scale the image down in an image editor first.")


def _open(path: Path) -> Image.Image:
    """``Image.open`` for every reader here (stills, the animation probe, clips), so that a
    decompression bomb is refused in words wherever a file is first opened."""
    try:
        with warnings.catch_warnings():
            # Pillow warns between its pixel limit and twice that, and refuses beyond: an image
            # it opens is used, so its warning would only be noise on the terminal.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as e:
        raise _bomb(path, e) from None


def _normalised(img: Image.Image) -> Image.Image:
    """16-bit and float to 8-bit, the ICC profile applied: what every reader gives."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = _to_8bit(img)
    return _to_srgb(img)


def read_image(path: str | os.PathLike) -> Image.Image:
    """An RGB or RGBA sRGB image from a file; ``InvalidInput`` naming the path otherwise."""
    path = Path(path)
    if not path.is_file():
        if path.exists():  # a FIFO or a device would block or never end: not opened
            raise InvalidInput(f"Cannot read image '{path}': it is not a regular file.",
                               "Give the path of a PNG, JPEG or TIFF file.")
        raise InvalidInput(f"Image file not found: '{path}'.",
                           "Check the path; it must be an existing PNG, JPEG or TIFF file.")
    try:
        with _open(path) as opened:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                opened.load()
            img = _normalised(ImageOps.exif_transpose(opened) or opened)
    except Image.DecompressionBombError as e:
        raise _bomb(path, e) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InvalidInput(f"Cannot read image '{path}': {e}",
                           "Use a PNG, JPEG or TIFF file that other programs can open.") from e
    return img.convert("RGBA" if has_alpha(img) else "RGB")


def output_format(path: str | os.PathLike) -> tuple[str, dict]:
    """Pillow format and options for a file name; ``InvalidInput`` for other extensions."""
    ext = Path(path).suffix.lower()
    if ext not in WRITE_FORMATS:
        raise InvalidInput(f"Cannot write '{path}': unsupported extension '{ext or '(none)'}'.",
                           "Name the output .png, .jpg, .jpeg, .tif or .tiff.")
    return WRITE_FORMATS[ext]


def check_output(path: str | os.PathLike) -> None:
    """Everything about the output path that can be known before computing: a known
    extension, an existing folder we may create files in, not a folder itself."""
    path = Path(path)
    output_format(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InvalidInput(f"Cannot write '{path}': it is a folder.",
                           "Give a file name, e.g. result.png, inside that folder.")
    if not folder.is_dir():
        raise InvalidInput(f"Cannot write '{path}': the folder '{folder}' does not exist.",
                           "Create the folder first or choose another output path.")
    check_folder(folder, path)


def check_folder(folder: str | os.PathLike, path: str | os.PathLike | None = None) -> None:
    """``InvalidInput`` unless a new file can be made in ``folder`` (``path``: the name the
    message quotes). The real test: permissions, ACLs, read-only mounts, a full disk's
    inodes."""
    folder = Path(folder)
    try:
        fd, probe = tempfile.mkstemp(prefix=".nst-", suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InvalidInput(f"Cannot write '{path or folder}': no new file can be made in "
                           f"'{folder}' ({e.strerror or e}).",
                           "Choose a folder you can write to, or fix its permissions.") from None


def _save_atomically(img: Image.Image | None, path: Path, folder: Path, fmt: str,
                     options: dict, replace: bool = True, data: bytes | None = None) -> None:
    """Save to a temporary file beside ``path`` (``img`` in ``fmt``, or the ready ``data``),
    then move it to ``path``: a failed write never leaves a half-written file where the
    user's was. ``replace=False``: a file that appeared at ``path`` meanwhile is kept (the
    hard link fails where a rename would replace it)."""
    tmp = None
    try:
        # mkstemp inside the try: the folder removed while computing is a failed write too.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=folder)
        with os.fdopen(fd, "wb") as f:
            if data is not None:
                f.write(data)
            else:
                img.save(f, format=fmt, **options)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        if replace:
            os.replace(tmp, path)
        else:
            _move_without_replacing(tmp, path)
    except FileExistsError:
        raise InvalidInput(f"Cannot write '{path}': a file of that name appeared while this "
                           "run worked, and it is not replaced.",
                           "Move that file away, or give --overwrite.") from None
    except OSError as e:
        raise InvalidInput(f"Cannot write '{path}': {e}",
                           "Check that the folder is writable and the disk is not full.") from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _move_without_replacing(tmp: str, path: Path) -> None:
    """``os.link`` fails with ``FileExistsError`` atomically; a file system without hard
    links gets the (racy, but still checked) exists-then-rename."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:
        if path.exists():
            raise FileExistsError(str(path)) from None
        os.replace(tmp, path)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_image(img: Image.Image, path: str | os.PathLike, replace: bool = True) -> list[str]:
    """Write ``img`` atomically in the format of the extension; returns notes for the user.
    ``replace=False``: an existing file at ``path`` is an ``InvalidInput``, never replaced."""
    path = Path(path)
    fmt, options = output_format(path)
    notes: list[str] = []
    if fmt == "JPEG" and img.mode == "RGBA":
        flat = Image.new("RGB", img.size, JPEG_BACKGROUND)
        flat.paste(img, mask=img.getchannel("A"))
        if img.getchannel("A").getextrema()[0] < 255:
            notes.append(f"JPEG has no transparency: transparent areas of '{path.name}' were "
                         "flattened onto white (use .png or .tif to keep them).")
        img = flat
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InvalidInput(f"Cannot write '{path}': the folder '{folder}' does not exist.",
                           "Create the folder first or choose another output path.")
    _save_atomically(img, path, folder, fmt, options, replace)
    return notes


def rescue_image(img: Image.Image, path: str | os.PathLike) -> Path | None:
    """Save a finished result that could not go to ``path`` somewhere else: the temporary
    folder, the home folder or the current one, under a new name (never over a file).
    The place it went, or None when none would take it."""
    path = Path(path)
    fmt, options = output_format(path)
    if fmt == "JPEG" and img.mode == "RGBA":
        fmt, options = "PNG", WRITE_FORMATS[".png"][1]
    suffix = path.suffix if fmt != "PNG" or path.suffix.lower() == ".png" else ".png"
    for folder in (tempfile.gettempdir(), Path.home(), Path.cwd()):
        where = None
        try:
            fd, where = tempfile.mkstemp(prefix=f"{path.stem}-", suffix=suffix, dir=folder)
            with os.fdopen(fd, "wb") as f:
                img.save(f, format=fmt, **options)
            return Path(where)
        except (OSError, ValueError):
            if where is not None and os.path.exists(where):
                os.unlink(where)  # half a file is no rescue
    return None


# --- animations ----------------------------------------------------------------------------

#: Extensions an animation is written to: (Pillow format, save options).
ANIMATION_FORMATS: dict[str, tuple[str, dict]] = {
    ".gif": ("GIF", {"optimize": False}),
    ".webp": ("WEBP", {"lossless": True}),
    ".apng": ("PNG", {}),
    ".png": ("PNG", {}),  # APNG when it has several frames
}
#: The delay a frame gets when its file says none (ms): GIMP's default for new frames.
DEFAULT_DELAY_MS = 100


@dataclass
class Clip:
    """An animation's frames in playing order (RGB or RGBA), each frame's delay in ms, and the
    loop count (0 = forever, None = plays once / not said)."""
    frames: list[Image.Image]
    durations: list[int]
    loop: int | None = None
    names: list[str] | None = None  # where each frame came from (several files), else None


def too_many_frames(n: int, cap: int, what: str = "The animation") -> InvalidInput:
    return InvalidInput(f"{what} has {n} frames; one run styles at most {cap}.",
                        "Split it into parts (the last frame of one part as the first of the "
                        "next keeps them coherent) or drop frames.")


def frame_count(path: str | os.PathLike) -> int:
    """How many frames an image file holds (1 for a still), from its headers, no frame
    decoded; ``InvalidInput`` like ``read_image`` when it cannot be opened (a decompression
    bomb included: this probe is the first to open a file)."""
    path = Path(path)
    read_image_checks(path)
    try:
        with _open(path) as img:
            return int(getattr(img, "n_frames", 1) or 1)
    except Image.DecompressionBombError as e:  # a later frame's size
        raise _bomb(path, e) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise InvalidInput(f"Cannot read image '{path}': {e}",
                           "Use a PNG, JPEG, TIFF, GIF or WebP file that other programs can "
                           "open.") from e


def read_image_checks(path: Path) -> None:
    """The checks ``read_image`` makes before opening: a regular file that exists."""
    if not path.is_file():
        if path.exists():
            raise InvalidInput(f"Cannot read image '{path}': it is not a regular file.",
                               "Give the path of an image file.")
        raise InvalidInput(f"Image file not found: '{path}'.",
                           "Check the path; it must be an existing image file.")


def _delay(ms: float | None) -> int:
    """A frame's delay as its file says it, 0 included (what a player does with 0 is the
    player's business); only a frame that says nothing gets the default."""
    return DEFAULT_DELAY_MS if ms is None else int(round(ms))


def read_clip(path: str | os.PathLike, max_frames: int | None = None) -> Clip:
    """The frames of an animated GIF, WebP or APNG, each as it is shown, with their delays and
    loop count. More than ``max_frames`` is refused from the headers, before any frame is
    decoded. APNG frames are composited here (``_read_apng``), GIF and WebP by Pillow."""
    path = Path(path)
    read_image_checks(path)
    frames, durations = [], []
    try:
        with _open(path) as opened:
            n = int(getattr(opened, "n_frames", 1) or 1)
            if max_frames is not None and n > max_frames:
                raise too_many_frames(n, max_frames, f"'{path}'")
            if opened.format == "PNG" and n > 1:
                return _read_apng(path, max_frames)
            loop = opened.info.get("loop")
            for i in range(n):
                opened.seek(i)
                opened.load()
                durations.append(_delay(opened.info.get("duration")))
                frame = _normalised(opened.copy()).convert("RGBA")
                frames.append(frame if frame.getchannel("A").getextrema()[0] < 255
                              else frame.convert("RGB"))
    except Image.DecompressionBombError as e:
        raise _bomb(path, e) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
            struct.error, zlib.error) as e:
        raise InvalidInput(f"Cannot read animation '{path}': {e}",
                           "Use a GIF, WebP or APNG file that other programs can open.") from e
    return Clip(frames, durations, None if loop is None else int(loop))


# --- APNG read here: every disposal and blend operation, whatever Pillow's version does ----

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunks(data: bytes):
    """(type, body) of each chunk up to IEND; ``ValueError`` for a truncated file."""
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) < length:
            raise ValueError(f"chunk {kind!r} is truncated")
        yield kind, body
        if kind == b"IEND":
            return
        pos += 12 + length


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def _read_apng(path: Path, max_frames: int | None) -> Clip:
    """Each frame's region decoded on its own (a PNG made of the file's header chunks and the
    frame's data, decoded by Pillow) and composited on the canvas by the APNG rules:
    blend source (replace, alpha included) or over; then dispose none, background (the region
    cleared to transparent) or previous (the region as it was before this frame). The frame
    count (acTL and each fcTL) is checked before any frame is decoded."""
    data = path.read_bytes()
    ihdr, head, regions, loop, seen_idat = None, [], [], None, False
    for kind, body in _png_chunks(data):
        if kind == b"IHDR":
            ihdr = body
        elif kind == b"acTL":
            declared, plays = struct.unpack(">II", body[:8])
            if max_frames is not None and declared > max_frames:
                raise too_many_frames(declared, max_frames, f"'{path}'")
            loop = plays
        elif kind == b"fcTL":
            regions.append((struct.unpack(">IIIIHHBB", body[4:26]), []))
            if max_frames is not None and len(regions) > max_frames:
                raise too_many_frames(len(regions), max_frames, f"'{path}'")
        elif kind == b"IDAT":
            seen_idat = True
            if regions:  # the default image is a frame only when an fcTL came before it
                regions[-1][1].append(body)
        elif kind == b"fdAT":
            if regions:
                regions[-1][1].append(body[4:])  # after its sequence number
        elif not seen_idat and kind != b"IEND":
            head.append(_png_chunk(kind, body))  # PLTE, tRNS, gAMA, iCCP, sRGB...
    if ihdr is None or not regions:
        raise ValueError("no animation frames")
    width, height = struct.unpack(">II", ihdr[:8])
    canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    frames, durations = [], []
    for i, ((w, h, x, y, num, den, dispose, blend), parts) in enumerate(regions):
        if not parts or w == 0 or h == 0 or x + w > width or y + h > height:
            raise ValueError(f"frame {i + 1}'s region is empty or outside the canvas")
        sub_png = (_PNG_SIGNATURE + _png_chunk(b"IHDR", struct.pack(">II", w, h) + ihdr[8:])
                   + b"".join(head) + _png_chunk(b"IDAT", b"".join(parts))
                   + _png_chunk(b"IEND", b""))
        with Image.open(io.BytesIO(sub_png)) as sub:
            sub.load()
            region = _normalised(sub).convert("RGBA")
        box = (x, y, x + w, y + h)
        if i == 0 and dispose == 2:  # the spec: "previous" on the first frame is background
            dispose = 1
        before = canvas.crop(box) if dispose == 2 else None
        if blend == 0:
            canvas.paste(region, box)
        else:
            canvas.alpha_composite(region, (x, y))
        frame = canvas.copy()
        frames.append(frame if frame.getchannel("A").getextrema()[0] < 255
                      else frame.convert("RGB"))
        durations.append(_delay(num * 1000 / (den or 100)))  # den 0 means 1/100 s
        if dispose == 1:
            canvas.paste((0, 0, 0, 0), box)
        elif dispose == 2:
            canvas.paste(before, box)
    return Clip(frames, durations, loop)


def is_animation_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in (".gif", ".webp", ".apng")


# --- writing: every frame and every delay kept -------------------------------------------
# Pillow's GIF writer and libwebp's animation encoder merge a frame equal to the one before
# into it (one frame, the delays added) with no option to stop it, so GIF and WebP files are
# put together here from frames Pillow encodes one at a time. Pillow's APNG writer merges only
# frames of the same disposal, so the disposal alternates (none/background: the same picture,
# as the writer diffs each frame against the canvas the previous disposal leaves).

#: GIF stores delays in 1/100 s: the nearest one is written (Pillow would truncate), at most
#: 655.35 s.
GIF_MAX_DELAY_MS = 655350
#: WebP stores delays in ms, 24 bits.
WEBP_MAX_DELAY_MS = 0xFFFFFF


def _gif_bytes(frames: list[Image.Image], durations: list[int], loop: int | None,
               alpha: bool) -> bytes:
    from PIL import GifImagePlugin

    width, height = frames[0].size
    # No global colour table: each frame carries its own, made from its own colours.
    out = [b"GIF89a", struct.pack("<HHBBB", width, height, 0, 0, 0)]
    if loop is not None:
        out.append(b"!\xff\x0bNETSCAPE2.0\x03\x01" + struct.pack("<H", min(loop, 65535))
                   + b"\x00")
    for frame, ms in zip(frames, durations):
        params = {"include_color_table": True,
                  "duration": min(GIF_MAX_DELAY_MS, 10 * round(ms / 10)),
                  # each frame whole: it replaces the one before, never combines with it
                  "disposal": 2 if alpha else 1}
        if alpha:
            p = frame.convert("RGB").quantize(255)
            p.paste(255, mask=frame.getchannel("A").point(lambda a: 255 if a < 128 else 0))
            params["transparency"] = 255
        else:
            p = frame.convert("RGB").quantize(256)
        palette = p.getpalette()[:768]
        p.putpalette(palette + [0] * (768 - len(palette)))  # index 255 exists
        out.extend(GifImagePlugin.getdata(p, **params))
    out.append(b";")
    return b"".join(out)


def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def _u24(n: int) -> bytes:
    return struct.pack("<I", n)[:3]


def _webp_bytes(frames: list[Image.Image], durations: list[int], loop: int | None,
                alpha: bool) -> bytes:
    """An animated WebP (VP8X, ANIM, one ANMF per frame) of frames encoded lossless one at a
    time by Pillow; each frame whole, not blended, not disposed."""
    width, height = frames[0].size
    anmf = []
    for frame, ms in zip(frames, durations):
        one = io.BytesIO()
        frame.save(one, format="WEBP", lossless=True, exact=True)
        still, pos, payload = one.getvalue(), 12, b""
        while pos + 8 <= len(still):
            kind, size = still[pos:pos + 4], struct.unpack("<I", still[pos + 4:pos + 8])[0]
            if kind in (b"ALPH", b"VP8 ", b"VP8L"):
                payload += _riff_chunk(kind, still[pos + 8:pos + 8 + size])
            pos += 8 + size + (size % 2)
        anmf.append(_riff_chunk(b"ANMF", _u24(0) + _u24(0) + _u24(width - 1)
                                + _u24(height - 1) + _u24(min(ms, WEBP_MAX_DELAY_MS))
                                + bytes([0b10]) + payload))  # 0b10: do not blend
    body = (b"WEBP"
            + _riff_chunk(b"VP8X", bytes([0x02 | (0x10 if alpha else 0), 0, 0, 0])
                          + _u24(width - 1) + _u24(height - 1))
            # loop None (the clip said nothing) loops forever, as Pillow's writer did
            + _riff_chunk(b"ANIM", bytes(4) + struct.pack("<H", min(loop or 0, 65535)))
            + b"".join(anmf))
    return b"RIFF" + struct.pack("<I", len(body)) + body


def write_clip(clip: Clip, path: str | os.PathLike, replace: bool = True) -> None:
    """Write an animated GIF / WebP / APNG atomically, with every frame, each frame's delay
    (GIF: to the nearest 10 ms) and the loop. ``replace=False``: never over an existing
    file."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in ANIMATION_FORMATS:
        raise InvalidInput(f"Cannot write the animation '{path}': unsupported extension "
                           f"'{ext or '(none)'}'.",
                           "Name it .gif, .webp or .apng, or give a folder for one file per "
                           "frame.")
    fmt, options = ANIMATION_FORMATS[ext]
    alpha = any(has_alpha(f) for f in clip.frames)
    frames = [f.convert("RGBA" if alpha else "RGB") for f in clip.frames]
    durations = [max(0, int(round(d))) for d in clip.durations]
    folder = path.parent if str(path.parent) else Path(".")
    if fmt == "GIF":
        data = _gif_bytes(frames, durations, clip.loop, alpha)
        return _save_atomically(None, path, folder, fmt, {}, replace, data)
    if fmt == "WEBP":
        data = _webp_bytes(frames, durations, clip.loop, alpha)
        return _save_atomically(None, path, folder, fmt, {}, replace, data)
    options = dict(options, save_all=True, append_images=frames[1:], duration=durations,
                   blend=0, disposal=[i % 2 for i in range(len(frames))])
    if clip.loop is not None:
        options["loop"] = clip.loop
    _save_atomically(frames[0], path, folder, fmt, options, replace)
