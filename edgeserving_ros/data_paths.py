"""Location of the optional real data set (CIFAR-10 images, pretrained weights, robot bag).

The data is not part of the package: a clone of the repository does not contain it. Code that can
use it looks it up here, so one environment variable points every tool and test at another copy.
"""

import os
import pathlib

DATA_ENV_VAR = 'EDGESERVING_DATA'

_REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def data_root() -> pathlib.Path:
    """Return the data folder: $EDGESERVING_DATA, else ../shared/data beside the repository.

    The folder may not exist; callers check the sub-paths they need.
    """
    configured = os.environ.get(DATA_ENV_VAR)
    if configured:
        return pathlib.Path(configured).expanduser().resolve()
    return (_REPO_ROOT.parent / 'shared' / 'data').resolve()


def data_path(relative_path: str) -> pathlib.Path | None:
    """Return the path of a data item, or None when it is missing."""
    path = data_root() / relative_path
    return path if path.exists() else None


def require_data(relative_path: str) -> pathlib.Path:
    """Return the path of a data item a test needs, or end the test.

    Missing data fails the test under CI (the environment variable CI is set), because CI must
    exercise the real data. Elsewhere the test is skipped with the path that was looked for.
    """
    import pytest

    path = data_path(relative_path)
    if path is not None:
        return path

    reason = (f'data not found: {data_root() / relative_path} '
              f'(set {DATA_ENV_VAR} to the folder that contains {relative_path})')
    if os.environ.get('CI'):
        pytest.fail(reason)
    pytest.skip(reason)
