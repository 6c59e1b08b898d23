"""The EdgeServing policy (stability score) and its random-choice ablation."""

import random
import typing

import numpy as np

from edgeserving_ros.policies import stability_score
from edgeserving_ros.policies.base import (Action, Policy, Queues, SchedulingContext,
                                           non_empty_streams)
from edgeserving_ros.profile import LatencyModel
from edgeserving_ros.requests import Request

SCORE_TERMS = ('misses_now', 'misses_caused', 'pressure', 'accuracy')

# Defaults chosen by edgeserving_ros.bench.weight_sweep on training seeds; see docs/scheduler.md.
DEFAULT_W_PRESSURE = 0.3
DEFAULT_W_ACCURACY = 0.3

# Misses now are judged at this profiled latency quantile (times the online correction), so a
# batch planned to end just before its head's deadline counts as a miss unless its slow tail
# also fits. The other terms use the context's latency quantile, as the scheduler does.
MISS_QUANTILE = 'p99'

# Cached candidate sets (one per combination of streams, exits and batch limits seen).
_CANDIDATE_CACHE_SIZE = 4096


class _Candidates(typing.NamedTuple):
    stream_index: np.ndarray
    exit_index: np.ndarray
    batch_size: np.ndarray
    busy_s: np.ndarray
    miss_busy_s: np.ndarray
    loss_per_request: np.ndarray


class _LatencyTables:
    """Per-(model, exit) latency arrays for batch sizes 1..max, cached per latency model.

    Arrays hold uncorrected seconds; callers multiply by the current correction factor, so the
    cache stays valid while the online correction moves.
    """

    def __init__(self):
        self._latency: LatencyModel | None = None
        self._miss_latency: LatencyModel | None = None
        self._tables: dict[tuple, np.ndarray] = {}

    def bind(self, latency: LatencyModel) -> bool:
        """Use `latency` from now on; return True when that dropped the cached tables."""
        if latency is self._latency:
            return False
        self._latency = latency
        self._miss_latency = LatencyModel(latency.profile, MISS_QUANTILE)
        self._tables.clear()
        return True

    def batch_latency_s(self, model: str, exit_index: int, max_batch: int) -> np.ndarray:
        """Return [L(1), ..., L(max_batch)] at the context quantile, uncorrected."""
        return self._table('busy', self._latency, model, exit_index, max_batch)

    def miss_latency_s(self, model: str, exit_index: int, max_batch: int) -> np.ndarray:
        """Return the same array at MISS_QUANTILE, uncorrected."""
        return self._table('miss', self._miss_latency, model, exit_index, max_batch)

    def priced_work_s(self, model: str, exit_index: int, max_batch: int,
                      count: int) -> np.ndarray:
        """Return [C(0), ..., C(count)]: batched work of n requests, uncorrected."""
        key = ('work', model, exit_index, max_batch)
        table = self._tables.get(key)
        if table is None or len(table) <= count:
            latencies = self.batch_latency_s(model, exit_index, max_batch)
            sizes = max(count + 1, 2 * len(table) if table is not None else 64)
            table = np.array([stability_score.batched_work_s(n, latencies)
                              for n in range(sizes)])
            self._tables[key] = table
        return table[:count + 1]

    def _table(self, kind: str, latency: LatencyModel, model: str, exit_index: int,
               max_batch: int) -> np.ndarray:
        key = (kind, model, exit_index, max_batch)
        table = self._tables.get(key)
        if table is None:
            table = np.array([latency.uncorrected_s(model, exit_index, batch_size)
                              for batch_size in range(1, max_batch + 1)])
            self._tables[key] = table
        return table


