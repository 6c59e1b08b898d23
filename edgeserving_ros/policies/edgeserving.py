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
DEFAULT_W_PRESSURE = 1.0
DEFAULT_W_ACCURACY = 1.0

# Cached candidate sets (one per combination of streams, exits and batch limits seen).
_CANDIDATE_CACHE_SIZE = 4096


class _Candidates(typing.NamedTuple):
    stream_index: np.ndarray
    exit_index: np.ndarray
    batch_size: np.ndarray
    busy_s: np.ndarray
    loss_per_request: np.ndarray


class _LatencyTables:
    """Per-(model, exit) latency arrays for batch sizes 1..max, cached per latency model.

    Arrays hold uncorrected seconds; callers multiply by the current correction factor, so the
    cache stays valid while the online correction moves.
    """

    def __init__(self):
        self._latency: LatencyModel | None = None
        self._tables: dict[tuple, np.ndarray] = {}

    def bind(self, latency: LatencyModel) -> bool:
        """Use `latency` from now on; return True when that dropped the cached tables."""
        if latency is self._latency:
            return False
        self._latency = latency
        self._tables.clear()
        return True

    def batch_latency_s(self, model: str, exit_index: int, max_batch: int) -> np.ndarray:
        """Return [L(1), ..., L(max_batch)] at the latency model's quantile, uncorrected."""
        key = ('latency', model, exit_index, max_batch)
        table = self._tables.get(key)
        if table is None:
            table = np.array([self._latency.uncorrected_s(model, exit_index, batch_size)
                              for batch_size in range(1, max_batch + 1)])
            self._tables[key] = table
        return table

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


