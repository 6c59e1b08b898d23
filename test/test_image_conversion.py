"""Tests of the sensor_msgs image conversion that replaces cv_bridge."""

import array
import dataclasses
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edgeserving_ros.data_paths import require_data
from edgeserving_ros.image_conversion import (
    SUPPORTED_ENCODINGS,
    ImageConversionError,
    array_to_compressed_image,
    array_to_image,
    compressed_image_to_array,
    decoded_encoding,
    frame_to_rgb8,
    image_to_array,
    to_rgb8,
)

CIFAR_JPEG = 'cifar10-jpeg/test/cat/0000.jpg'
MNIST_PNG = 'mnist-test-500/3/00018.png'
DUCKIEBOT_MCAP = 'duckiebot-digit-crops-bag/rosbag2_mcap'

HEIGHT, WIDTH = 5, 7  # odd sizes catch swapped axes and row-stride mistakes


@dataclasses.dataclass
class PlainImage:
    """The sensor_msgs/Image fields without ROS: the module must accept any such object."""

    height: int = 0
    width: int = 0
    encoding: str = ''
    is_bigendian: int = 0
    step: int = 0
    data: object = b''
    header: object = None


@dataclasses.dataclass
class PlainCompressedImage:
    """The sensor_msgs/CompressedImage fields without ROS."""

    format: str = ''
    data: object = b''
    header: object = None


def ros_image_types():
    """Return (Image, CompressedImage) from sensor_msgs, or skip when ROS is not installed."""
    messages = pytest.importorskip('sensor_msgs.msg', reason='sensor_msgs (ROS 2) not installed')
    return messages.Image, messages.CompressedImage


@pytest.fixture(params=['plain', 'sensor_msgs'])
def image_type(request):
    if request.param == 'plain':
        return PlainImage
    return ros_image_types()[0]


def random_pixels(encoding, height=HEIGHT, width=WIDTH, seed=0):
    """Return random pixels of the encoding's dtype, covering its full value range."""
    dtype, channels = SUPPORTED_ENCODINGS[encoding]
    shape = (height, width) if channels == 1 else (height, width, channels)
    rng = np.random.default_rng(seed)
    if dtype.kind == 'f':
        return (rng.standard_normal(shape) * 1000).astype(dtype)
    limits = np.iinfo(dtype)
    return rng.integers(limits.min, limits.max, size=shape, dtype=dtype, endpoint=True)


def padded_image(pixels, encoding, padding_bytes, byte_order='<'):
    """Return a PlainImage whose rows end in padding_bytes of 0xAB filler."""
    dtype = pixels.dtype.newbyteorder(byte_order)
    rows = np.ascontiguousarray(pixels, dtype=dtype).view(np.uint8).reshape(pixels.shape[0], -1)
    filler = np.full((rows.shape[0], padding_bytes), 0xAB, dtype=np.uint8)
    padded = np.hstack([rows, filler])
    return PlainImage(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                      is_bigendian=int(byte_order == '>'), step=padded.shape[1],
                      data=padded.tobytes())


def gradient_bgr(height=48, width=64):
    """Return a smooth BGR gradient, which JPEG encodes with little loss."""
    rows = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    cols = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    blue = np.broadcast_to(cols, (height, width))
    green = np.broadcast_to(rows, (height, width))
    red = (blue + green) / 2
    return np.dstack([blue, green, red]).round().astype(np.uint8)


# --- Image: round trips --------------------------------------------------------------------------

@pytest.mark.parametrize('encoding', list(SUPPORTED_ENCODINGS))
def test_round_trip_every_encoding(encoding, image_type):
    pixels = random_pixels(encoding)
    dtype, channels = SUPPORTED_ENCODINGS[encoding]

    msg = array_to_image(pixels, encoding, msg_type=image_type)
    assert msg.height == HEIGHT
    assert msg.width == WIDTH
    assert msg.encoding == encoding
    assert msg.is_bigendian == 0
    assert msg.step == WIDTH * channels * dtype.itemsize
    assert len(msg.data) == msg.step * HEIGHT

    result = image_to_array(msg)
    assert result.dtype == dtype
    assert result.shape == pixels.shape
    np.testing.assert_array_equal(result, pixels)


