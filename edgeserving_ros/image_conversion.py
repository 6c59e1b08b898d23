"""Conversion of sensor_msgs/Image and sensor_msgs/CompressedImage messages to numpy arrays.

This module replaces ROS 2 cv_bridge, which has no PyPI wheel, with the same encoding names and
the semantics of ``imgmsg_to_cv2`` (passthrough and ``'rgb8'``), ``cv2_to_imgmsg`` and
``compressed_imgmsg_to_cv2``. It is stricter than cv_bridge's Python code. Like cv_bridge's C++
code, it rejects a data size other than step * height. It also rejects a step that is not a
multiple of the channel size, frames above a pixel or byte limit, and codecs other than JPEG
and PNG. It returns a
read-only view of the message data where no copy is needed, and converts to RGB only.

It works on any object with the message fields (``height``, ``width``, ``encoding``,
``is_bigendian``, ``step``, ``data``; or ``format``, ``data``), so it needs no ROS installation
except to build messages, where ``sensor_msgs`` is imported on first use.
"""

import types

import cv2
import numpy as np

DEFAULT_MAX_PIXELS = 16_777_216  # 4096 x 4096
DEFAULT_MAX_BYTES = 64 * 2**20


class ImageConversionError(ValueError):
    """A message that cannot be converted: malformed, unsupported or above a size limit."""


def _build_encoding_table() -> dict:
    table = {
        'rgb8': (np.uint8, 3), 'bgr8': (np.uint8, 3),
        'rgba8': (np.uint8, 4), 'bgra8': (np.uint8, 4),
        'rgb16': (np.uint16, 3), 'bgr16': (np.uint16, 3),
        'rgba16': (np.uint16, 4), 'bgra16': (np.uint16, 4),
        'mono8': (np.uint8, 1), 'mono16': (np.uint16, 1),
        # Packed YUV 4:2:2, two bytes per pixel. 'yuv422' and 'yuv422_yuy2' are the deprecated
        # names of 'uyvy' and 'yuyv' in sensor_msgs/image_encodings.hpp.
        'uyvy': (np.uint8, 2), 'yuv422': (np.uint8, 2),
        'yuyv': (np.uint8, 2), 'yuv422_yuy2': (np.uint8, 2),
    }
    for pattern in ('rggb', 'bggr', 'gbrg', 'grbg'):
        table[f'bayer_{pattern}8'] = (np.uint8, 1)
        table[f'bayer_{pattern}16'] = (np.uint16, 1)

    # The generic OpenCV types carry no colour order.
    depths = {'8U': np.uint8, '8S': np.int8, '16U': np.uint16, '16S': np.int16,
              '32S': np.int32, '32F': np.float32, '64F': np.float64}
    for depth, scalar_type in depths.items():
        for channels in range(1, 5):
            table[f'{depth}C{channels}'] = (scalar_type, channels)

    return {name: (np.dtype(scalar_type), channels)
            for name, (scalar_type, channels) in table.items()}


SUPPORTED_ENCODINGS = types.MappingProxyType(_build_encoding_table())
"""Encoding name -> (native-order numpy dtype, channels), as in sensor_msgs/image_encodings."""

# OpenCV conversion to RGB of each encoding that has colour semantics, or None for RGB itself.
# The Bayer codes follow cv_bridge: OpenCV's legacy names read the pattern from the second
# row, so ROS 'bayer_rggb' is OpenCV's 'BayerBG'.
_RGB_CONVERSION_CODES = {
    'rgb8': None, 'rgb16': None,
    'bgr8': cv2.COLOR_BGR2RGB, 'bgr16': cv2.COLOR_BGR2RGB,
    'rgba8': cv2.COLOR_RGBA2RGB, 'rgba16': cv2.COLOR_RGBA2RGB,
    'bgra8': cv2.COLOR_BGRA2RGB, 'bgra16': cv2.COLOR_BGRA2RGB,
    'mono8': cv2.COLOR_GRAY2RGB, 'mono16': cv2.COLOR_GRAY2RGB,
    'bayer_rggb8': cv2.COLOR_BayerBG2RGB, 'bayer_rggb16': cv2.COLOR_BayerBG2RGB,
    'bayer_bggr8': cv2.COLOR_BayerRG2RGB, 'bayer_bggr16': cv2.COLOR_BayerRG2RGB,
    'bayer_gbrg8': cv2.COLOR_BayerGR2RGB, 'bayer_gbrg16': cv2.COLOR_BayerGR2RGB,
    'bayer_grbg8': cv2.COLOR_BayerGB2RGB, 'bayer_grbg16': cv2.COLOR_BayerGB2RGB,
    'uyvy': cv2.COLOR_YUV2RGB_UYVY, 'yuv422': cv2.COLOR_YUV2RGB_UYVY,
    'yuyv': cv2.COLOR_YUV2RGB_YUYV, 'yuv422_yuy2': cv2.COLOR_YUV2RGB_YUYV,
}
_YUV422_ENCODINGS = frozenset({'uyvy', 'yuv422', 'yuyv', 'yuv422_yuy2'})

