import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from image_to_video.config import ImageSettings
from image_to_video.errors import InvalidInput
from image_to_video.images import normalise_image

SETTINGS = ImageSettings()
SIZE = (128, 128)


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def normalise(source, size=SIZE, settings=SETTINGS):
    result = normalise_image(source, size, settings)
    assert result.mode == "RGB" and result.size == size
    return result


def centre(image: Image.Image):
    return image.getpixel((image.width // 2, image.height // 2))


def palette_image(index: int, colour: tuple[int, int, int]) -> Image.Image:
    image = Image.new("P", (200, 150), index)
    palette = [0, 0, 0] * 256
    palette[3 * index:3 * index + 3] = colour
    image.putpalette(palette)
    return image


# Each colour as a person would compute it: JFIF's YCbCr formulas, CIE L*=50 is 18.4% luminance
# (sRGB 119), HSV hue 10/255 of the circle at full value 200 and saturation 200/255.
@pytest.mark.parametrize("image, expected", [
    (Image.new("RGB", (200, 150), (200, 100, 50)), (200, 100, 50)),
    (Image.new("L", (200, 150), 128), (128, 128, 128)),
    (Image.new("1", (200, 150), 1), (255, 255, 255)),
    (palette_image(3, (10, 200, 30)), (10, 200, 30)),
    (Image.new("CMYK", (200, 150), (0, 255, 255, 0)), (255, 0, 0)),
    (Image.new("YCbCr", (200, 150), (120, 100, 160)), (165, 107, 70)),
    (Image.new("LAB", (200, 150), (128, 128, 128)), (119, 119, 119)),
    (Image.new("HSV", (200, 150), (10, 200, 200)), (200, 80, 43)),
], ids=["RGB", "L", "1", "P", "CMYK", "YCbCr", "LAB", "HSV"])
def test_every_common_mode_becomes_rgb_of_the_same_colour(image, expected):
    got = centre(normalise(image))
    assert all(abs(a - b) <= 2 for a, b in zip(got, expected)), (got, expected)


def test_cmyk_jpeg_keeps_its_colour():
    red = Image.new("CMYK", (100, 100), (0, 255, 255, 0))
    r, g, b = centre(normalise(encode(red, "JPEG")))
    assert r > 200 and g < 60 and b < 60


def test_transparency_becomes_white():
    image = Image.new("RGBA", (100, 100), (255, 0, 0, 0))
    image.paste((0, 0, 255, 255), (0, 0, 50, 100))
    result = normalise(encode(image))
    assert result.getpixel((100, 64)) == (255, 255, 255)
    assert result.getpixel((10, 64)) == (0, 0, 255)


def test_half_transparent_blends_over_white():
    result = normalise(Image.new("RGBA", (100, 100), (0, 0, 0, 128)))
    assert all(120 <= channel <= 135 for channel in centre(result))


@pytest.mark.parametrize("mode", ["LA", "PA"])
def test_grey_and_palette_with_alpha(mode):
    image = Image.new("RGBA", (100, 100), (0, 0, 0, 0)).convert(mode)
    assert centre(normalise(image)) == (255, 255, 255)


def test_palette_with_transparency_key():
    image = Image.new("P", (100, 100), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.info["transparency"] = 0
    assert centre(normalise(encode(image))) == (255, 255, 255)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    pixels = np.full((100, 100), 32768, dtype=np.uint16)
    image = Image.fromarray(pixels)  # mode I;16
    value = centre(normalise(encode(image)))[0]
    assert 120 <= value <= 135


def test_float_image():
    pixels = np.full((100, 100), 0.5, dtype=np.float32)
    assert 120 <= centre(normalise(Image.fromarray(pixels, mode="F")))[0] <= 135


def test_exif_rotation_is_applied():
    image = Image.new("RGB", (200, 100), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 100, 100))  # white on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    result = normalise(encode(image, "JPEG", exif=exif.tobytes()), size=(100, 200))
    top, bottom = result.getpixel((50, 20)), result.getpixel((50, 180))
    assert top[0] > 200 and bottom[0] < 50  # the white half is now on top


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (100, 100), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    r, g, _ = centre(normalise(buffer.getvalue()))
    assert r > 200 and g < 50


def test_png_named_gif_is_read_by_content(tmp_path):
    path = tmp_path / "photo.gif"
    path.write_bytes(encode(Image.new("RGBA", (100, 100), (0, 200, 0, 255))))
    assert centre(normalise(path))[1] > 180


def test_result_is_exact_size_and_centre_cropped():
    image = Image.new("RGB", (300, 100), (255, 0, 0))
    image.paste((0, 0, 255), (100, 0, 200, 100))  # blue middle third
    result = normalise(image, size=(64, 64))
    assert result.getpixel((32, 32))[2] > 200 and result.getpixel((2, 32))[2] > 200


def test_large_photo_is_shrunk():
    assert normalise(Image.new("RGB", (4000, 3000)), size=(512, 512)).size == (512, 512)


def test_huge_header_is_refused_before_decoding():
    # Tiny PNGs claiming huge sizes: refused from the header alone.
    with pytest.raises(InvalidInput, match="8000x8000 .64 megapixels.; the limit is 50"):
        normalise(png_header_only(8000, 8000))
    # Past Pillow's own bomb limit the message still says what to do.
    with pytest.raises(InvalidInput, match="limit of 50 megapixels. Resize it"):
        normalise(png_header_only(30000, 30000))


def png_header_only(width: int, height: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("size, words", [
    ((1000, 100), ["10.0 times longer", "4:1", "Crop it"]),
    ((100, 1000), ["10.0 times longer"]),
    ((5000, 1), ["5000x1"]),
    ((30, 30), ["only 30x30", "at least 64"]),
])
def test_bad_shapes_are_refused_with_a_reason(size, words):
    with pytest.raises(InvalidInput) as error:
        normalise(Image.new("RGB", size))
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize("data, words", [
    (b"", ["not an image"]),
    (b"hello, I am a text file\n" * 20, ["not an image", "PNG, JPEG"]),
    (b"%PDF-1.4\n" + b"0" * 100, ["not an image"]),
])
def test_files_that_are_not_images(data, words):
    with pytest.raises(InvalidInput) as error:
        normalise(data)
    for word in words:
        assert word in str(error.value)


def test_truncated_file_is_reported_as_damaged():
    data = encode(_noise(), "JPEG")
    with pytest.raises(InvalidInput, match="damaged or incomplete"):
        normalise(data[: len(data) // 2])


def _noise() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (400, 400, 3), dtype=np.uint8))


def test_missing_upload():
    with pytest.raises(InvalidInput, match="Please upload an image"):
        normalise(None)
    with pytest.raises(InvalidInput, match="missing"):
        normalise("/nonexistent/file.png")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_with_text_after_the_pixels(text: bytes) -> bytes:
    """A PNG whose compressed text chunk comes after IDAT, so Pillow reads it only when decoding."""
    data = encode(Image.new("RGB", (200, 150), (10, 200, 30)))
    end = data.rindex(b"IEND") - 4
    return data[:end] + _chunk(b"zTXt", b"Comment\0\0" + zlib.compress(text)) + data[end:]


def _png_with_big_text() -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "x" * (2 * PngImagePlugin.MAX_TEXT_CHUNK), zip=True)
    return encode(Image.new("RGB", (200, 150), (10, 200, 30)), pnginfo=info)


def _png_with_big_colour_profile() -> bytes:
    from PIL import PngImagePlugin

    return encode(Image.new("RGB", (200, 150), (10, 200, 30)), icc_profile=b"\0" * (2 * PngImagePlugin.MAX_TEXT_CHUNK))


@pytest.mark.parametrize("make", [
    _png_with_big_text, _png_with_big_colour_profile,
    lambda: _png_with_text_after_the_pixels(b"y" * (3 * 2**20)),
], ids=["text chunk", "colour profile", "text after the pixels"])
def test_a_png_with_oversized_metadata_says_what_is_wrong_and_what_to_do(make):
    # Pillow refuses a PNG text chunk or colour profile over PngImagePlugin.MAX_TEXT_CHUNK; it used to
    # be called "not an image we can read" (or "damaged"), which sends the user looking in the wrong place.
    with pytest.raises(InvalidInput) as error:
        normalise(make())
    message = str(error.value)
    assert "not an image" not in message and "damaged" not in message
    assert "metadata" in message and "too large" in message
    assert "without its metadata" in message and "JPEG" in message


def test_a_png_with_small_text_after_the_pixels_is_read():
    assert centre(normalise(_png_with_text_after_the_pixels(b"a short comment"))) == (10, 200, 30)
