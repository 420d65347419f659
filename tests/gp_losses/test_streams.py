"""Candidate streams (gp_losses/streams.py): what the rejection phase finds does not depend on
how many workers share it, nor on how far each gets in a round."""

import functools
import random

import pytest

from gp_losses.messages import Checked, Made, RangeDone
from gp_losses.outcomes import ProtocolResult
from gp_losses.streams import Stream, plan


def one(index, passed):
    return Checked(index, f"e{index}", Made("init"), ProtocolResult(passed))


def done(end, results=()):
    return RangeDone(end, tuple(results))


def passes(slot, index):
    """A stand-in for the protocol: a fixed, sparse set of passing candidates per stream."""
    return random.Random(f"{slot}/{index}").random() < (0.5 if slot % 3 == 0 else 0.02)


def check(job, rng):
    """A worker's job: its ranges in order, each until its first pass, stopping after a
    random number of candidates (at least one); the answers go into the streams."""
    budget, checked, found = rng.randint(1, 40), 0, set()
    for stream, lo, hi in job:
        results, index = [], lo
        while index < hi and stream.slot not in found and (checked < budget or checked == 0):
            ok = passes(stream.slot, index)
            results.append(one(index, ok))
            index += 1
            checked += 1
            if ok and stream.first_only:
                found.add(stream.slot)
                break
        stream.absorb(lo, hi, done(index, results))


def run_rounds(streams, workers, rng, cap=64):
    """Drive the streams in rounds: every worker gets a job (`plan`), all answer, again."""
    rounds = 0
    while True:
        jobs = plan(streams, workers, cap)
        if not jobs:
            return rounds
        rounds += 1
        seen = set()
        for job in jobs:
            for stream, lo, hi in job:
                assert not any((stream.slot, i) in seen for i in range(lo, hi))  # no overlap in a round
                seen.update((stream.slot, i) for i in range(lo, hi))
            check(job, rng)


def answers(workers, seed, n=7, limit=10_000):
    streams = [Stream(slot, 0, "parent", limit) for slot in range(n)]
    run_rounds(streams, workers, random.Random(seed))
    assert all(s.decided for s in streams)
    return [(len(s.answers()[0].rejected), s.answers()[0].accepted.index) for s in streams], streams


@functools.lru_cache(maxsize=None)
def first_passes(slot, m=1):
    found = []
    for i in range(100_000):
        if len(found) == m:
            break
        if passes(slot, i):
            found.append(i)
    return found


@pytest.mark.parametrize("workers", [1, 2, 3, 16, 64])
@pytest.mark.parametrize("seed", [0, 1])
def test_every_worker_count_and_timing_finds_each_streams_first_pass(workers, seed):
    found, streams = answers(workers, seed)
    assert found == [(first_passes(slot)[0], first_passes(slot)[0]) for slot in range(7)]
    for stream in streams:
        ((rejected, accepted),) = stream.answers()
        assert [r.index for r in rejected] == list(range(accepted.index))
        assert all(not r.result.passed for r in rejected) and accepted.result.passed


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_a_pool_of_random_slots_takes_its_first_passes_in_order(workers):
    pool = Stream(1, 0, None, 10_000, wanted=4)  # slot 1 passes 2% of the time
    run_rounds([pool, Stream(3, 0, "parent", 100)], workers, random.Random(workers))
    assert pool.decided and not pool.first_only
    expected = first_passes(1, 4)
    start = 0
    for (rejected, accepted), index in zip(pool.answers(), expected):
        assert accepted.index == index and [r.index for r in rejected] == list(range(start, index))
        start = index + 1
    assert len(pool.answers()) == 4


def test_one_worker_does_no_speculative_work():
    _, streams = answers(1, 0)
    assert all(not s.speculative() for s in streams)


def test_a_stream_with_no_pass_under_its_limit_is_exhausted():
    stream = Stream(1, 0, None, limit=30)  # slot 1 passes 2% of the time; none in its first 30
    assert first_passes(1)[0] >= 30
    run_rounds([stream], 2, random.Random(0))
    assert stream.exhausted and not stream.decided and stream.prefix == 30 and stream.next == 30


def test_own_streams_get_the_earliest_ranges_and_gaps_go_out_again():
    a, b = Stream(0, 0, "parent", 1000), Stream(1, 0, "parent", 1000)  # offspring: 1, 2, 4, ...
    jobs = plan([a, b], 2, cap=8)
    assert [(s.slot, lo, hi) for s, lo, hi in jobs[0]] == [(0, 0, 1), (1, 1, 3)]
    assert [(s.slot, lo, hi) for s, lo, hi in jobs[1]] == [(1, 0, 1), (0, 1, 3)]
    a.absorb(0, 1, done(1, [one(0, False)]))
    a.absorb(1, 3, done(1, []))  # not reached: handed out again first, then new indices up to 4
    assert a.take(8) == [(1, 3), (3, 5)] and a.take(8) == [(5, 13)]
    a.absorb(5, 13, done(7, [one(i, i == 6) for i in (5, 6)]))
    a.absorb(1, 3, done(1, []))
    a.absorb(3, 5, done(3, []))
    assert a.take(8) == [(1, 3), (3, 5)] and a.take(8) == []  # only what lies before the pass