class EdgeServingPolicy(Policy):
    """Choose the action with the lowest stability score over the whole action space.

    The action space is every non-empty stream x every allowed exit x every batch size from 1
    to min(queue length, max_batch). The score of an action (lower is better) is

        misses_now + misses_caused + w_pressure * pressure + w_accuracy * accuracy_cost,

    with the terms of `stability_score` (formulas there and in docs/scheduler.md). Doomed
    requests are dropped by the scheduler before each decision. Two options build ablations:
    `final_exit_only` restricts the exits to the final one and then also judges doomed
    requests at the final exit, and `disabled_terms` removes terms from the score. Ties go to
    the candidate listed first: streams in queue order, deeper exits first, larger batches
    first.
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
        """Tell whether the request is late even if served alone now at this policy's fastest
        exit (the final exit when `final_exit_only`)."""
        stream = request.stream
        fastest = self.exits(stream, context)[0]
        return now + context.latency_s(stream, fastest, 1) > request.deadline_s

    def decide(self, now: float, queues: Queues, context: SchedulingContext) -> Action | None:
        if not non_empty_streams(queues):
            return None
        self._use(context)
        terms, candidates, names = self._evaluate(now, queues, context)
        scores = self._combine(terms)
        best = int(np.argmin(scores))
        return Action(names[int(candidates.stream_index[best])],
                      int(candidates.exit_index[best]), int(candidates.batch_size[best]))

    def candidate_terms(self, now: float, queues: Queues,
                        context: SchedulingContext) -> list[tuple[Action, dict]]:
        """Return every candidate action with its four terms and score, as `decide` computes them.

        The order is the tie-break order of `decide`; the list is empty when every queue is.
        """
        if not non_empty_streams(queues):
            return []
        self._use(context)
        terms, candidates, names = self._evaluate(now, queues, context)
        scores = self._combine(terms)
        rows = []
        for k in range(len(scores)):
            action = Action(names[int(candidates.stream_index[k])],
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
        the vectorised path `decide` uses. `misses_caused` includes `overflow_drops`, the
        requests expected to be pushed out of full queues while the device is busy.
        `predicted_misses` is misses_now + misses_caused;
        `pressure_implied_misses` is the fluid lower estimate of further misses the remaining
        demand implies (see `stability_score.pressure_implied_misses`), and
        `predicted_misses_with_pressure` their sum. Raises ValueError for an exit the policy
        may not use.
        """
        model_exits = self.exits(action.stream, context)
        if action.exit_index not in model_exits:
            raise ValueError(f'exit {action.exit_index} of stream {action.stream!r} is not '
                             f'allowed for this policy; allowed: {model_exits}')
        self._use(context)
        batch = queues[action.stream].peek(action.batch_size)
        busy_s = context.latency_s(action.stream, action.exit_index, len(batch))

        works = []
        remaining = []
        pushed_out = 0.0
        for name, stream_queue in queues.items():
            left = stream_queue.peek(len(stream_queue))
            if name == action.stream:
                left = left[len(batch):]
            doom_s = context.latency_s(name, self.exits(name, context)[0], 1)
            remaining.extend((request.deadline_s, doom_s) for request in left)
            works.append(self._stream_work(name, stream_queue, context,
                                           [request.deadline_s for request in left], doom_s))
            doomed_after = sum(1 for request in left
                               if request.deadline_s - now < busy_s + doom_s)
            pushed_out += stability_score.overflow_drops(
                len(left), doomed_after, context.arrival_rate_hz(name, stream_queue),
                stream_queue.max_depth, busy_s)

        final = context.final_exit(action.stream)
        loss = stability_score.exit_accuracy_loss(
            context.accuracy(action.stream, action.exit_index),
            context.accuracy(action.stream, final), action.exit_index == final)

        terms = {
            'misses_now': float(stability_score.misses_now(
                (request.deadline_s for request in batch), now, busy_s)),
            'misses_caused': (stability_score.misses_caused(remaining, now, busy_s)
                              + pushed_out),
            'pressure': stability_score.pressure(works, now, busy_s),
            'accuracy_cost': stability_score.accuracy_cost(len(batch), loss),
        }
        breakdown = dict(terms)
        breakdown['score'] = float(self._combine(stability_score.CandidateTerms(
            misses_now=np.array([terms['misses_now']]),
            misses_caused=np.array([terms['misses_caused']]),
            pressure=np.array([terms['pressure']]),
            accuracy_cost=np.array([terms['accuracy_cost']])))[0])
        breakdown['overflow_drops'] = pushed_out
        breakdown['predicted_misses'] = terms['misses_now'] + terms['misses_caused']
        breakdown['pressure_implied_misses'] = stability_score.pressure_implied_misses(
            works, now, busy_s)
        breakdown['predicted_misses_with_pressure'] = (breakdown['predicted_misses']
                                                       + breakdown['pressure_implied_misses'])
        breakdown['busy_s'] = busy_s
        breakdown['w_pressure'] = self.w_pressure
        breakdown['w_accuracy'] = self.w_accuracy
        return breakdown

    def _use(self, context: SchedulingContext) -> None:
        """Bind the latency tables to the context's latency model; a new model drops caches."""
        if self._tables.bind(context.latency):
            self._blocks.clear()

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

    def _evaluate(self, now: float, queues: Queues,
                  context: SchedulingContext) -> tuple[stability_score.CandidateTerms,
                                                       _Candidates, list[str]]:
        """Score every candidate; return the terms, the candidates and the stream names.

        Every stream takes part (its arrivals and queue depth matter to the others); only
        non-empty streams have candidates. `stream_index` refers to the returned names.
        """
        names = list(queues)
        deadlines = [np.array(queues[name].deadlines()) for name in names]
        exits = tuple(self.exits(name, context) for name in names)
        limits = tuple(min(len(queue_deadlines), context.streams[name].max_batch)
                       for name, queue_deadlines in zip(names, deadlines))
        candidates = self._candidates(context, tuple(names), exits, limits)
        doom_latency_s = np.array([context.latency_s(name, stream_exits[0], 1)
                                   for name, stream_exits in zip(names, exits)])
        priced_work = [self._priced_work_s(context, name, len(queue_deadlines))
                       for name, queue_deadlines in zip(names, deadlines)]
        rates_hz = np.array([context.arrival_rate_hz(name, queues[name]) for name in names])
        depths = np.array([queues[name].max_depth for name in names])

        points_s = np.sort(np.concatenate(deadlines))
        arrival_work_s = self._arrival_work_s(now, queues, context, points_s, rates_hz)
        terms = stability_score.evaluate_candidates(
            now, deadlines, doom_latency_s, priced_work, arrival_work_s, rates_hz, depths,
            candidates.stream_index, candidates.batch_size, candidates.busy_s,
            candidates.loss_per_request)
        return terms, candidates, names

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
        return static._replace(busy_s=static.busy_s * factors)

    def _build_candidates(self, context: SchedulingContext, streams: tuple[str, ...],
                          exits: tuple[tuple[int, ...], ...],
                          limits: tuple[int, ...]) -> tuple[_Candidates, list, list]:
        parts = {field: [] for field in _Candidates._fields}
        factor_keys = []
        lengths = []
        for q, (name, stream_exits, batch_limit) in enumerate(zip(streams, exits, limits)):
            if batch_limit == 0:
                continue
            model = context.model_of(name)
            final = context.final_exit(name)
            final_accuracy = context.accuracy(name, final)
            max_batch = context.streams[name].max_batch
            sizes = np.arange(batch_limit, 0, -1)
            for exit_index in reversed(stream_exits):
                busy = self._tables.batch_latency_s(model, exit_index, max_batch)
                loss = stability_score.exit_accuracy_loss(
                    context.accuracy(name, exit_index), final_accuracy, exit_index == final)
                parts['stream_index'].append(np.full(batch_limit, q))
                parts['exit_index'].append(np.full(batch_limit, exit_index))
                parts['batch_size'].append(sizes)
                parts['busy_s'].append(busy[batch_limit - 1::-1])
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
                        points_s: np.ndarray, rates_hz: np.ndarray) -> np.ndarray:
        work_s = np.zeros(len(points_s))
        if not len(points_s):
            return work_s
        latest_s = points_s[-1] - now
        for name, rate_hz in zip(queues, rates_hz):
            # Arrivals after now are due after now + slo, beyond every point when
            # latest_s <= slo (the usual case: every queued deadline is at most one SLO away).
            if rate_hz <= 0.0 or latest_s <= context.streams[name].slo_s:
                continue
            per_request_s = self._per_request_s(context, name)
            expected = rate_hz * np.maximum(0.0, points_s - context.streams[name].slo_s - now)
            work_s += expected * per_request_s
        return work_s

    def _per_request_s(self, context: SchedulingContext, name: str) -> float:
        max_batch = context.streams[name].max_batch
        return context.latency_s(name, context.final_exit(name), max_batch) / max_batch

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
