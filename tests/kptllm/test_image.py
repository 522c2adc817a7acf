"""Image loading (modes, EXIF, sizes) and the crop transform and its inverse."""

import numpy as np
import pytest
from PIL import Image

from kptllm.image import MAX_IMAGE_PIXELS, SquareCrop, crop_image, load_image, square_crop
from kptllm.protocols.protocol import Task, format_answer, parse_answer


def _rgb_array(w=40, h=30):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1", "YCbCr", "RGB"])
def test_every_pil_mode_becomes_rgb(mode):
    base = Image.fromarray(_rgb_array())
    image = base.convert(mode) if mode not in ("I;16", "I", "F") else base.convert("L").convert(mode)
    out = load_image(image)
    assert out.mode == "RGB" and out.size == (40, 30)


def test_sixteen_bit_uses_full_range():
    array = np.array([[0, 65535], [32768, 257 * 10]], dtype=np.uint16)
    out = np.asarray(load_image(Image.fromarray(array)))
    assert out[..., 0].tolist() == [[0, 255], [128, 10]]
    from_numpy = np.asarray(load_image(array))
    assert from_numpy[..., 0].tolist() == [[0, 255], [128, 10]]


def test_transparent_pixels_composite_over_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)
    out = np.asarray(load_image(rgba))
    assert out[0, 0].tolist() == [255, 0, 0] and out[1, 1].tolist() == [255, 255, 255]


@pytest.mark.parametrize("array", [
    np.zeros((4, 4), dtype=np.uint8), np.zeros((4, 4, 1), dtype=np.uint8), np.ones((4, 4, 3), dtype=np.float32),
    np.zeros((4, 4), dtype=bool), np.zeros((1, 1, 3), dtype=np.uint8),
])
def test_numpy_inputs(array):
    assert load_image(array).size == (array.shape[1], array.shape[0])


@pytest.mark.parametrize("array, message", [
    (np.zeros((4, 4, 2), dtype=np.uint8), "HxW"), (np.zeros((4,), dtype=np.uint8), "HxW"),
    (np.full((2, 2, 3), 2.0, dtype=np.float32), r"\[0, 1\]"), (np.full((2, 2), np.nan), r"\[0, 1\]"),
    (np.zeros((2, 2), dtype=np.int64), "dtype"), (np.zeros((0, 5, 3), dtype=np.uint8), "no pixels"),
])
def test_bad_arrays(array, message):
    with pytest.raises(ValueError, match=message):
        load_image(array)