def test_random_streams_start_wide_and_the_last_gap_is_split_between_workers():
    a = Stream(0, 0, None, 1000)
    assert a.take(64) == [(0, 64)] and a.take(64) == [(64, 128)]  # no 1, 2, 4, ...: rarely passes
    a.absorb(64, 128, done(65, [one(64, True)]))
    a.absorb(0, 64, done(10, [one(i, False) for i in range(10)]))  # time box
    jobs = plan([a], 2, 64)  # 54 unchecked before the pass, shared by both workers
    assert [[(lo, hi) for _, lo, hi in job] for job in jobs] == [[(10, 37)], [(37, 64)]]


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_the_random_stream_goes_on_from_batch_to_batch_as_one_stream(workers):
    """Batches of 3, 1 and 2 random slots take the run's passes 1-3, 4, 5-6, whatever was
    checked ahead in an earlier batch."""
    stream, start, taken = Stream(1, 0, None, 0), 0, []
    for wanted in (3, 1, 2):
        stream.limit = start + 5000 * wanted
        stream.restart(start, wanted)
        run_rounds([stream], workers, random.Random(wanted))
        taken += [accepted.index for _, accepted in stream.answers()]
        assert [r.index for r in stream.answers()[0].rejected] == list(range(start, stream.answers()[0].accepted.index))
        start = stream.last + 1
    assert taken == first_passes(1, 6)


def run_workers(streams, workers, rng, cap=64):
    """Drive the streams as the scheduler does: no rounds; whenever workers are free they get
    jobs (`plan` over the free workers), and the job that answers next is drawn at random from
    those out, so ranges come back in any order while others are still out."""
    free, out = workers, []
    while True:
        for job in plan(streams, free, cap):
            out.append(job)
            free -= 1
        if not out:
            return
        free += 1
        check(out.pop(rng.randrange(len(out))), rng)


@pytest.mark.parametrize("workers", [1, 2, 3, 16])
@pytest.mark.parametrize("seed", [0, 1])
def test_workers_answered_in_any_order_find_each_streams_first_passes(workers, seed):
    streams = [Stream(slot, 0, "parent", 10_000) for slot in range(7)]
    pool = Stream(1, 0, None, 10_000, wanted=3)
    run_workers(streams + [pool], workers, random.Random(seed))
    for stream in streams:
        ((rejected, accepted),) = stream.answers()
        assert accepted.index == first_passes(stream.slot)[0]
        assert [r.index for r in rejected] == list(range(accepted.index))
    assert [a.accepted.index for a in pool.answers()] == list(first_passes(1, 3))


def test_a_slots_answer_is_known_only_once_every_candidate_before_its_pass_is_checked():
    pool = Stream(1, 0, None, 1000, wanted=2)
    p0, p1 = first_passes(1, 2)
    ranges = pool.take(1000)  # [(0, 1000)]: handed out, then answered in two parts
    assert ranges == [(0, 1000)]
    late = [one(i, passes(1, i)) for i in range(p0 + 1, p1 + 1)]
    pool.absorb(p0 + 1, 1000, done(p1 + 1, late))
    assert pool.answer(0) is None and pool.answer(1) is None  # candidates 0 .. p0 still out
    pool.absorb(0, p0 + 1, done(p0 + 1, [one(i, passes(1, i)) for i in range(p0 + 1)]))
    (rejected0, accepted0), (rejected1, accepted1) = pool.answer(0), pool.answer(1)
    assert accepted0.index == p0 and len(rejected0) == p0
    assert accepted1.index == p1 and [r.index for r in rejected1] == list(range(p0 + 1, p1))
    assert pool.answer(2) is None  # it fills two slots


def test_checking_ahead_of_a_batch_serves_the_next_and_never_reuses_a_taken_candidate():
    """What workers check of the random stream for later batches, restarted from where the
    batch left it, gives the next batch the same passes as a stream checked afresh."""
    stream = Stream(1, 0, None, 5000, wanted=1)
    run_workers([stream], 2, random.Random(3))
    used = stream.answer(0).accepted.index + 1
    stream.limit = used + 5000 * 3
    stream.restart(used, 3)  # ahead: the next three random slots of the run
    for _, lo, hi in plan([stream], 1, 64)[0]:
        stream.absorb(lo, hi, done(hi, [one(i, passes(1, i)) for i in range(lo, hi)]))
    stream.absorb(0, 5, done(5, [one(i, passes(1, i)) for i in range(5)]))  # taken already
    assert all(i >= used for i in stream.done)
    stream.limit = used + 5000 * 2
    stream.restart(used, 2)  # the next batch has two random slots
    run_workers([stream], 2, random.Random(4))
    assert [a.accepted.index for a in stream.answers()] == list(first_passes(1, 3)[1:])