class EdgeServingPolicy(Policy):
    """Choose the action with the lowest stability score over the whole action space.

    The action space is every non-empty stream x every allowed exit x every batch size from 1
    to min(queue length, max_batch). The score of an action (lower is better) is

        misses_now + misses_caused + w_pressure * pressure + w_accuracy * accuracy_cost,

    with the terms of `stability_score` (formulas there and in docs/scheduler.md). Doomed
    requests are dropped by the scheduler before each decision. `final_exit_only` restricts
    the exits to the final one (an ablation; doomed is then judged at the final exit too), and
    `disabled_terms` removes terms from the score (ablations). Ties go to the candidate listed
    first: streams in queue order, deeper exits first, larger batches first.
    """

    name = 'edgeserving'
    drops_doomed = True

    def __init__(self, w_pressure: float = DEFAULT_W_PRESSURE,
                 w_accuracy: float = DEFAULT_W_ACCURACY, final_exit_only: bool = False,
                 disabled_terms: typing.Iterable[str] = (), seed: int = 0):
        disabled = tuple(disabled_terms)
        unknown = [term for term in disabled if term not in SCORE_TERMS]
        if unknown:
            raise ValueError(f'unknown score terms {unknown}; expected some of '
                             f'{", ".join(SCORE_TERMS)}')
        for name, weight in (('w_pressure', w_pressure), ('w_accuracy', w_accuracy)):
            if not weight >= 0.0:
                raise ValueError(f'{name} is {weight}; expected a number >= 0')
        self.w_pressure = float(w_pressure)
        self.w_accuracy = float(w_accuracy)
        self.final_exit_only = final_exit_only
        self.disabled_terms = frozenset(disabled)
        # The score is deterministic; `seed` is accepted so that every policy takes one.
        self.seed = seed
        self._tables = _LatencyTables()
        self._blocks: dict[tuple, tuple[_Candidates, list, list]] = {}

    def exits(self, stream: str, context: SchedulingContext) -> tuple[int, ...]:
        """Return the exits this policy may use for a stream, shallowest first."""
        if self.final_exit_only:
            return (context.final_exit(stream),)
        return context.allowed_exits(stream)

    def is_doomed(self, request: Request, now: float, context: SchedulingContext) -> bool:
        stream = request.stream
        fastest = self.exits(stream, context)[0]
        return now + context.latency_s(stream, fastest, 1) > request.deadline_s

    def decide(self, now: float, queues: Queues, context: SchedulingContext) -> Action | None:
        streams = non_empty_streams(queues)
        if not streams:
            return None
        if self._tables.bind(context.latency):
            self._blocks.clear()
        terms, candidates = self._evaluate(now, queues, context, streams)
        scores = self._combine(terms)
        best = int(np.argmin(scores))
        return Action(streams[int(candidates.stream_index[best])],
                      int(candidates.exit_index[best]), int(candidates.batch_size[best]))

    def candidate_terms(self, now: float, queues: Queues,
                        context: SchedulingContext) -> list[tuple[Action, dict]]:
        """Return every candidate action with its four terms and score, as `decide` sees them.

        The order is the tie-break order of `decide`. An empty list when every queue is empty.
        """
        streams = non_empty_streams(queues)
        if not streams:
            return []
        if self._tables.bind(context.latency):
            self._blocks.clear()
        terms, candidates = self._evaluate(now, queues, context, streams)
        scores = self._combine(terms)
        rows = []
        for k in range(len(scores)):
            action = Action(streams[int(candidates.stream_index[k])],
                            int(candidates.exit_index[k]), int(candidates.batch_size[k]))
            rows.append((action, {'misses_now': float(terms.misses_now[k]),
                                  'misses_caused': float(terms.misses_caused[k]),
                                  'pressure': float(terms.pressure[k]),
                                  'accuracy_cost': float(terms.accuracy_cost[k]),
                                  'score': float(scores[k])}))
        return rows

    def score_breakdown(self, now: float, queues: Queues, context: SchedulingContext,
                        action: Action) -> dict:
        """Return each term of `action`'s score, the score and the misses it predicts.

        Computed with the scalar reference functions of `stability_score`, independently of
        the vectorised path `decide` uses. `predicted_misses` is misses_now + misses_caused;
        `pressure_implied_misses` is the fluid lower estimate of further misses the remaining
        demand implies (see `stability_score.pressure_implied_misses`).
        """
        if self._tables.bind(context.latency):
            self._blocks.clear()
        queue = queues[action.stream]
        batch = queue.peek(action.batch_size)
        busy_s = context.latency_s(action.stream, action.exit_index, len(batch))
        miss_busy_s = self._miss_latency_s(context, action.stream, action.exit_index, len(batch))

        works = []
        remaining = []
        for name, stream_queue in queues.items():
            left = stream_queue.peek(len(stream_queue))
            if name == action.stream:
                left = left[len(batch):]
            doom_s = context.latency_s(name, self.exits(name, context)[0], 1)
            remaining.extend((request.deadline_s, doom_s) for request in left)
            works.append(self._stream_work(name, stream_queue, context,
                                           [request.deadline_s for request in left], doom_s))

        model_exits = self.exits(action.stream, context)
        if action.exit_index not in model_exits:
            raise ValueError(f'exit {action.exit_index} of stream {action.stream!r} is not '
                             f'allowed for this policy; allowed: {model_exits}')
        final = context.final_exit(action.stream)
        loss = stability_score.exit_accuracy_loss(
            context.accuracy(action.stream, action.exit_index),
            context.accuracy(action.stream, final), action.exit_index == final)

        terms = {
            'misses_now': float(stability_score.misses_now(
                (request.deadline_s for request in batch), now, miss_busy_s)),
            'misses_caused': float(stability_score.misses_caused(remaining, now, busy_s)),
            'pressure': stability_score.pressure(works, now, busy_s),
            'accuracy_cost': stability_score.accuracy_cost(len(batch), loss),
        }
        breakdown = dict(terms)
        breakdown['score'] = float(self._combine(stability_score.CandidateTerms(
            misses_now=np.array([terms['misses_now']]),
            misses_caused=np.array([terms['misses_caused']]),
            pressure=np.array([terms['pressure']]),
            accuracy_cost=np.array([terms['accuracy_cost']])))[0])
        breakdown['predicted_misses'] = terms['misses_now'] + terms['misses_caused']
        breakdown['pressure_implied_misses'] = stability_score.pressure_implied_misses(
            works, now, busy_s)
        breakdown['busy_s'] = busy_s
        breakdown['w_pressure'] = self.w_pressure
        breakdown['w_accuracy'] = self.w_accuracy
        return breakdown

    def _combine(self, terms: stability_score.CandidateTerms) -> np.ndarray:
        score = np.zeros(len(terms.misses_now))
        if 'misses_now' not in self.disabled_terms:
            score += terms.misses_now
        if 'misses_caused' not in self.disabled_terms:
            score += terms.misses_caused
        if 'pressure' not in self.disabled_terms:
            score += self.w_pressure * terms.pressure
        if 'accuracy' not in self.disabled_terms:
            score += self.w_accuracy * terms.accuracy_cost
        return score

    def _evaluate(self, now: float, queues: Queues, context: SchedulingContext,
                  streams: list[str]) -> tuple[stability_score.CandidateTerms, _Candidates]:
        deadlines = [np.array(queues[name].deadlines()) for name in streams]
        exits = tuple(self.exits(name, context) for name in streams)
        limits = tuple(min(len(queue_deadlines), context.streams[name].max_batch)
                       for name, queue_deadlines in zip(streams, deadlines))
        candidates = self._candidates(context, tuple(streams), exits, limits)
        doom_latency_s = np.array([context.latency_s(name, stream_exits[0], 1)
                                   for name, stream_exits in zip(streams, exits)])
        priced_work = [self._priced_work_s(context, name, len(queue_deadlines))
                       for name, queue_deadlines in zip(streams, deadlines)]

        points_s = np.sort(np.concatenate(deadlines))
        arrival_work_s = self._arrival_work_s(now, queues, context, points_s)
        terms = stability_score.evaluate_candidates(
            now, deadlines, doom_latency_s, priced_work, arrival_work_s,
            candidates.stream_index, candidates.batch_size, candidates.busy_s,
            candidates.miss_busy_s, candidates.loss_per_request)
        return terms, candidates

    def _candidates(self, context: SchedulingContext, streams: tuple[str, ...],
                    exits: tuple[tuple[int, ...], ...], limits: tuple[int, ...]) -> _Candidates:
        """Return every candidate action, with latencies scaled by the current correction.

        Streams in the given order; per stream deeper exits first, larger batches first.
        Everything but the correction factors is cached per (streams, exits, batch limits).
        """
        key = (streams, exits, limits)
        cached = self._blocks.get(key)
        if cached is None:
            if len(self._blocks) >= _CANDIDATE_CACHE_SIZE:
                self._blocks.clear()
            cached = self._build_candidates(context, streams, exits, limits)
            self._blocks[key] = cached
        static, factor_keys, lengths = cached
        correction = context.latency.correction
        factors = np.repeat([correction.factor(model, exit_index)
                             for model, exit_index in factor_keys], lengths)
        return static._replace(busy_s=static.busy_s * factors,
                               miss_busy_s=static.miss_busy_s * factors)

    def _build_candidates(self, context: SchedulingContext, streams: tuple[str, ...],
                          exits: tuple[tuple[int, ...], ...],
                          limits: tuple[int, ...]) -> tuple[_Candidates, list, list]:
        parts = {field: [] for field in _Candidates._fields}
        factor_keys = []
        lengths = []
        for q, (name, stream_exits, batch_limit) in enumerate(zip(streams, exits, limits)):
            model = context.model_of(name)
            final = context.final_exit(name)
            final_accuracy = context.accuracy(name, final)
            max_batch = context.streams[name].max_batch
            sizes = np.arange(batch_limit, 0, -1)
            for exit_index in reversed(stream_exits):
                busy = self._tables.batch_latency_s(model, exit_index, max_batch)
                miss = self._tables.miss_latency_s(model, exit_index, max_batch)
                loss = stability_score.exit_accuracy_loss(
                    context.accuracy(name, exit_index), final_accuracy, exit_index == final)
                parts['stream_index'].append(np.full(batch_limit, q))
                parts['exit_index'].append(np.full(batch_limit, exit_index))
                parts['batch_size'].append(sizes)
                parts['busy_s'].append(busy[batch_limit - 1::-1])
                parts['miss_busy_s'].append(miss[batch_limit - 1::-1])
                parts['loss_per_request'].append(np.full(batch_limit, loss))
                factor_keys.append((model, exit_index))
                lengths.append(batch_limit)
        static = _Candidates(*(np.concatenate(parts[field]) for field in _Candidates._fields))
        return static, factor_keys, lengths

    def _priced_work_s(self, context: SchedulingContext, name: str, count: int) -> np.ndarray:
        model = context.model_of(name)
        final = context.final_exit(name)
        factor = context.latency.correction.factor(model, final)
        max_batch = context.streams[name].max_batch
        return self._tables.priced_work_s(model, final, max_batch, count) * factor

    def _arrival_work_s(self, now: float, queues: Queues, context: SchedulingContext,
                        points_s: np.ndarray) -> np.ndarray:
        work_s = np.zeros(len(points_s))
        latest_s = points_s[-1] - now
        for name, queue in queues.items():
            # Arrivals after now are due after now + slo, beyond every point when
            # latest_s <= slo (the usual case: every queued deadline is at most one SLO away).
            if latest_s <= context.streams[name].slo_s:
                continue
            rate_hz = context.arrival_rate_hz(name, queue)
            if rate_hz <= 0.0:
                continue
            per_request_s = self._per_request_s(context, name)
            expected = rate_hz * np.maximum(0.0, points_s - context.streams[name].slo_s - now)
            work_s += expected * per_request_s
        return work_s

    def _per_request_s(self, context: SchedulingContext, name: str) -> float:
        max_batch = context.streams[name].max_batch
        return context.latency_s(name, context.final_exit(name), max_batch) / max_batch

    def _miss_latency_s(self, context: SchedulingContext, name: str, exit_index: int,
                        batch_size: int) -> float:
        model = context.model_of(name)
        max_batch = max(context.streams[name].max_batch, batch_size)
        table = self._tables.miss_latency_s(model, exit_index, max_batch)
        return float(table[batch_size - 1]) * context.latency.correction.factor(model, exit_index)

    def _stream_work(self, name: str, queue, context: SchedulingContext,
                     deadlines_s: list[float], doom_s: float) -> stability_score.StreamWork:
        model = context.model_of(name)
        final = context.final_exit(name)
        max_batch = context.streams[name].max_batch
        factor = context.latency.correction.factor(model, final)
        latencies = self._tables.batch_latency_s(model, final, max_batch) * factor
        return stability_score.StreamWork(
            deadlines_s=deadlines_s, batch_latency_s=[float(x) for x in latencies],
            doom_latency_s=doom_s, arrival_rate_hz=context.arrival_rate_hz(name, queue),
            slo_s=context.streams[name].slo_s)


class RandomFeasiblePolicy(Policy):
    """Choose uniformly among all actions of EdgeServing's action space (an ablation).

    Every (non-empty stream, allowed exit, batch size from 1 to min(queue length, max_batch))
    is equally likely. Doomed requests are dropped as for EdgeServing, so only the choice
    differs. The generator is re-seeded with `seed` on `reset`, so a run is reproducible.
    """

    name = 'edgeserving_random'
    drops_doomed = True

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._rng = random.Random(seed)

    def reset(self) -> None:
        self._rng = random.Random(self.seed)

    def decide(self, now: float, queues: Queues, context: SchedulingContext) -> Action | None:
        options = []
        for name in non_empty_streams(queues):
            batch_limit = min(len(queues[name]), context.streams[name].max_batch)
            for exit_index in context.allowed_exits(name):
                options.append((name, exit_index, batch_limit))
        if not options:
            return None
        total = sum(batch_limit for _, _, batch_limit in options)
        pick = self._rng.randrange(total)
        for name, exit_index, batch_limit in options:
            if pick < batch_limit:
                return Action(name, exit_index, pick + 1)
            pick -= batch_limit
        raise AssertionError('unreachable: pick is below the total count of actions')
