"""Reading and writing image files for the command line. Pillow only, no torch.

Read: any mode Pillow knows becomes RGB or RGBA (alpha kept), EXIF orientation applied, an
embedded ICC profile converted to sRGB. Write: the format follows the extension; the file is
written beside its destination and renamed into place, so a failure never leaves half a file.
Animations (``read_clip``/``write_clip``): animated GIF, WebP and APNG with each frame's delay
and the loop count.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import warnings
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
        with warnings.catch_warnings():
            # Pillow warns between its pixel limit and twice that, and refuses beyond: an image
            # it opens is used, so its warning would only be noise on the terminal.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened:
            opened.load()
            img = ImageOps.exif_transpose(opened) or opened
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                img = _to_8bit(img)
            img = _to_srgb(img)
    except Image.DecompressionBombError as e:
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        size = f" has {int(pixels.group(1)):,} pixels, which" if pixels else ""
        raise InvalidInput(f"Cannot read image '{path}': it{size} is more than the "
                           f"{2 * Image.MAX_IMAGE_PIXELS:,} pixels this engine opens (a file "
                           "this large is most likely a decompression bomb).",
                           "Scale the image down in an image editor first.") from None
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
    try:  # the real test: permissions, ACLs, read-only mounts, a full disk's inodes
        fd, probe = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InvalidInput(f"Cannot write '{path}': no new file can be made in '{folder}' "
                           f"({e.strerror or e}).",
                           "Choose a folder you can write to, or fix its permissions.") from None


def _save_atomically(img: Image.Image, path: Path, folder: Path, fmt: str,
                     options: dict) -> None:
    """Save to a temporary file beside ``path``, then rename it over ``path``: a failed write
    never leaves a half-written file where the user's was."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            img.save(f, format=fmt, **options)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except OSError as e:
        raise InvalidInput(f"Cannot write '{path}': {e}",
                           "Check that the folder is writable and the disk is not full.") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_image(img: Image.Image, path: str | os.PathLike) -> list[str]:
    """Write ``img`` atomically in the format of the extension; returns notes for the user."""
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
    _save_atomically(img, path, folder, fmt, options)
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


def frame_count(path: str | os.PathLike) -> int:
    """How many frames an image file holds (1 for a still); ``InvalidInput`` like
    ``read_image`` when it cannot be opened."""
    path = Path(path)
    read_image_checks(path)
    try:
        with Image.open(path) as img:
            return int(getattr(img, "n_frames", 1) or 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
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


def read_clip(path: str | os.PathLike) -> Clip:
    """The frames of an animated GIF, WebP or APNG (each frame as it is shown: Pillow applies
    the disposal and blending), with their delays and loop count."""
    path = Path(path)
    read_image_checks(path)
    frames, durations = [], []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened:
            loop = opened.info.get("loop")
            for i in range(int(getattr(opened, "n_frames", 1) or 1)):
                opened.seek(i)
                opened.load()
                delay = opened.info.get("duration")
                durations.append(int(round(delay)) if delay else DEFAULT_DELAY_MS)
                frame = opened.convert("RGBA")
                frames.append(frame if frame.getchannel("A").getextrema()[0] < 255
                              else frame.convert("RGB"))
    except Image.DecompressionBombError:
        raise InvalidInput(f"Cannot read '{path}': its frames are larger than this engine "
                           "opens.", "Scale the animation down first.") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise InvalidInput(f"Cannot read animation '{path}': {e}",
                           "Use a GIF, WebP or APNG file that other programs can open.") from e
    return Clip(frames, durations, None if loop is None else int(loop))


def is_animation_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in (".gif", ".webp", ".apng")


def write_clip(clip: Clip, path: str | os.PathLike) -> None:
    """Write an animated GIF / WebP / APNG atomically, with each frame's delay and the loop."""
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
    options = dict(options, save_all=True, append_images=frames[1:],
                   duration=list(clip.durations))
    if clip.loop is not None:
        options["loop"] = clip.loop
    if fmt == "GIF":
        options["disposal"] = 2 if alpha else 1  # each frame whole: replace, not combine
    folder = path.parent if str(path.parent) else Path(".")
    _save_atomically(frames[0], path, folder, fmt, options)
