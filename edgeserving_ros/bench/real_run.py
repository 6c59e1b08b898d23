"""Real run: the paper-like mix through the real node and DDS, compared with the simulator.

The demo's orchestration (edgeserving_ros.demo) starts the node with config/serve.yaml (three
CIFAR ResNets, pretrained weights, trained exit heads) and the player, which publishes real
CIFAR-10 test images at periodic rates 3:2:1 summing to `load` x the final-exit capacity of
the profile. For each policy the node's metrics summary is compared with a simulation of the
same streams, rates and duration with the same profile: periodic arrivals with random phase
and no jitter, noisy profiled service times, no decision delay. The simulation leaves out
what only the real pipeline has (image decoding, DDS transport, the node's timer tick,
interference from other processes), which is what the comparison shows.

Must run inside tools/run-isolated, because the node and the player talk DDS.
"""

import dataclasses
import os
import pathlib

from edgeserving_ros import workloads
from edgeserving_ros.config import ServeConfig
from edgeserving_ros.policies import make_policy
from edgeserving_ros.profile import load_profile
from edgeserving_ros.simulator import ProfileLatencySampler, simulate

REAL_POLICIES = ('edgeserving', 'reference', 'clockwork', 'edf', 'fifo')
SIMULATION_SEEDS = (0, 1, 2)


class RealRunError(RuntimeError):
    """The real run cannot start (not isolated, no data) or a process failed."""


def _rates(plan, profile, load: float) -> dict[str, float]:
    """Split `load` x final-exit capacity over the plan's streams at rates 3:2:1."""
    streams = plan.stream_names()
    weights = [workloads.PAPER_RATE_RATIO[i % 3] for i in range(len(streams))]
    models = [plan.model_of(stream) for stream in streams]
    capacity_hz = workloads.final_exit_capacity_hz(
        profile, models, [w / sum(weights) for w in weights], max_batch=10)
    return {stream: load * capacity_hz * w / sum(weights) for stream, w in zip(streams, weights)}


def simulate_counterpart(plan, profile, rates_hz: dict[str, float], duration_s: float,
                         policy: str, seed: int) -> dict:
    """Simulate the real run's streams and rates; return the totals of the metrics."""
    config = ServeConfig.from_parameters(plan.parameters)
    streams = {name: dataclasses.replace(stream, expected_rate_hz=rates_hz[name])
               for name, stream in config.streams.items()}
    trace = workloads.merge(*[
        workloads.periodic(name, rates_hz[name], duration_s, seed=seed * 100 + index)
        for index, name in enumerate(streams)])
    result = simulate(trace, streams, profile, make_policy(policy),
                      service_time=ProfileLatencySampler(profile, noise=True, seed=seed),
                      seed=seed)
    return result.metrics.totals()


def _mean_totals(rows: list[dict]) -> dict:
    averaged = {}
    for name in ('violation_ratio', 'p95_ms', 'delivered_accuracy', 'offered'):
        values = [row[name] for row in rows if row.get(name) is not None]
        averaged[name] = sum(values) / len(values) if values else None
    return averaged


def run_real(profile_path: pathlib.Path, duration_s: float, load: float,
             work_dir: pathlib.Path, policies: tuple[str, ...] = REAL_POLICIES,
             progress: bool = True) -> dict:
    """Serve the workload with each policy on the real node; return real and simulated figures.

    Raises RealRunError outside tools/run-isolated or without the data folder.
    """
    if os.environ.get('EDGESERVING_ISOLATED') != '1':
        raise RealRunError('the real run starts ROS 2 processes: run it inside '
                           'tools/run-isolated')
    from edgeserving_ros import demo
    from tqdm import tqdm

    profile = load_profile(profile_path)
    plan = demo.plan_demo(demo.default_config_file(), [1.0] * 3)
    if plan.images is None or not plan.weights_trained:
        raise RealRunError('the real run needs the CIFAR-10 images and ResNet weights of the '
                           'data folder (set EDGESERVING_DATA)')
    rates_hz = _rates(plan, profile, load)
    plan = dataclasses.replace(plan, rates_hz=rates_hz, profile_path=pathlib.Path(profile_path))

    rows = []
    for policy in tqdm(policies, desc='real run', disable=not progress, unit='policy'):
        policy_dir = pathlib.Path(work_dir) / policy
        policy_dir.mkdir(parents=True, exist_ok=True)
        try:
            summary, stats, _, _ = demo.run_demo(plan, policy, duration_s, policy_dir,
                                                 policy_dir)
        except demo.DemoError as error:
            raise RealRunError(f'real run of policy {policy!r} failed: {error}') from error
        simulated = _mean_totals([simulate_counterpart(plan, profile, rates_hz, duration_s,
                                                       policy, seed)
                                  for seed in SIMULATION_SEEDS])
        totals = summary['totals']
        published = sum(entry['published'] for entry in stats['topics'].values())
        rows.append({
            'policy': policy,
            'real': {'violation_ratio': totals['violation_ratio'], 'p95_ms': totals['p95_ms'],
                     'delivered_accuracy': totals['delivered_accuracy'],
                     'offered': totals['offered'], 'published': published,
                     'rejected_inputs': sum(row.get('rejected_inputs', 0)
                                            for row in summary['streams']),
                     'latency_correction': summary.get('latency_correction', {})},
            'simulated': simulated,
        })
    return {
        'description': (
            f'Three CIFAR ResNets (pretrained) on real CIFAR-10 test images, published by the '
            f'player at periodic rates {", ".join(f"{r:.1f}" for r in rates_hz.values())} Hz '
            f'(load {load} of the profile\'s final-exit capacity) for {duration_s:g} s per '
            f'policy, served by the node on this CPU over DDS (loopback, isolated network '
            f'namespace). "sim" is the simulator on the same streams, rates, duration and '
            f'profile, mean of {len(SIMULATION_SEEDS)} seeds. Real violations count frames the '
            'node received; frames lost in transport are not offered.'),
        'load': load,
        'duration_s': duration_s,
        'rates_hz': rates_hz,
        'rows': rows,
    }
