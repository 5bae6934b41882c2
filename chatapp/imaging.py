"""Deciding what is an image and re-encoding it: Pillow decides, never the file name."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from .posting import Refusal

# Pillow identifies the file only among these; SVG, HTML, text and the rest never get a
# chance to be parsed as anything.
FORMATS = ("PNG", "JPEG", "GIF", "WEBP")
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "WEBP": "webp"}
THUMB_SIDE = 800
MAX_FRAMES = 100
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
# What each mode becomes in sRGB; other modes (palettes, grey, 16-bit) keep their values.
SRGB_MODES = {"RGB": "RGB", "RGBA": "RGBA", "CMYK": "RGB"}

# Between MAX_IMAGE_PIXELS and twice that, Pillow only warns about a decompression bomb;
# a warning would let the bomb through, so here it is an error like the one above it.
warnings.simplefilter("error", Image.DecompressionBombWarning)


class Refused(Refusal, ValueError):
    """An upload that is not an acceptable image; the message is shown to the sender."""

    status = 422


NOT_AN_IMAGE = _l("That file is not an image. Attach a PNG, JPEG, GIF or WebP picture.")
DAMAGED = _l("That image is damaged or incomplete. Save it again and attach the new file.")


def too_many_pixels(limit: int) -> str:
    # Lazy: checked in a worker thread, read in the request (in its person's language).
    megapixels = f"{limit / 1_000_000:g}"
    return _l("That image is too large: at most %(megapixels)s megapixels. "
              "Make it smaller and try again.", megapixels=megapixels)


@dataclass
class Encoded:
    """One re-encoded picture (the original or its thumbnail)."""

    data: bytes
    width: int
    height: int


@dataclass
class Processed:
    """An accepted image: its format, the re-encoded original and its thumbnail."""

    format: str
    original: Encoded
    thumb: Encoded | None  # None: the original is already small enough to be its own
    frames: int

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]


def set_pixel_limit(limit: int) -> None:
    """Make Pillow's own bomb check (in Image.open, from the header) use our limit."""
    Image.MAX_IMAGE_PIXELS = limit


def process(stream, max_pixels: int) -> Processed:
    """Open, fully decode and re-encode an upload, or raise Refused saying why."""
    try:
        with Image.open(stream, formats=FORMATS) as im:
            fmt = im.format
            width, height = im.size
            # Checked from the header, before a single pixel is decoded.
            if width * height > max_pixels or width < 1 or height < 1:
                raise Refused(too_many_pixels(max_pixels))
            loop = im.info.get("loop", 0)
            icc = im.info.get("icc_profile")
            frames, durations = _decode_frames(im, max_pixels)
            if len(frames) == 1:
                ImageOps.exif_transpose(frames[0], in_place=True)
            frames = _in_srgb(frames, icc)
            original = _encode(fmt, frames, durations, loop)
            thumb = None
            if max(frames[0].size) > THUMB_SIDE:
                thumb = _encode(fmt, [_thumbnail(f) for f in frames], durations, loop)
            return Processed(format=fmt, original=original, thumb=thumb, frames=len(frames))
    except Refused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Refused(too_many_pixels(max_pixels))
    except UnidentifiedImageError:
        raise Refused(NOT_AN_IMAGE)
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError):
        # Pillow signals truncated and corrupt data with a variety of exceptions.
        raise Refused(DAMAGED)


