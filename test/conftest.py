"""Shared fixtures for tests that use ROS 2: isolation check, rclpy contexts, shared memory.

Tests that talk DDS must run inside the private network namespace that tools/run-isolated
creates, as `make test` does. Outside it, the fixtures here fail such a test, so it never
talks DDS on the host network. rclpy is imported only inside the fixtures, so ROS-free tests
never load it.
"""

import contextlib
import os
import pathlib

import pytest

SHM_FOLDER = pathlib.Path('/dev/shm')
FASTDDS_SHM_PATTERN = 'fastdds_*'


def require_isolation() -> None:
    """Fail the calling test unless it runs inside tools/run-isolated."""
    if os.environ.get('EDGESERVING_ISOLATED') != '1':
        pytest.fail('this test uses ROS 2 and must run inside the private network namespace: '
                    'run it through `make test` or `tools/run-isolated .venv/bin/python -m '
                    'pytest ...`')


@contextlib.contextmanager
def ros_context(args=None, domain_id=None):
    """Yield a fresh, initialised rclpy Context; shut it down however the block ends."""
    require_isolation()
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(args=args, context=context, domain_id=domain_id)
    try:
        yield context
    finally:
        context.try_shutdown()


@pytest.fixture
def ros_isolation():
    """Fail the test unless it runs inside tools/run-isolated."""
    require_isolation()


@pytest.fixture
def rclpy_context():
    """An initialised rclpy Context of its own, shut down after the test."""
    with ros_context() as context:
        yield context


@pytest.fixture
def fastdds_shm_cleanup():
    """Remove Fast DDS shared-memory files left by processes a test started and killed.

    A process that ends without shutting down rclpy leaves its Fast DDS segments (about 17 MB)
    in /dev/shm. After the test, files that appeared during it are removed unless a running
    process has them mapped or open, so the files of live participants (this process's too) stay.
    """
    before = set(SHM_FOLDER.glob(FASTDDS_SHM_PATTERN))
    yield
    appeared = set(SHM_FOLDER.glob(FASTDDS_SHM_PATTERN)) - before
    if not appeared:
        return
    in_use = _paths_in_use()
    for path in appeared:
        if str(path) not in in_use:
            path.unlink(missing_ok=True)


def _paths_in_use() -> set[str]:
    """Return the /dev/shm paths that any process has mapped or open."""
    used = set()
    for process in pathlib.Path('/proc').iterdir():
        if not process.name.isdigit():
            continue
        try:
            with open(process / 'maps', encoding='utf-8', errors='replace') as maps:
                for line in maps:
                    if '/dev/shm/' in line:
                        used.add(line.split(None, 5)[-1].strip())
            for descriptor in (process / 'fd').iterdir():
                target = os.readlink(descriptor)
                if target.startswith('/dev/shm/'):
                    used.add(target)
        except OSError:
            continue  # the process ended or is not readable
    return used


@pytest.fixture(scope='session')
def make_ros_context():
    """The `ros_context` context manager, for fixtures of module or session scope."""
    return ros_context


@pytest.fixture(scope='module')
def torch_one_thread():
    """Run a module's torch work on one thread, as the shipped profile was measured."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
