"""Run the benchmark: `python -m edgeserving_ros.bench`."""

import sys

from edgeserving_ros.bench.cli import main

sys.exit(main())