# cv_bridge scales 16-bit to 8-bit with cv::Mat::convertTo(..., 255. / 65535.), which rounds to
# the nearest integer: 65535 -> 255, 128 -> 0, 129 -> 1.
_SCALE_16_TO_8 = 255.0 / 65535.0

_JPEG_SIGNATURE = b'\xff\xd8\xff'
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# JPEG start-of-frame markers: 0xC0-0xCF except DHT (0xC4), JPG (0xC8) and DAC (0xCC).
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0-RST7, SOI.
_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD9)})
_JPEG_SOS, _JPEG_EOI = 0xDA, 0xD9
_COMPRESSED_CODECS = {'jpeg': 'jpeg', 'jpg': 'jpeg', 'jpe': 'jpeg', 'png': 'png'}


def _describe_frame(encoding, width, height, step) -> str:
    return f"image '{encoding}' {width}x{height} (width x height), step {step} bytes"


def _as_byte_array(data, what: str, max_bytes: int) -> np.ndarray:
    """Return message data as a 1-D uint8 array, without a copy for bytes-like objects."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as error:  # ValueError: a non-contiguous numpy array
        buffer_error = error

    # A list of ints, as ROS 1 style code and some hand-built messages carry. The limit is
    # checked before the copy.
    if isinstance(data, (list, tuple)):
        if len(data) > max_bytes:
            raise ImageConversionError(
                f'{what}: data of {len(data)} bytes is larger than the limit of {max_bytes} '
                'bytes')
        try:
            return np.asarray(data, dtype=np.uint8)
        except (OverflowError, ValueError, TypeError) as error:
            raise ImageConversionError(
                f'{what}: data is a sequence but not of bytes 0-255: {error}') from None
    raise ImageConversionError(
        f'{what}: data of type {type(data).__name__} is not bytes-like: {buffer_error}')


def image_to_array(msg, max_pixels: int = DEFAULT_MAX_PIXELS,
                   max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Convert a sensor_msgs/Image to an HxW (one channel) or HxWxC array in the message's order.

    The result has the encoding's dtype in native byte order; channels keep the message order,
    as cv_bridge's ``imgmsg_to_cv2(msg, 'passthrough')`` returns them. Like cv_bridge's C++
    code, the data size must equal step * height exactly: extra or missing bytes raise, because
    they mean the size fields do not describe the data. Row padding (step larger than the pixel
    bytes of a row) is dropped by slicing, without a copy.

    When ``msg.data`` is bytes-like (bytes, array.array, a numpy array) and in native byte order,
    the result is a view of it, marked read-only so that writing to it cannot change the message.
    Copy it to write.

    Raises ImageConversionError for an unsupported encoding or an empty image. It also raises
    for more than ``max_pixels`` pixels or ``max_bytes`` bytes of declared data, for a step
    shorter than a row or not a multiple of the channel size, and for a data size other than
    step * height.
    """
    encoding = msg.encoding
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    frame = _describe_frame(encoding, width, height, step)

    spec = SUPPORTED_ENCODINGS.get(encoding)
    if spec is None:
        raise ImageConversionError(
            f'unsupported encoding in {frame}. Supported encodings: '
            f'{", ".join(SUPPORTED_ENCODINGS)}')
    dtype, channels = spec

    if width <= 0 or height <= 0:
        raise ImageConversionError(f'empty {frame}: width and height must be positive')
    if width * height > max_pixels:
        raise ImageConversionError(
            f'{frame} has {width * height} pixels, more than the limit of {max_pixels}')

    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageConversionError(
            f'invalid step in {frame}: step must be at least width * channels * bytes per '
            f'channel = {width} * {channels} * {dtype.itemsize} = {row_bytes} bytes')
    if step % dtype.itemsize != 0:
        # OpenCV's cv::Mat, which cv_bridge wraps around the data, has the same requirement.
        raise ImageConversionError(
            f'invalid step in {frame}: step must be a multiple of the channel size '
            f'{dtype.itemsize} bytes')

    expected_bytes = step * height
    if expected_bytes > max_bytes:
        raise ImageConversionError(
            f'{frame} declares step * height = {expected_bytes} bytes, more than the limit of '
            f'{max_bytes} bytes')
    buffer = _as_byte_array(msg.data, frame, max_bytes)
    if buffer.size != expected_bytes:
        raise ImageConversionError(
            f'data size mismatch in {frame}: expected step * height = {step} * {height} = '
            f'{expected_bytes} bytes, got {buffer.size} bytes')

    rows = buffer.reshape(height, step)[:, :row_bytes]
    message_order = '>' if msg.is_bigendian else '<'
    pixels = rows.view(dtype.newbyteorder(message_order))
    if channels > 1:
        pixels = pixels.reshape(height, width, channels)

    if pixels.dtype.isnative:
        pixels.flags.writeable = False
        return pixels
    # Multi-byte values in the other byte order: astype swaps the bytes into a new array.
    return pixels.astype(dtype)