def square_avatar(stream, max_pixels: int, side: int) -> bytes:
    """A profile picture: the upload validated and re-encoded like any image (process),
    then its first frame cropped to a centred square of `side` pixels, as PNG."""
    processed = process(stream, max_pixels)
    with Image.open(io.BytesIO(processed.original.data)) as im:
        im.seek(0)
        frame = im.convert("RGBA")
    square = ImageOps.fit(frame, (side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    square.save(out, "PNG", optimize=True)
    return out.getvalue()


def _decode_frames(im: Image.Image, max_pixels: int) -> tuple[list[Image.Image], list[int]]:
    """Every frame fully decoded, up to a frame limit that also bounds memory."""
    if not getattr(im, "is_animated", False):
        # A still image is decoded in place: no copy of what may be 40 megapixels.
        im.load()
        duration = int(im.info.get("duration") or 100)
        im.info = _kept_info(im.info, first=True)
        return [im], [duration]
    # Every frame is decoded onto a canvas of im.size, and Pillow enlarges that canvas when
    # a later frame is bigger than the header said: so the size is read again after every
    # seek, and the budget counts what is really decoded. Frames beyond it are dropped: at
    # most MAX_FRAMES, and never more decoded pixels in total than one image of the
    # largest allowed size.
    width, height = im.size
    frames: list[Image.Image] = []
    durations: list[int] = []
    decoded = 0
    for index in range(MAX_FRAMES):
        if index:
            try:
                im.seek(index)
            except EOFError:
                break
        canvas = im.width * im.height
        if canvas > max_pixels:
            raise Refused(too_many_pixels(max_pixels))
        if decoded + canvas > max_pixels:
            break
        decoded += canvas
        im.load()
        # Seeking reuses im for the next frame. What lies beyond the first frame's canvas
        # is cut off, as browsers do, so every frame has the size the header promised.
        frame = im.crop((0, 0, width, height)) if im.size != (width, height) else im.copy()
        frame.info = _kept_info(im.info, first=not frames)
        frames.append(frame)
        durations.append(int(im.info.get("duration") or 100))
    return frames, durations


def _kept_info(info: dict, first: bool) -> dict:
    """Nothing from the file's metadata travels on: not EXIF, GPS, comments or XMP."""
    keep = {k: info[k] for k in ("transparency",) if k in info}
    if first and "exif" in info:
        keep["exif"] = info["exif"]  # read by exif_transpose for the orientation, then dropped
    return keep


def _in_srgb(frames: list[Image.Image], icc: bytes | None) -> list[Image.Image]:
    """The frames' colours as the sender saw them, in sRGB, with no profile left to carry.

    Browsers show an image without a profile as sRGB, so converting here shows the same
    colours while storing none of the file's own bytes: an embedded profile can be
    megabytes of anything. A profile that is not one (or does not fit the pixels) is
    ignored, as browsers ignore it.
    """
    if not icc:
        return frames
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        # Built before any frame changes, so a profile that fails changes no pixel.
        transforms = {
            mode: ImageCms.buildTransform(source, SRGB, mode, SRGB_MODES[mode])
            for mode in {f.mode for f in frames} if mode in SRGB_MODES
        }
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return frames
    converted = []
    for frame in frames:
        transform = transforms.get(frame.mode)
        if transform is None:
            converted.append(frame)
        elif SRGB_MODES[frame.mode] == frame.mode:
            ImageCms.applyTransform(frame, transform, inPlace=True)
            converted.append(frame)
        else:
            converted.append(ImageCms.applyTransform(frame, transform))
    return converted


def _thumbnail(frame: Image.Image) -> Image.Image:
    """A copy at most THUMB_SIDE pixels on its long side, smoothly resampled."""
    if frame.mode in ("1", "P"):
        frame = frame.convert("RGBA" if frame.has_transparency_data else "RGB")
    small = frame.copy()
    small.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
    return small


def _encode(fmt: str, frames: list[Image.Image], durations: list[int], loop: int) -> Encoded:
    """Write the frames anew in their own format; only pixels survive."""
    first = frames[0]
    options: dict = {}
    if fmt == "JPEG":
        frames = [f if f.mode in ("L", "RGB") else f.convert("RGB") for f in frames]
        options.update(quality=88)
    elif fmt == "WEBP":
        options.update(quality=85)
    elif fmt == "PNG":
        # Level 3 compresses photos nearly as well as the default 6 in a fraction of the time.
        options.update(compress_level=3)
    for f in frames:
        f.info = {k: v for k, v in f.info.items() if k == "transparency"}
    if len(frames) > 1:
        options.update(save_all=True, append_images=frames[1:], duration=durations, loop=loop)
        if fmt == "GIF":
            # Each frame is complete (Pillow composites on reading): clear between frames.
            options["disposal"] = 2
    out = io.BytesIO()
    frames[0].save(out, format=fmt, **options)
    return Encoded(data=out.getvalue(), width=first.width, height=first.height)
