"""Policy registry: build any scheduling rule by the name used in parameters and reports.

`make_policy(name, **options)` passes each policy only the options its constructor accepts, so
one option set (for example `w_pressure` and `max_queue_delay_ms`) can be given to every
policy of a benchmark. The EdgeServing family is imported on first use.
"""

import inspect
import typing

from edgeserving_ros.policies.base import Action, Policy, SchedulingContext
from edgeserving_ros.policies.baselines import (ClockworkPolicy, EdfPolicy, FifoPolicy,
                                                GreedyExitPolicy, RoundRobinPolicy,
                                                TritonPolicy)
from edgeserving_ros.policies.reference import ReferencePolicy

_BASELINES: dict[str, type[Policy]] = {
    'fifo': FifoPolicy,
    'round_robin': RoundRobinPolicy,
    'edf': EdfPolicy,
    'clockwork': ClockworkPolicy,
    'triton': TritonPolicy,
    'greedy_exit': GreedyExitPolicy,
    'reference': ReferencePolicy,
}

# Stability-score ablations: registry name -> the score term it disables.
_TERM_ABLATIONS = {
    'edgeserving_no_misses_now': 'misses_now',
    'edgeserving_no_misses_caused': 'misses_caused',
    'edgeserving_no_pressure': 'pressure',
    'edgeserving_no_accuracy': 'accuracy',
}

_EDGESERVING_FAMILY = ('edgeserving', 'edgeserving_no_exit', 'edgeserving_random',
                       *_TERM_ABLATIONS)

POLICY_NAMES: tuple[str, ...] = (*_EDGESERVING_FAMILY, *_BASELINES)

__all__ = ['Action', 'POLICY_NAMES', 'Policy', 'SchedulingContext', 'make_policy']


def make_policy(name: str, **options: typing.Any) -> Policy:
    """Build the policy registered as `name`.

    Options that the policy's constructor does not accept are ignored. Options that fix what an
    ablation is (`final_exit_only`, `disabled_terms`) are set by the name and override a caller's.
    The returned policy's `name` is the registry name. Raises ValueError for an unknown name.
    """
    if name in _BASELINES:
        policy = _construct(_BASELINES[name], options)
    elif name in _EDGESERVING_FAMILY:
        policy = _make_edgeserving(name, options)
    else:
        raise ValueError(f'unknown policy {name!r}; known policies: {", ".join(POLICY_NAMES)}')
    policy.name = name
    return policy


def _make_edgeserving(name: str, options: dict) -> Policy:
    from edgeserving_ros.policies import edgeserving

    if name == 'edgeserving_random':
        return edgeserving.RandomFeasiblePolicy(seed=options.get('seed', 0))
    fixed = {}
    if name == 'edgeserving_no_exit':
        fixed['final_exit_only'] = True
    elif name in _TERM_ABLATIONS:
        fixed['disabled_terms'] = (_TERM_ABLATIONS[name],)
    return _construct(edgeserving.EdgeServingPolicy, {**options, **fixed})


def _construct(policy_class: type[Policy], options: dict) -> Policy:
    parameters = inspect.signature(policy_class).parameters.values()
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return policy_class(**options)
    accepted = {parameter.name for parameter in parameters
                if parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                      inspect.Parameter.KEYWORD_ONLY)}
    return policy_class(**{key: value for key, value in options.items() if key in accepted})