@pytest.mark.parametrize('encoding, padding_bytes', [
    ('mono8', 3),
    ('bgr8', 5),
    ('rgb8', 1),    # step 22 is not a multiple of the 3-byte pixel
    ('bgra8', 2),
    ('mono16', 6),
    ('rgb16', 2),   # padding of one channel, not of one pixel
    ('16UC1', 2),
    ('32FC1', 4),
    ('8UC3', 9),
    ('64FC2', 8),
])
def test_step_padding_is_removed(encoding, padding_bytes):
    pixels = random_pixels(encoding, seed=1)
    msg = padded_image(pixels, encoding, padding_bytes)

    result = image_to_array(msg)
    assert msg.step > msg.width * pixels.itemsize * (pixels.size // (HEIGHT * WIDTH))
    assert result.shape == pixels.shape
    np.testing.assert_array_equal(result, pixels)


def test_step_padding_then_rgb8():
    pixels = random_pixels('bgr8', seed=2)
    msg = padded_image(pixels, 'bgr8', 3)

    rgb = frame_to_rgb8(msg)
    np.testing.assert_array_equal(rgb, pixels[:, :, ::-1])


# --- Image: byte order ---------------------------------------------------------------------------

def test_big_endian_mono16():
    pixels = np.array([[0x0102, 0xFF00, 0x00FF, 0x1234, 65535, 0, 7]] * HEIGHT, dtype=np.uint16)
    msg = PlainImage(height=HEIGHT, width=WIDTH, encoding='mono16', is_bigendian=1,
                     step=WIDTH * 2, data=pixels.astype('>u2').tobytes())

    result = image_to_array(msg)
    assert result.dtype == np.dtype(np.uint16)
    assert result.dtype.isnative
    np.testing.assert_array_equal(result, pixels)


def test_little_endian_mono16_view():
    pixels = random_pixels('mono16', seed=3)
    data = pixels.astype('<u2').tobytes()
    msg = PlainImage(height=HEIGHT, width=WIDTH, encoding='mono16', is_bigendian=0,
                     step=WIDTH * 2, data=data)

    result = image_to_array(msg)
    np.testing.assert_array_equal(result, pixels)
    assert np.shares_memory(result, np.frombuffer(data, dtype=np.uint8))
    assert not result.flags.writeable


@pytest.mark.parametrize('encoding', ['rgb16', 'bgra16', '16SC3', '32SC1', '32FC1', '64FC1'])
def test_big_endian_multibyte_with_padding(encoding):
    pixels = random_pixels(encoding, seed=4)
    msg = padded_image(pixels, encoding, pixels.itemsize * 2, byte_order='>')

    result = image_to_array(msg)
    assert result.dtype.isnative
    np.testing.assert_array_equal(result, pixels)


@pytest.mark.parametrize('encoding', ['mono8', 'bgr8', 'rgba8', '8SC2'])
def test_big_endian_flag_ignored_for_8bit(encoding):
    pixels = random_pixels(encoding, seed=5)
    little = padded_image(pixels, encoding, 0, byte_order='<')
    big = dataclasses.replace(little, is_bigendian=1)

    np.testing.assert_array_equal(image_to_array(big), image_to_array(little))
    np.testing.assert_array_equal(image_to_array(big), pixels)


def test_array_to_image_writes_little_endian():
    pixels = random_pixels('mono16', seed=6)
    msg = array_to_image(pixels.astype('>u2'), 'mono16', msg_type=PlainImage)

    assert msg.is_bigendian == 0
    assert msg.data == pixels.astype('<u2').tobytes()


# --- Image: malformed frames ---------------------------------------------------------------------

def valid_bgr8_fields():
    pixels = random_pixels('bgr8', seed=7)
    return dict(height=HEIGHT, width=WIDTH, encoding='bgr8', is_bigendian=0, step=WIDTH * 3,
                data=pixels.tobytes())


@pytest.mark.parametrize('changes, expected_text', [
    (dict(width=0, step=0, data=b''), 'empty'),
    (dict(height=0, data=b''), 'empty'),
    (dict(step=WIDTH * 3 - 1, data=bytes((WIDTH * 3 - 1) * HEIGHT)), 'at least width'),
    (dict(encoding='mono16', step=WIDTH * 2 + 1, data=bytes((WIDTH * 2 + 1) * HEIGHT)),
     'multiple of the channel size 2'),
    (dict(data=bytes(WIDTH * 3 * HEIGHT - 1)),
     f'expected step * height = {WIDTH * 3} * {HEIGHT} = {WIDTH * 3 * HEIGHT} bytes, '
     f'got {WIDTH * 3 * HEIGHT - 1} bytes'),
    (dict(data=bytes(WIDTH * 3 * HEIGHT + 1)), f'got {WIDTH * 3 * HEIGHT + 1} bytes'),
    (dict(step=WIDTH * 3 + 4), 'got 105 bytes'),  # step claims padding the data does not have
    (dict(encoding='nv21'), 'unsupported encoding'),
    (dict(encoding='hsv8'), 'unsupported encoding'),
    (dict(encoding='BGR8'), 'unsupported encoding'),
    (dict(data='not bytes'), 'not bytes-like'),
    (dict(data=[0, 1, 256] * (WIDTH * HEIGHT)), 'not of bytes 0-255'),
])
def test_malformed_frame_rejected(changes, expected_text):
    fields = valid_bgr8_fields()
    fields.update(changes)
    msg = PlainImage(**fields)

    with pytest.raises(ImageConversionError) as caught:
        image_to_array(msg)
    message = str(caught.value)
    assert expected_text in message
    assert f"'{msg.encoding}'" in message
    assert f'{msg.width}x{msg.height} (width x height)' in message
    assert f'step {msg.step} bytes' in message


def test_too_many_pixels_rejected():
    msg = PlainImage(**valid_bgr8_fields())

    with pytest.raises(ImageConversionError, match='35 pixels, more than the limit of 34'):
        image_to_array(msg, max_pixels=34)
    assert image_to_array(msg, max_pixels=35).shape == (HEIGHT, WIDTH, 3)


def test_too_many_bytes_rejected():
    msg = PlainImage(**valid_bgr8_fields())

    with pytest.raises(ImageConversionError, match='105 bytes, more than the limit of 104'):
        image_to_array(msg, max_bytes=104)


def test_huge_declared_size_rejected_before_data():
    # A frame that declares 10^12 pixels but carries no data must fail on the limit alone.
    msg = PlainImage(height=10**6, width=10**6, encoding='mono8', step=10**6, data=b'')

    with pytest.raises(ImageConversionError, match='more than the limit'):
        image_to_array(msg)


def test_list_data_accepted():
    fields = valid_bgr8_fields()
    expected = np.frombuffer(fields['data'], np.uint8).reshape(HEIGHT, WIDTH, 3)
    msg = PlainImage(**dict(fields, data=list(fields['data'])))

    np.testing.assert_array_equal(image_to_array(msg), expected)


# --- to_rgb8 -------------------------------------------------------------------------------------

@pytest.mark.parametrize('encoding, red_pixel', [
    ('bgr8', (0, 0, 255)),
    ('rgb8', (255, 0, 0)),
    ('bgra8', (0, 0, 255, 9)),
    ('rgba8', (255, 0, 0, 9)),
    ('bgr16', (0, 0, 65535)),
    ('rgb16', (65535, 0, 0)),
    ('bgra16', (0, 0, 65535, 1)),
    ('rgba16', (65535, 0, 0, 1)),
])
def test_to_rgb8_pure_red(encoding, red_pixel):
    dtype, _ = SUPPORTED_ENCODINGS[encoding]
    pixels = np.zeros((HEIGHT, WIDTH, len(red_pixel)), dtype=dtype)
    pixels[2, 3] = red_pixel

    rgb = to_rgb8(pixels, encoding)
    assert rgb.shape == (HEIGHT, WIDTH, 3)
    assert rgb.dtype == np.uint8
    assert tuple(rgb[2, 3]) == (255, 0, 0)
    assert tuple(rgb[0, 0]) == (0, 0, 0)


@pytest.mark.parametrize('encoding, value, expected', [
    ('mono8', 100, 100),
    ('mono16', 65535, 255),
    ('mono16', 25700, 100),
])
def test_to_rgb8_mono_replicated(encoding, value, expected):
    dtype, _ = SUPPORTED_ENCODINGS[encoding]
    pixels = np.full((HEIGHT, WIDTH), value, dtype=dtype)

    rgb = to_rgb8(pixels, encoding)
    assert rgb.shape == (HEIGHT, WIDTH, 3)
    assert np.all(rgb == expected)


def test_to_rgb8_16bit_rounding():
    # cv_bridge converts with scale 255/65535 and rounds to the nearest integer.
    values = np.array([[0, 128, 129, 257, 385, 386, 32896, 65535]], dtype=np.uint16)

    rgb = to_rgb8(values, 'mono16')
    assert rgb[0, :, 0].tolist() == [0, 0, 1, 1, 1, 2, 128, 255]


def bayer_mosaic(pattern, rgb, dtype, height=8, width=10):
    """Return a Bayer mosaic of one uniform colour; pattern names the top-left 2x2 block."""
    channel = {'r': 0, 'g': 1, 'b': 2}
    mosaic = np.zeros((height, width), dtype=dtype)
    for dy in (0, 1):
        for dx in (0, 1):
            mosaic[dy::2, dx::2] = rgb[channel[pattern[2 * dy + dx]]]
    return mosaic


@pytest.mark.parametrize('pattern', ['rggb', 'bggr', 'gbrg', 'grbg'])
@pytest.mark.parametrize('bits', [8, 16])
def test_to_rgb8_bayer_pattern_colours(pattern, bits):
    dtype = np.uint8 if bits == 8 else np.uint16
    scale = 1 if bits == 8 else 257
    mosaic = bayer_mosaic(pattern, (200 * scale, 100 * scale, 50 * scale), dtype)

    rgb = to_rgb8(mosaic, f'bayer_{pattern}{bits}')
    interior = rgb[2:-2, 2:-2].reshape(-1, 3)
    assert np.all(interior == (200, 100, 50))


@pytest.mark.parametrize('encoding, macropixel', [
    ('uyvy', (90, 81, 240, 81)),
    ('yuv422', (90, 81, 240, 81)),
    ('yuyv', (81, 90, 81, 240)),
    ('yuv422_yuy2', (81, 90, 81, 240)),
])
def test_to_rgb8_yuv422_red(encoding, macropixel):
    # Y=81, U=90, V=240 is BT.601 video-range red.
    packed = np.tile(np.array(macropixel, dtype=np.uint8), (4, 3)).reshape(4, 6, 2)

    rgb = to_rgb8(packed, encoding)
    assert rgb.shape == (4, 6, 3)
    assert np.all(rgb[:, :, 0] >= 252)
    assert np.all(rgb[:, :, 1:] <= 3)


def test_to_rgb8_yuv422_odd_width_rejected():
    with pytest.raises(ImageConversionError, match='even width, got 7'):
        to_rgb8(np.zeros((HEIGHT, WIDTH, 2), dtype=np.uint8), 'uyvy')


@pytest.mark.parametrize('encoding', ['8UC1', '8UC3', '8UC4', '16UC1', '32FC1'])
def test_to_rgb8_rejects_generic_types(encoding):
    with pytest.raises(ImageConversionError, match='no colour order'):
        to_rgb8(random_pixels(encoding), encoding)


@pytest.mark.parametrize('shape, dtype, encoding, expected_text', [
    ((HEIGHT, WIDTH), np.uint8, 'bgr8', 'needs HxWx3'),
    ((HEIGHT, WIDTH, 4), np.uint8, 'bgr8', 'needs HxWx3'),
    ((HEIGHT, WIDTH), np.uint8, 'mono16', 'needs uint16'),
    ((HEIGHT, WIDTH, 3), np.float32, 'rgb8', 'needs uint8'),
    ((0, WIDTH, 3), np.uint8, 'rgb8', 'empty array'),
    ((HEIGHT, WIDTH, 3), np.uint8, 'yuv420', 'unsupported encoding'),
])
def test_to_rgb8_rejects_mismatched_array(shape, dtype, encoding, expected_text):
    with pytest.raises(ImageConversionError, match=expected_text):
        to_rgb8(np.zeros(shape, dtype=dtype), encoding)


def test_to_rgb8_returns_new_writable_array():
    pixels = random_pixels('rgb8', seed=8)
    view = image_to_array(array_to_image(pixels, 'rgb8', msg_type=PlainImage))
    assert not view.flags.writeable

    rgb = to_rgb8(view, 'rgb8')
    assert rgb.flags.writeable
    assert rgb.flags.c_contiguous
    assert not np.shares_memory(rgb, view)
    np.testing.assert_array_equal(rgb, pixels)


def test_to_rgb8_accepts_single_channel_as_hxwx1():
    pixels = random_pixels('mono8', seed=9)

    np.testing.assert_array_equal(to_rgb8(pixels[:, :, None], 'mono8'),
                                  to_rgb8(pixels, 'mono8'))


# --- CompressedImage -----------------------------------------------------------------------------

@pytest.fixture
def cifar_jpeg_bytes():
    return require_data(CIFAR_JPEG).read_bytes()


def test_jpeg_real_cifar_decodes_like_opencv(cifar_jpeg_bytes):
    msg = PlainCompressedImage(format='rgb8; jpeg compressed bgr8', data=cifar_jpeg_bytes)

    decoded = compressed_image_to_array(msg)
    expected = cv2.imdecode(np.frombuffer(cifar_jpeg_bytes, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape == (32, 32, 3)
    assert decoded_encoding(decoded) == 'bgr8'
    np.testing.assert_array_equal(decoded, expected)
    np.testing.assert_array_equal(frame_to_rgb8(msg), expected[:, :, ::-1])


def test_png_round_trip_real_cifar_is_lossless(cifar_jpeg_bytes):
    bgr = cv2.imdecode(np.frombuffer(cifar_jpeg_bytes, np.uint8), cv2.IMREAD_UNCHANGED)

    msg = array_to_compressed_image(bgr, 'png', msg_type=PlainCompressedImage)
    assert msg.format == 'bgr8; png compressed bgr8'
    np.testing.assert_array_equal(compressed_image_to_array(msg), bgr)


def test_jpeg_round_trip_real_cifar_is_close(cifar_jpeg_bytes):
    bgr = cv2.imdecode(np.frombuffer(cifar_jpeg_bytes, np.uint8), cv2.IMREAD_UNCHANGED)

    msg = array_to_compressed_image(bgr, 'jpeg', msg_type=PlainCompressedImage)
    assert msg.format == 'bgr8; jpeg compressed bgr8'
    decoded = compressed_image_to_array(msg)
    assert decoded.shape == bgr.shape
    error = np.abs(decoded.astype(np.int16) - bgr.astype(np.int16))
    assert error.mean() < 4  # quality 95 re-encoding of an already JPEG-coded image


def test_png_real_mnist_is_mono8():
    png = require_data(MNIST_PNG).read_bytes()
    msg = PlainCompressedImage(format='mono8; png compressed ', data=png)

    decoded = compressed_image_to_array(msg)
    assert decoded.shape == (28, 28)
    assert decoded_encoding(decoded) == 'mono8'
    rgb = frame_to_rgb8(msg)
    assert rgb.shape == (28, 28, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[:, :, channel], decoded)


@pytest.mark.parametrize('pixels, encoding', [
    ((np.arange(HEIGHT * WIDTH, dtype=np.uint16) * 1500).reshape(HEIGHT, WIDTH), 'mono16'),
    (random_pixels('bgra8', seed=10), 'bgra8'),
    (random_pixels('bgr16', seed=11), 'bgr16'),
])
def test_png_round_trip_keeps_depth_and_alpha(pixels, encoding):
    msg = array_to_compressed_image(pixels, 'png', msg_type=PlainCompressedImage)

    decoded = compressed_image_to_array(msg)
    assert decoded_encoding(decoded) == encoding
    np.testing.assert_array_equal(decoded, pixels)


def test_jpeg_gradient_round_trip():
    bgr = gradient_bgr()

    msg = array_to_compressed_image(bgr, 'jpg', jpeg_quality=90, msg_type=PlainCompressedImage)
    decoded = compressed_image_to_array(msg)
    assert np.abs(decoded.astype(np.int16) - bgr).mean() < 2


@pytest.mark.parametrize('fmt', [
    'jpeg', 'jpg', 'JPEG', 'rgb8; jpeg compressed bgr8', 'bgr8; jpeg compressed bgr8', '',
    '  jpeg  ', 'png',  # png naming JPEG data: the signature decides
])
def test_jpeg_format_strings_accepted(fmt):
    bgr = gradient_bgr()
    data = array_to_compressed_image(bgr, 'jpeg', msg_type=PlainCompressedImage).data

    decoded = compressed_image_to_array(PlainCompressedImage(format=fmt, data=data))
    assert decoded.shape == bgr.shape


@pytest.mark.parametrize('fmt', [
    '16UC1; compressedDepth png', '16UC1; compressedDepth', 'rgb8; tiff compressed', 'webp',
    'h264', 'bgr8; qoi compressed bgr8',
])
def test_unsupported_format_strings_rejected(fmt):
    data = array_to_compressed_image(gradient_bgr(), 'png', msg_type=PlainCompressedImage).data

    with pytest.raises(ImageConversionError, match='unsupported compressed format'):
        compressed_image_to_array(PlainCompressedImage(format=fmt, data=data))


def corrupted_payloads():
    jpeg = array_to_compressed_image(gradient_bgr(), 'jpeg', msg_type=PlainCompressedImage).data
    png = array_to_compressed_image(gradient_bgr(), 'png', msg_type=PlainCompressedImage).data
    noise = np.random.default_rng(12).integers(0, 256, 500, dtype=np.uint8).tobytes()
    return [
        ('empty', b'', 'empty compressed image'),
        ('noise', noise, 'neither JPEG nor PNG'),
        ('jpeg truncated', jpeg[:len(jpeg) // 2], 'truncated JPEG'),
        ('jpeg signature then zeros', jpeg[:3] + bytes(200), 'invalid JPEG data'),
        ('jpeg headers only', jpeg[:jpeg.index(b'\xff\xda')], 'no frame header followed'),
        ('png truncated', png[:len(png) // 2], 'failed to decode PNG'),
        ('png without IHDR', png[:8] + bytes(40), 'no IHDR chunk'),
        ('png corrupt data', png[:40] + bytes(len(png) - 40), 'failed to decode PNG'),
    ]


@pytest.mark.parametrize('name, data, expected_text', corrupted_payloads(),
                         ids=[case[0] for case in corrupted_payloads()])
def test_corrupted_compressed_data_rejected(name, data, expected_text):
    msg = PlainCompressedImage(format='jpeg' if name.startswith('jpeg') else 'png', data=data)

    with pytest.raises(ImageConversionError, match=expected_text):
        compressed_image_to_array(msg)


def patch_jpeg_size(jpeg, height, width):
    """Return JPEG data whose baseline frame header declares another size."""
    data = bytearray(jpeg)
    sof = data.index(b'\xff\xc0')
    data[sof + 5:sof + 9] = height.to_bytes(2, 'big') + width.to_bytes(2, 'big')
    return bytes(data)


def test_compressed_size_checked_before_decoding():
    jpeg = array_to_compressed_image(gradient_bgr(), 'jpeg', msg_type=PlainCompressedImage).data
    huge_jpeg = patch_jpeg_size(jpeg, 60000, 50000)
    # A PNG signature and IHDR chunk alone, declaring 100000 x 100000 pixels.
    huge_png = (b'\x89PNG\r\n\x1a\n' + (13).to_bytes(4, 'big') + b'IHDR'
                + (100000).to_bytes(4, 'big') + (100000).to_bytes(4, 'big') + bytes(9))

    with pytest.raises(ImageConversionError, match='50000x60000 .* more than the limit'):
        compressed_image_to_array(PlainCompressedImage(format='jpeg', data=huge_jpeg))
    with pytest.raises(ImageConversionError, match='100000x100000 .* more than the limit'):
        compressed_image_to_array(PlainCompressedImage(format='png', data=huge_png))


def test_compressed_limits_are_parameters():
    msg = array_to_compressed_image(gradient_bgr(48, 64), 'png', msg_type=PlainCompressedImage)

    with pytest.raises(ImageConversionError, match='3072 pixels, more than the limit of 3071'):
        compressed_image_to_array(msg, max_pixels=3071)
    with pytest.raises(ImageConversionError, match='larger than the limit of 100 bytes'):
        compressed_image_to_array(msg, max_bytes=100)
    assert compressed_image_to_array(msg, max_pixels=3072).shape == (48, 64, 3)


@pytest.mark.parametrize('pixels, fmt, expected_text', [
    (np.zeros((4, 4, 4), np.uint8), 'jpeg', 'JPEG takes mono8 or bgr8'),
    (np.zeros((4, 4), np.uint16), 'jpeg', 'JPEG takes mono8 or bgr8'),
    (np.zeros((4, 4, 2), np.uint8), 'png', 'matches no encoding'),
    (np.zeros((4, 4), np.float32), 'png', 'matches no encoding'),
    (np.zeros((4, 4, 3), np.uint8), 'tiff', 'expected jpeg, jpg or png'),
])
def test_array_to_compressed_image_rejects(pixels, fmt, expected_text):
    with pytest.raises(ImageConversionError, match=expected_text):
        array_to_compressed_image(pixels, fmt, msg_type=PlainCompressedImage)


# --- Real sensor_msgs messages and recordings ----------------------------------------------------

def test_sensor_msgs_image_without_rclpy_init():
    image_type, _ = ros_image_types()
    from std_msgs.msg import Header

    header = Header(frame_id='camera_optical_frame')
    header.stamp.sec = 12
    pixels = random_pixels('bgr8', seed=13)

    msg = array_to_image(pixels, 'bgr8', header=header)
    assert isinstance(msg, image_type)
    assert isinstance(msg.data, array.array)
    assert msg.header.frame_id == 'camera_optical_frame'
    assert msg.header.stamp.sec == 12

    result = image_to_array(msg)
    np.testing.assert_array_equal(result, pixels)
    assert np.shares_memory(result, np.frombuffer(msg.data, np.uint8))
    np.testing.assert_array_equal(frame_to_rgb8(msg), pixels[:, :, ::-1])


def test_sensor_msgs_compressed_image_real_cifar(cifar_jpeg_bytes):
    _, compressed_type = ros_image_types()
    bgr = cv2.imdecode(np.frombuffer(cifar_jpeg_bytes, np.uint8), cv2.IMREAD_UNCHANGED)

    msg = array_to_compressed_image(bgr, 'png')
    assert isinstance(msg, compressed_type)
    np.testing.assert_array_equal(compressed_image_to_array(msg), bgr)

    msg.format = 'jpeg'
    msg.data = cifar_jpeg_bytes
    np.testing.assert_array_equal(frame_to_rgb8(msg), bgr[:, :, ::-1])


def test_recorded_robot_frames_decode():
    bag = require_data(DUCKIEBOT_MCAP)
    highlevel = pytest.importorskip('rosbags.highlevel', reason='rosbags not installed')

    frames = []
    with highlevel.AnyReader([bag]) as reader:
        for connection, _, raw in reader.messages():
            frames.append(reader.deserialize(raw, connection.msgtype))
            if len(frames) == 20:
                break

    assert len(frames) == 20
    for msg in frames:  # rosbags messages carry data as a numpy array
        rgb = frame_to_rgb8(msg)
        assert rgb.shape == (28, 28, 3)
        np.testing.assert_array_equal(rgb[:, :, 0], rgb[:, :, 2])


def test_module_import_loads_no_ros():
    code = ('import sys, edgeserving_ros.image_conversion; '
            'print(sorted(m for m in ("rclpy", "sensor_msgs") if m in sys.modules))')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == '[]'


@pytest.mark.parametrize('encoding, channels', [('8UC1', 1), ('8UC3', 3), ('8UC4', 4)])
def test_frame_to_rgb8_reads_generic_as_opencv(encoding, channels):
    shape = (5, 7) if channels == 1 else (5, 7, channels)
    pixels = np.zeros(shape, np.uint8)
    if channels == 1:
        pixels[:, :] = 200
        expected = np.full((5, 7, 3), 200, np.uint8)
    else:
        pixels[..., 2] = 255  # red in OpenCV's BGR(A) order
        expected = np.zeros((5, 7, 3), np.uint8)
        expected[..., 0] = 255
    msg = array_to_image(pixels, encoding)

    np.testing.assert_array_equal(frame_to_rgb8(msg), expected)


def test_frame_to_rgb8_generic_strict_rejects():
    msg = array_to_image(np.zeros((5, 7, 3), np.uint8), '8UC3')

    with pytest.raises(ImageConversionError, match='generic type'):
        frame_to_rgb8(msg, generic_as_opencv=False)