def _check_format(fmt: str) -> None:
    """Raise ImageConversionError when a CompressedImage format names neither JPEG nor PNG.

    An empty format passes. Understands the forms cv_bridge writes ('jpeg', 'jpg', 'png') and
    those image_transport's compressed plugin writes ('rgb8; jpeg compressed bgr8',
    'mono8; png compressed ').
    """
    text = fmt.strip().lower()
    if not text:
        return
    if 'compresseddepth' in text:
        raise ImageConversionError(
            f'unsupported compressed format {fmt!r}: compressedDepth images carry a depth '
            'quantisation header and are not supported')

    # The codec is the first word after the optional '<encoding>;' prefix.
    words = text.rpartition(';')[2].split()
    if not words or words[0] not in _COMPRESSED_CODECS:
        raise ImageConversionError(
            f'unsupported compressed format {fmt!r}: only JPEG and PNG are supported')


def _jpeg_header(view: memoryview) -> tuple[int, int, int]:
    """Return (height, width, offset of the first start-of-scan marker) of JPEG data."""
    size = len(view)
    frame_size = None
    position = 2  # after SOI
    while position + 4 <= size:
        if view[position] != 0xFF:
            raise ImageConversionError(
                f'invalid JPEG data: no marker at byte {position} of {size}')
        marker = view[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker in _JPEG_STANDALONE_MARKERS:
            position += 2
            continue
        if marker == _JPEG_EOI:
            break
        if marker == _JPEG_SOS:
            if frame_size is None:
                break
            return frame_size[0], frame_size[1], position

        segment_length = (view[position + 2] << 8) | view[position + 3]
        if segment_length < 2:
            raise ImageConversionError(
                f'invalid JPEG data: segment length {segment_length} at byte {position}')
        if marker in _JPEG_SOF_MARKERS and position + 9 <= size:
            height = (view[position + 5] << 8) | view[position + 6]
            width = (view[position + 7] << 8) | view[position + 8]
            frame_size = (height, width)
        position += 2 + segment_length

    raise ImageConversionError(
        f'invalid JPEG data ({size} bytes): no frame header followed by a scan')


def _jpeg_has_end(buffer: np.ndarray, scan_offset: int) -> bool:
    """Return whether an end-of-image marker follows the scan, so the data is not truncated.

    Inside entropy-coded data every 0xFF byte is followed by 0x00 or a restart marker, so the
    pair 0xFF 0xD9 after the scan start can only be the end-of-image marker.
    """
    if buffer[-2] == 0xFF and buffer[-1] == _JPEG_EOI:
        return True
    # Some encoders pad after the marker, so search the scan and everything after it.
    scan = buffer[scan_offset:]
    return bool(np.any((scan[:-1] == 0xFF) & (scan[1:] == _JPEG_EOI)))


def _compressed_header(buffer: np.ndarray, fmt: str) -> tuple[str, int, int]:
    """Return (codec, height, width) read from the signature and header of compressed data."""
    view = memoryview(buffer)
    head = bytes(view[:len(_PNG_SIGNATURE)])
    if head.startswith(_JPEG_SIGNATURE):
        height, width, scan_offset = _jpeg_header(view)
        if not _jpeg_has_end(buffer, scan_offset):
            raise ImageConversionError(
                f'truncated JPEG data ({buffer.size} bytes, format {fmt!r}): '
                'no end-of-image marker after the scan')
        return 'jpeg', height, width
    if head == _PNG_SIGNATURE:
        # The IHDR chunk comes first: length (4 bytes), type, width and height (big-endian).
        if buffer.size < 24 or bytes(view[12:16]) != b'IHDR':
            raise ImageConversionError(
                f'invalid PNG data ({buffer.size} bytes, format {fmt!r}): no IHDR chunk')
        width = int.from_bytes(view[16:20], 'big')
        height = int.from_bytes(view[20:24], 'big')
        return 'png', height, width
    raise ImageConversionError(
        f'compressed data ({buffer.size} bytes, format {fmt!r}) is neither JPEG nor PNG: '
        f'first bytes {head.hex()}')


def compressed_image_to_array(msg, max_pixels: int = DEFAULT_MAX_PIXELS,
                              max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (JPEG or PNG) to an array, as OpenCV decodes it.

    The result is what cv_bridge's ``compressed_imgmsg_to_cv2(msg, 'passthrough')`` returns:
    ``cv2.imdecode`` with IMREAD_UNCHANGED, so BGR or BGRA colour, HxW for grey, and uint16
    for 16-bit PNG. ``decoded_encoding`` names its encoding. The codec is read from the data's
    signature; ``msg.format`` is only checked for naming a codec other than JPEG or PNG.

    The image size is read from the JPEG frame header or the PNG IHDR chunk and checked against
    ``max_pixels`` before decoding, and again after. JPEG data without an end-of-image marker
    is rejected as truncated.

    Raises ImageConversionError for empty, oversized, truncated, undecodable or non-JPEG/PNG
    data, and for format strings that name another codec.
    """
    fmt = str(msg.format)
    _check_format(fmt)
    buffer = _as_byte_array(msg.data, f'compressed image (format {fmt!r})', max_bytes)
    data_bytes = buffer.size
    if data_bytes == 0:
        raise ImageConversionError(f'empty compressed image (format {fmt!r})')
    if data_bytes > max_bytes:
        raise ImageConversionError(
            f'compressed image of {data_bytes} bytes (format {fmt!r}) is larger than the '
            f'limit of {max_bytes} bytes')

    # A JPEG/PNG mismatch between msg.format and the data passes, as it does in image_transport,
    # because cv2.imdecode also picks the decoder by the signature.
    codec, height, width = _compressed_header(buffer, fmt)
    if width <= 0 or height <= 0:
        raise ImageConversionError(
            f'{codec.upper()} header declares an empty image {width}x{height} (width x height)')
    if width * height > max_pixels:
        raise ImageConversionError(
            f'{codec.upper()} image {width}x{height} (width x height) has {width * height} '
            f'pixels, more than the limit of {max_pixels}')

    try:
        decoded = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise ImageConversionError(
            f'failed to decode {codec.upper()} data ({data_bytes} bytes, format {fmt!r}): '
            f'{error}') from None
    if decoded is None:
        raise ImageConversionError(
            f'failed to decode {codec.upper()} data ({data_bytes} bytes, format {fmt!r}): '
            'the data is corrupt or truncated')
    decoded_pixels = decoded.shape[0] * decoded.shape[1]
    if decoded_pixels > max_pixels:
        raise ImageConversionError(
            f'decoded {codec.upper()} image has {decoded_pixels} pixels, more than the limit '
            f'of {max_pixels}')
    return decoded


def decoded_encoding(array: np.ndarray) -> str:
    """Return the encoding of an array decoded by OpenCV: mono, BGR or BGRA, 8 or 16 bit."""
    depth = {np.dtype(np.uint8): '8', np.dtype(np.uint16): '16'}.get(array.dtype)
    colour = None
    if array.ndim == 2:
        colour = 'mono'
    elif array.ndim == 3:
        colour = {1: 'mono', 3: 'bgr', 4: 'bgra'}.get(array.shape[2])
    if depth is None or colour is None:
        raise ImageConversionError(
            f'decoded array of shape {array.shape} and dtype {array.dtype} matches no encoding: '
            'expected uint8 or uint16 with 1, 3 or 4 channels')
    return colour + depth


def _check_array(array: np.ndarray, encoding: str) -> np.ndarray:
    """Return the array as HxW or HxWxC in native byte order, if it matches the encoding."""
    spec = SUPPORTED_ENCODINGS.get(encoding)
    if spec is None:
        raise ImageConversionError(
            f'unsupported encoding {encoding!r}. Supported encodings: '
            f'{", ".join(SUPPORTED_ENCODINGS)}')
    dtype, channels = spec

    array = np.asarray(array)
    if array.dtype.newbyteorder('=') != dtype:
        raise ImageConversionError(
            f'array dtype {array.dtype} does not match encoding {encoding!r}, which needs {dtype}')
    if channels == 1 and array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    expected_ndim = 2 if channels == 1 else 3
    if array.ndim != expected_ndim or (channels > 1 and array.shape[2] != channels):
        expected_shape = 'HxW' if channels == 1 else f'HxWx{channels}'
        raise ImageConversionError(
            f'array of shape {array.shape} does not match encoding {encoding!r}, which needs '
            f'{expected_shape}')
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageConversionError(f'empty array of shape {array.shape}')
    if not array.dtype.isnative:
        array = array.astype(dtype)
    return array


def to_rgb8(array: np.ndarray, encoding: str) -> np.ndarray:
    """Convert an image array in ``encoding`` to a new C-contiguous HxWx3 uint8 RGB array.

    The result matches cv_bridge's ``imgmsg_to_cv2(msg, 'rgb8')``: BGR is reordered, alpha
    dropped, grey replicated to three channels, Bayer patterns demosaiced with OpenCV's bilinear
    method and packed YUV 4:2:2 converted with OpenCV's BT.601 formulas. 16-bit values are
    scaled by 255/65535 and rounded to the nearest integer (65535 -> 255), as cv_bridge does.
    For a compressed image, pass ``decoded_encoding(array)``.

    Raises ImageConversionError when the array does not match the encoding, or for a YUV 4:2:2
    image of odd width. It also raises for the generic types such as '8UC3' or '16UC1', which
    have no colour order, so cv_bridge also rejects their conversion to 'rgb8'.
    """
    array = _check_array(array, encoding)
    if encoding not in _RGB_CONVERSION_CODES:
        raise ImageConversionError(
            f'cannot convert {encoding!r} to rgb8: it is a generic type with no colour order. '
            'Publish a colour or mono encoding such as bgr8, rgb8 or mono8')
    if encoding in _YUV422_ENCODINGS and array.shape[1] % 2 != 0:
        raise ImageConversionError(
            f'cannot convert {encoding!r} to rgb8: YUV 4:2:2 needs an even width, got '
            f'{array.shape[1]}')

    code = _RGB_CONVERSION_CODES[encoding]
    rgb = array if code is None else cv2.cvtColor(array, code)
    if rgb.dtype == np.uint16:
        rgb = cv2.convertScaleAbs(rgb, alpha=_SCALE_16_TO_8)
    elif rgb is array:
        rgb = np.array(array, order='C')
    return np.ascontiguousarray(rgb)


# OpenCV's channel order for the generic types, which drivers built on OpenCV publish.
GENERIC_ENCODING_COLOURS = {
    '8UC1': 'mono8', '8UC3': 'bgr8', '8UC4': 'bgra8',
    '16UC1': 'mono16', '16UC3': 'bgr16', '16UC4': 'bgra16',
}


def frame_to_rgb8(msg, max_pixels: int = DEFAULT_MAX_PIXELS,
                  max_bytes: int = DEFAULT_MAX_BYTES,
                  generic_as_opencv: bool = True) -> np.ndarray:
    """Convert an Image or CompressedImage (distinguished by a ``format`` field) to HxWx3 RGB.

    With ``generic_as_opencv`` (the default), the generic types 8UC1/3/4 and 16UC1/3/4 are read
    in OpenCV's channel order (mono, BGR, BGRA). This deliberately differs from cv_bridge, which
    rejects converting them to rgb8, because a model needs colour input and OpenCV-based
    drivers publish BGR under these names.
    """
    if hasattr(msg, 'format'):
        decoded = compressed_image_to_array(msg, max_pixels=max_pixels, max_bytes=max_bytes)
        return to_rgb8(decoded, decoded_encoding(decoded))
    pixels = image_to_array(msg, max_pixels=max_pixels, max_bytes=max_bytes)
    encoding = msg.encoding
    if generic_as_opencv:
        encoding = GENERIC_ENCODING_COLOURS.get(encoding, encoding)
    return to_rgb8(pixels, encoding)


def _check_message_size(array: np.ndarray, step: int) -> None:
    # height, width and step are uint32 fields.
    if max(array.shape[0], array.shape[1], step) >= 2**32:
        raise ImageConversionError(
            f'array of shape {array.shape} does not fit the uint32 size fields of a message')


def array_to_image(array: np.ndarray, encoding: str, header=None, msg_type=None):
    """Build a sensor_msgs/Image (or ``msg_type``) holding ``array`` in ``encoding``.

    The message is dense (step = width * channels * bytes per channel) and little-endian
    (is_bigendian = 0) whatever the array's byte order. ``msg_type`` is any class with the
    Image fields; by default sensor_msgs.msg.Image, imported on first use. The data is
    assigned as bytes, because rclpy converts a numpy array to the field element by element.
    """
    array = _check_array(array, encoding)
    dtype, _ = SUPPORTED_ENCODINGS[encoding]
    dense = np.ascontiguousarray(array, dtype=dtype.newbyteorder('<'))
    step = dense.strides[0]
    _check_message_size(dense, step)

    if msg_type is None:
        from sensor_msgs.msg import Image
        msg_type = Image
    msg = msg_type()
    if header is not None:
        msg.header = header
    msg.height = int(dense.shape[0])
    msg.width = int(dense.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(step)
    msg.data = dense.tobytes()
    return msg


def array_to_compressed_image(array: np.ndarray, fmt: str = 'jpeg', header=None, msg_type=None,
                              jpeg_quality: int = 95):
    """Encode a BGR, BGRA or grey array as JPEG or PNG in a sensor_msgs/CompressedImage.

    The array follows OpenCV's channel order, as ``cv2.imencode`` expects. JPEG takes 8-bit
    grey or BGR; PNG also takes BGRA and 16 bit. ``format`` is written as image_transport's
    compressed plugin writes it, for example 'bgr8; jpeg compressed bgr8'. ``msg_type`` is any
    class with the CompressedImage fields; by default sensor_msgs.msg.CompressedImage.
    """
    codec = _COMPRESSED_CODECS.get(fmt.strip().lower())
    if codec is None:
        raise ImageConversionError(
            f'unsupported compressed format {fmt!r}: expected jpeg, jpg or png')
    array = np.asarray(array)
    encoding = decoded_encoding(array)
    if codec == 'jpeg' and encoding not in ('mono8', 'bgr8'):
        raise ImageConversionError(
            f'JPEG takes mono8 or bgr8 arrays, got {encoding} (shape {array.shape}, dtype '
            f'{array.dtype}); use PNG or convert the array first')
    array = _check_array(array, encoding)
    if not 0 <= jpeg_quality <= 100:
        raise ImageConversionError(f'jpeg_quality must be 0-100, got {jpeg_quality}')

    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if codec == 'jpeg' else []
    extension = '.jpg' if codec == 'jpeg' else '.png'
    try:
        success, encoded = cv2.imencode(extension, array, params)
    except cv2.error as error:
        raise ImageConversionError(f'failed to encode {encoding} array as {codec}: {error}') \
            from None
    if not success:
        raise ImageConversionError(f'failed to encode {encoding} array as {codec}')

    if msg_type is None:
        from sensor_msgs.msg import CompressedImage
        msg_type = CompressedImage
    msg = msg_type()
    if header is not None:
        msg.header = header
    msg.format = f'{encoding}; {codec} compressed {encoding}'
    msg.data = encoded.tobytes()
    return msg
