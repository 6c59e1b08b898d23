"""Real image sources for the player: an image folder, a ROS 1 or ROS 2 bag, sample photographs.

Every source returns a list of `Frame` objects in memory, bounded by a maximum count, so that the
player can pre-build its messages once and publish them at a high rate. This module imports
neither rclpy nor torch.
"""

import dataclasses
import pathlib

import cv2
import numpy as np

from edgeserving_ros import image_conversion

IMAGE_SUFFIXES = frozenset({'.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.pgm', '.tif', '.tiff'})

# Photographs bundled with the scikit-image wheel (skimage/data), so they load without a
# download: an astronaut (NASA), a cat, a cup of coffee, a rocket launch, a camera man (grey),
# Greek coins (grey), the Hubble deep field and an immunohistochemistry micrograph.
SAMPLE_PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'camera', 'coins',
                 'hubble_deep_field', 'immunohistochemistry')

_COMPRESSED_IMAGE_TYPE = 'sensor_msgs/msg/CompressedImage'
_RAW_IMAGE_TYPE = 'sensor_msgs/msg/Image'
_IMAGE_TYPES = (_COMPRESSED_IMAGE_TYPE, _RAW_IMAGE_TYPE)


class ImageSourceError(ValueError):
    """An image source that cannot be read: missing, empty, or holding no usable images."""


@dataclasses.dataclass
class Frame:
    """One source image.

    `image` is uint8 in OpenCV order: HxW (grey) or HxWx3 (BGR). `label` is the true class
    where the source provides one (the parent folder of a labelled image folder), else None.
    `recorded_s` is the bag's receive time of the message in seconds (None for other sources).
    `compressed` keeps a bag's original CompressedImage data and `compressed_format` its
    format field, so that the player can republish them unchanged.
    """

    image: np.ndarray
    name: str
    label: str | None = None
    recorded_s: float | None = None
    compressed: bytes | None = None
    compressed_format: str = ''


def load_sample_photos(names: tuple[str, ...] = SAMPLE_PHOTOS) -> list[Frame]:
    """Load scikit-image's bundled sample photographs as BGR or grey frames without labels."""
    import skimage.data

    frames = []
    for name in names:
        loader = getattr(skimage.data, name, None)
        if loader is None:
            raise ImageSourceError(f'skimage.data has no sample image {name!r}')
        image = np.asarray(loader())
        if image.dtype != np.uint8:
            raise ImageSourceError(f'sample image {name!r} has dtype {image.dtype}; '
                                   'expected uint8')
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        frames.append(Frame(image=np.ascontiguousarray(image), name=f'skimage:{name}'))
    return frames


def load_image_folder(root: str | pathlib.Path, max_images: int = 1000,
                      seed: int = 0) -> list[Frame]:
    """Load up to `max_images` images found recursively under `root`, in a seeded random order.

    An image's label is the name of its parent folder (the ImageFolder layout
    `<root>/<class>/<file>`); images directly in `root` have no label. When the folder contains
    more than `max_images` images, a seeded random subset is taken, so classes stay mixed.
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise ImageSourceError(f'image folder not found: {root}')
    if max_images < 1:
        raise ImageSourceError(f'max_images must be at least 1, got {max_images}')

    paths = sorted(path for path in root.rglob('*')
                   if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    if not paths:
        raise ImageSourceError(
            f'no images ({", ".join(sorted(IMAGE_SUFFIXES))}) found under {root}')
    order = np.random.default_rng(seed).permutation(len(paths))[:max_images]

    frames = []
    for index in order:
        path = paths[index]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ImageSourceError(f'failed to decode image file {path}')
        label = path.parent.name if path.parent != root else None
        frames.append(Frame(image=image, name=str(path.relative_to(root)), label=label))
    return frames


def load_bag(path: str | pathlib.Path, topic: str | None = None,
             max_frames: int = 10_000) -> list[Frame]:
    """Read the first `max_frames` image messages of one topic of a ROS 1 or ROS 2 bag.

    `path` is a ROS 1 `.bag` file or a rosbag2 folder (sqlite3 or MCAP storage). Messages of
    type sensor_msgs/CompressedImage keep their original data for republishing and are decoded
    to grey or BGR; sensor_msgs/Image messages are converted to BGR. Without `topic` the bag
    must contain exactly one image topic. A path that is not a readable bag raises
    ImageSourceError.
    """
    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag1 import ReaderError as Rosbag1ReaderError
    from rosbags.rosbag2 import ReaderError as Rosbag2ReaderError

    path = pathlib.Path(path)
    if not path.exists():
        raise ImageSourceError(f'bag not found: {path}')
    if max_frames < 1:
        raise ImageSourceError(f'max_frames must be at least 1, got {max_frames}')

    try:
        frames, connections = _read_bag_images(path, topic, max_frames)
    except (AnyReaderError, Rosbag1ReaderError, Rosbag2ReaderError, OSError) as error:
        # A rosbag2 folder without metadata.yaml raises FileNotFoundError; a file that is not a
        # bag raises AnyReaderError.
        raise ImageSourceError(f'cannot read bag {path}: {error}') from None
    if not frames:
        raise ImageSourceError(f'bag {path} contains no messages on {connections[0].topic}')
    return frames


def _read_bag_images(path: pathlib.Path, topic: str | None,
                     max_frames: int) -> tuple[list[Frame], list]:
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    # The default type store decodes ROS 2 bags that carry no message definitions; ROS 1 bags
    # carry their own definitions.
    with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_HUMBLE)) as reader:
        connections = _select_image_connections(reader.connections, topic, path)
        frames = []
        for connection, timestamp_ns, raw in reader.messages(connections=connections):
            message = reader.deserialize(raw, connection.msgtype)
            frames.append(_bag_message_to_frame(message, connection.msgtype,
                                                f'{path.name}#{len(frames)}',
                                                timestamp_ns / 1e9))
            if len(frames) >= max_frames:
                break
    return frames, connections


def _select_image_connections(connections, topic: str | None, path: pathlib.Path) -> list:
    images = [connection for connection in connections if connection.msgtype in _IMAGE_TYPES]
    topics = sorted({connection.topic for connection in images})
    if topic is not None:
        # ROS 1 bags may store topic names without the leading slash.
        wanted = topic.lstrip('/')
        images = [connection for connection in images
                  if connection.topic.lstrip('/') == wanted]
        if not images:
            raise ImageSourceError(f'bag {path} has no image topic {topic!r}; image topics: '
                                   f'{", ".join(topics) or "none"}')
    elif len(topics) != 1:
        raise ImageSourceError(f'bag {path} has {len(topics)} image topics '
                               f'({", ".join(topics) or "none"}); choose one with --bag-topic')
    return images


def _bag_message_to_frame(message, msgtype: str, name: str, recorded_s: float) -> Frame:
    if msgtype == _COMPRESSED_IMAGE_TYPE:
        data = np.asarray(message.data, dtype=np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ImageSourceError(f'failed to decode {name} (format {message.format!r})')
        if image.dtype != np.uint8 or image.ndim == 3 and image.shape[2] != 3:
            rgb = image_conversion.to_rgb8(image, image_conversion.decoded_encoding(image))
            image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        return Frame(image=image, name=name, recorded_s=recorded_s,
                     compressed=data.tobytes(), compressed_format=str(message.format))

    try:
        rgb = image_conversion.frame_to_rgb8(message)
    except image_conversion.ImageConversionError as error:
        raise ImageSourceError(f'cannot convert {name}: {error}') from None
    return Frame(image=cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), name=name, recorded_s=recorded_s)