def test_bad_sources(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "garbage.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="cannot read"):
        load_image(tmp_path / "garbage.png")
    good = tmp_path / "good.png"
    Image.fromarray(_rgb_array(200, 200)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ValueError, match="cannot read"):
        load_image(truncated)
    with pytest.raises(ValueError, match="unsupported image type"):
        load_image(12)


def test_huge_image_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("L", (400, 300)).save(path)
    monkeypatch.setattr("kptllm.image.MAX_IMAGE_PIXELS", 400 * 300 - 1)
    with pytest.raises(ValueError, match="limit"):
        load_image(path)
    with pytest.raises(ValueError, match="limit"):
        load_image(Image.new("L", (400, 300)))
    assert MAX_IMAGE_PIXELS >= 50_000_000


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((20, 60, 3), dtype=np.uint8)  # wide image, red block at the left end
    array[:, :10] = (255, 0, 0)
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 CW when displayed
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.size == (20, 60)  # tall after orientation
    top = np.asarray(out)[:10].mean(axis=(0, 1))
    assert top[0] > 200 and top[1] < 60  # the red block is now on top


def test_crop_is_a_padded_square_centred_on_the_box():
    crop = square_crop((640, 480), (100, 50, 200, 100), size=224, padding=1.25)
    assert crop.side == pytest.approx(250) and crop.size == 224
    assert (crop.x0 + crop.side / 2, crop.y0 + crop.side / 2) == pytest.approx((200, 100))
    whole = square_crop((640, 480), None, size=224, padding=1.25)
    assert (whole.x0, whole.y0, whole.side) == pytest.approx((0, -80, 640))


@pytest.mark.parametrize("bbox, message", [
    ((1, 2, 3), "4 numbers"), ((0, 0, -5, 10), "positive"), ((0, 0, 10, 0), "positive"),
    ((700, 0, 10, 10), "does not overlap"), ((-50, -50, 10, 10), "does not overlap"),
    ((0, float("nan"), 10, 10), "non-finite"), ("abcd", "4 numbers"),
    ((0, 0, 3e6, 3e6), "more than 20 times"), ((-1e300, 0, 2e300, 10), "more than 20 times"),
    ((0, 0, 10, 12801), "more than 20 times"),
])
def test_bad_boxes(bbox, message):
    with pytest.raises(ValueError, match=message):
        square_crop((640, 480), bbox, size=224, padding=1.25)


def test_largest_allowed_box_crops_in_bounded_memory():
    """A box 20x the image (the limit) still crops: the padded canvas stays near the image's size."""
    image = Image.new("RGB", (64, 48), (200, 200, 200))
    crop = square_crop(image.size, (-600, -600, 1280, 1280), size=32, padding=1.25)
    out = np.asarray(crop_image(image, crop, fill=(1, 2, 3)))
    assert out[0, 0].tolist() == [1, 2, 3] and out[..., 0].max() > 50  # the image is a blended pixel or two


def test_box_partly_outside_is_filled():
    image = Image.new("RGB", (100, 100), (200, 200, 200))
    crop = square_crop(image.size, (-50, -50, 100, 100), size=32, padding=1.0)
    out = np.asarray(crop_image(image, crop, fill=(1, 2, 3)))
    assert out[0, 0].tolist() == [1, 2, 3] and out[-1, -1].tolist() == [200, 200, 200]


def test_crop_resamples_the_right_region():
    array = np.zeros((100, 100, 3), dtype=np.uint8)
    array[40:60, 20:30] = 255  # a white patch
    crop = square_crop((100, 100), (20, 40, 10, 20), size=64, padding=1.0)
    out = np.asarray(crop_image(Image.fromarray(array), crop))
    # the box fills the middle half-width of the crop, its full height
    assert out[32, 32].tolist() == [255, 255, 255]
    assert out[32, 4].tolist() == [0, 0, 0] and out[32, 60].tolist() == [0, 0, 0]


def test_crop_round_trip_on_real_images_is_sub_pixel(instances):
    """Pixels -> crop frame -> pixels is exact; through the 3-decimal text it stays under a pixel."""
    checked = 0
    for inst in instances:
        image = load_image(inst.image)
        crop = square_crop(image.size, inst.bbox, size=224, padding=1.25)
        for x, y, v in inst.keypoints:
            if v <= 0:
                continue
            uv = crop.to_crop((x, y))
            assert np.allclose(crop.to_image(uv), (x, y), atol=1e-9)
            if not crop.contains((x, y)):
                continue
            parsed = parse_answer(format_answer("k", tuple(uv)), Task.TEXT)
            back = crop.to_image(parsed.xy)
            assert np.abs(back - (x, y)).max() <= crop.side * 0.0005 + 1e-6
            assert np.abs(back - (x, y)).max() < 1.0, (inst.dataset, crop.side)
            checked += 1
    assert checked > 500


def test_square_crop_inverse_is_affine():
    crop = SquareCrop(x0=-12.5, y0=30.0, side=77.0, size=224)
    pts = np.array([[0, 0], [1, 1], [0.25, 0.75]])
    assert np.allclose(crop.to_crop(crop.to_image(pts)), pts)


def test_contains_accepts_points_on_the_crop_edge_after_a_round_trip():
    crop = square_crop((640, 425), (280.79, 44.73, 218.7, 346.68), 64, 1.25)
    corners = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (0.3, 1.0), (1.0, 0.7)]
    assert all(crop.contains(crop.to_image(uv)) for uv in corners)
    side = crop.side
    assert not crop.contains(crop.to_image((1.0, 0.5)) + np.array([side * 1e-7, 0]))
    assert not crop.contains(crop.to_image((0.5, 0.0)) - np.array([0, side * 1e-7]))


def test_shrinking_averages_fine_detail_instead_of_aliasing():
    stripes = np.zeros((1000, 1000, 3), dtype=np.uint8)
    stripes[:, ::2] = 255  # 1-pixel stripes
    crop = square_crop((1000, 1000), None, size=64, padding=1.25)
    out = np.asarray(crop_image(Image.fromarray(stripes), crop)).astype(float)
    assert out.std() < 3 and abs(out.mean() - 127.5) < 3


@pytest.mark.parametrize("bbox, size", [
    ((40.3, 50.7, 16, 16), 64),     # enlarging: 0.31 input px per output px, sub-pixel offset
    ((30.0, 20.0, 40, 40), 64),     # enlarging: 0.78
    ((3.25, 7.5, 120, 120), 64),    # shrinking: 2.3 input px per output px
    ((-20.4, -9.9, 300, 300), 64),  # shrinking: 5.9, box sticking out of the image (filled)
])
def test_a_bright_dot_lands_where_the_map_says(bbox, size):
    """Pixel (i, j) covers [i, i+1) x [j, j+1): its centre (i + 0.5, j + 0.5) maps to the crop frame with
    `to_crop`, and the crop's output pixel c covers [c, c+1) of `size * uv`. The intensity centroid of
    the dot (on a mid-grey background, so the bicubic lobes are kept) must land there."""
    image = np.full((260, 280, 3), 128, dtype=np.uint8)
    crop = square_crop((280, 260), bbox, size=size, padding=1.25)
    scale = crop.side / size
    k = max(1, int(round(scale)))  # a k x k dot: bright enough after averaging when shrinking
    i, j = int(bbox[0] + bbox[2] / 2) + 3, int(bbox[1] + bbox[3] / 2) - 2
    image[j:j + k, i:i + k] = 255
    expected = crop.to_crop((i + k / 2, j + k / 2)) * size  # dot centre, in output pixel units
    out = np.asarray(crop_image(Image.fromarray(image), crop, fill=(128, 128, 128)))[..., 0].astype(float) - 128
    assert out.sum() > 0
    vv, uu = np.mgrid[0:size, 0:size] + 0.5  # output pixel centres
    centroid = np.array([(uu * out).sum(), (vv * out).sum()]) / out.sum()
    # half an input pixel is 0.5 / scale output pixels; allow a fifth of that (and quantisation)
    assert np.abs(centroid - expected).max() < max(0.1 / scale, 0.03), (centroid, expected, scale)
