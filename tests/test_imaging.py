"""Re-encoding rules that need no server: frame limits, modes, what survives."""

import io

from PIL import Image

from chatapp import imaging


def gif(frames: int, size=(60, 40)) -> io.BytesIO:
    images = [Image.new("RGB", size, ((i * 37) % 256, (i * 91) % 256, 120)) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=True, append_images=images[1:], duration=80, loop=0)
    out.seek(0)
    return out


def test_an_animated_gif_keeps_at_most_the_frame_limit():
    processed = imaging.process(gif(imaging.MAX_FRAMES + 20), 40_000_000)
    assert processed.frames == imaging.MAX_FRAMES
    stored = Image.open(io.BytesIO(processed.original.data))
    assert stored.format == "GIF" and stored.n_frames == imaging.MAX_FRAMES
    assert stored.info["duration"] == 80


def test_frames_of_a_large_animation_are_bounded_by_the_pixel_budget():
    # 60 x 40 = 2400 pixels a frame; a budget of 10000 pixels decodes at most 4 frames.
    processed = imaging.process(gif(10), 10_000)
    assert processed.frames == 4


def test_a_cmyk_jpeg_is_stored_as_rgb_and_transparency_survives_in_png():
    out = io.BytesIO()
    Image.new("CMYK", (50, 50), (0, 255, 255, 0)).save(out, "JPEG")
    out.seek(0)
    assert Image.open(io.BytesIO(imaging.process(out, 10**6).original.data)).mode == "RGB"

    out = io.BytesIO()
    Image.new("RGBA", (1000, 500), (255, 0, 0, 0)).save(out, "PNG")
    out.seek(0)
    processed = imaging.process(out, 10**7)
    thumb = Image.open(io.BytesIO(processed.thumb.data))
    assert thumb.size == (800, 400) and thumb.mode == "RGBA"
    assert thumb.getpixel((0, 0))[3] == 0
