"""Several objectives (gp_losses/pareto.py): the front against a brute-force non-dominated
filter, the hypervolume against hand-computed cases, and NSGA-II's tournament."""

import copy
import csv
import json
import pickle

import numpy as np
import pytest
from deap import tools
from search_helpers import FAST, IN_PROCESS, lines, stable

from gp_losses.driver import run_search
from gp_losses.plot import figure, plot_runs, read_front, read_logbook
from gp_losses.pareto import (Objective, ParetoFitness, fitness, hypervolume, non_dominated, parse_objectives,
                              standing, winner)
from gp_losses.population import FAILED


class Loss:
    def __init__(self, name, values, weights=(1.0, 1.0)):
        self.name, self.fitness = name, ParetoFitness(weights, values)


def brute_force_front(points, weights):
    """Indices of the points no other point dominates, by the definition."""
    w = [[v * s for v, s in zip(p, weights)] for p in points]
    return {i for i, a in enumerate(w)
            if not any(all(x >= y for x, y in zip(b, a)) and any(x > y for x, y in zip(b, a))
                       for j, b in enumerate(w) if j != i)}


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.0, -1.0), (1.0, 1.0, 1.0)])
def test_the_front_is_the_brute_force_non_dominated_set(seed, weights):
    rng = np.random.default_rng(seed)
    points = np.round(rng.random((int(rng.integers(1, 40)), len(weights))), 1)  # ties and duplicates too
    losses = [Loss(i, p, weights) for i, p in enumerate(points)]
    expected = brute_force_front(points.tolist(), weights)
    first = tools.sortNondominated(losses, len(losses), first_front_only=True)[0]
    assert {ind.name for ind in first} == expected
    hall = tools.ParetoFront(similar=lambda a, b: a.name == b.name)
    hall.update(losses)
    assert {tuple(ind.fitness.values) for ind in hall} == {tuple(points[i]) for i in expected}
    places = standing(losses)
    assert {ind.name for ind in losses if places[id(ind)][0] == 0} == expected
    assert set(np.flatnonzero(non_dominated(points, weights))) == expected  # the retrain report's marks


def test_the_hypervolume_of_a_hand_computed_two_dimensional_front():
    """Three points to maximize above (0, 0): the staircase 0.5 x 0.8 + 0.2 x 0.6 + 0.2 x 0.2."""
    both = (Objective("a", 1.0), Objective("b", 1.0))
    assert hypervolume([(0.5, 0.8), (0.7, 0.6), (0.9, 0.2)], both) == pytest.approx(0.56)
    assert hypervolume([(0.5, 0.8), (0.4, 0.4)], both) == pytest.approx(0.4)  # a dominated point adds nothing
    assert hypervolume([(FAILED, FAILED)], both) == 0.0
    # b to minimize, from its worst end 1: the points (0.5, 0.2) and (0.9, 0.6) give
    # 0.5 x 0.8 + 0.4 x 0.4
    mixed = (Objective("a", 1.0), Objective("b", -1.0))
    assert hypervolume([(0.5, 0.2), (0.9, 0.6)], mixed) == pytest.approx(0.56)


def test_the_tournament_prefers_the_better_front_then_the_less_crowded_then_the_first():
    """Front 0 is a, c, b, d by the first objective. Crowding by hand, DEAP's (each gap over
    the objective's range, 0.8, times the 2 objectives): a and d are ends (infinite); c: (0.9 -
    0.5 + 0.5 - 0.1) / 1.6 = 0.5; b: (0.52 - 0.1 + 0.9 - 0.48) / 1.6 = 0.525."""
    pop = [Loss("dominated", (0.2, 0.2)), Loss("a", (0.9, 0.1)), Loss("b", (0.5, 0.5)),
           Loss("c", (0.52, 0.48)), Loss("d", (0.1, 0.9))]
    places = standing(pop)
    assert [places[id(ind)][0] for ind in pop] == [1, 0, 0, 0, 0]
    assert places[id(pop[2])][1] == pytest.approx(0.525) and places[id(pop[3])][1] == pytest.approx(0.5)
    assert winner(pop, [0, 2]).name == "b"                 # front 0 beats front 1
    assert winner(pop, [2, 1]).name == "a"                 # an end of the front: infinite crowding
    assert winner(pop, [2, 3]).name == winner(pop, [3, 2]).name == "b"  # less crowded, in either order
    assert winner(pop, [4, 1]).name == "d" and winner(pop, [1, 4]).name == "a"  # a tie: the first sampled


def test_a_loss_without_a_score_is_dominated_by_every_scored_one():
    objectives = parse_objectives(["miou", "bf1:min"], ["miou", "bf1"])
    failed, scored = fitness(objectives, None), fitness(objectives, {"miou": 0.0, "bf1": 1.0})
    assert scored.dominates(failed) and not failed.dominates(scored)
    assert fitness(objectives, {"miou": 0.5}).values == failed.values  # an objective missing
    assert fitness(objectives, {"miou": 0.5, "bf1": float("nan")}).values == failed.values  # not a number


def test_a_first_objective_to_minimize_is_refused(capsys):
    from gp_losses.cli import main

    assert main(["config", "--task", "seg", "--set", "search.objectives=[bf1:min, miou]"]) == 2
    assert "the first objective is the task's metric, which a search maximizes" in capsys.readouterr().err


def test_objectives_are_checked():
    metrics = ["miou", "bf1"]
    assert parse_objectives(["miou", "bf1:min"], metrics) == (Objective("miou", 1.0), Objective("bf1", -1.0))
    for bad, message in [(["miou", "bfl"], "no metric 'bfl'"), (["miou:up"], "max or min"),
                         (["miou", "miou:max"], "named twice")]:
        with pytest.raises(ValueError, match=message):
            parse_objectives(bad, metrics)


def test_the_fitness_keeps_its_weights_through_a_copy_and_a_checkpoint():
    f = ParetoFitness((1.0, -1.0), (0.3, 0.6))
    for other in (copy.deepcopy(f), pickle.loads(pickle.dumps(f))):
        assert other.weights == (1.0, -1.0) and other.values == (0.3, 0.6) and other.wvalues == (0.3, -0.6)
        assert other.named() == {"0": 0.3, "1": 0.6}


def test_a_search_with_two_objectives_keeps_the_front_of_what_it_scored_and_resumes_as_one_run(tmp_path):
    """The hall of fame is the front of the trained losses, the logbook has its size and
    hypervolume, the picture draws it; 6 evaluations resumed to 10 write what 10 in one go
    write (the checkpoint holds the front, ParetoFitness's weights and names included)."""
    sets = FAST + [IN_PROCESS, "task.name=toy_tasks:TwoMetricDigits", "search.objectives=[accuracy, confidence:min]",
                   "search.compare_baselines=false", "final.top=0"]
    run_search(None, out=str(tmp_path / "run"), seed=0, overrides=sets)
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]
    scored = [r for r in records if r.get("status") in ("ok", "reused")]
    points = np.array([[r["metrics"]["accuracy"], r["metrics"]["confidence"]] for r in scored])
    expected = {tuple(p) for p in points[non_dominated(points, (1.0, -1.0))]}
    hall = json.loads((run / "hall_of_fame.json").read_text())
    assert {(h["objectives"]["accuracy"], h["objectives"]["confidence"]) for h in hall} == expected
    assert [h["score"] for h in hall] == [h["objectives"]["accuracy"] for h in hall]
    assert [h["score"] for h in hall] == sorted((h["score"] for h in hall), reverse=True)  # by the first
    assert [h["rank"] for h in hall] == list(range(1, len(hall) + 1))
    with open(run / "logbook.csv") as fh:
        last = list(csv.DictReader(fh))[-1]
    both = (Objective("accuracy", 1.0), Objective("confidence", -1.0))
    assert int(last["front"]) == len(hall)
    assert float(last["hypervolume"]) == pytest.approx(hypervolume(sorted(expected), both))
    front = read_front(run)  # the picture's front panel: the trained losses, the front last
    assert front.names == ("accuracy", "confidence") and len(front.points) == len(
        [r for r in scored if r["status"] == "ok"])
    fig = figure([("run", read_logbook(run))], fronts=[front])
    panel = fig.axes[2]
    assert panel.get_title() == "trained losses and the Pareto front"
    drawn = {tuple(xy) for xy in panel.get_lines()[-1].get_xydata()}  # the last quarter's: the whole front
    assert expected <= drawn and plot_runs([str(run), str(run)], str(tmp_path / "both.png")).is_file()
    pieces = tmp_path / "pieces"
    run_search(None, out=str(pieces), seed=0, overrides=sets + ["search.evaluations=6"])
    run_search(None, resume=str(pieces), evaluations=10)
    assert stable(lines(pieces)) == stable(lines(run))
    assert json.loads((pieces / "hall_of_fame.json").read_text()) == hall


@pytest.mark.parametrize("expr", ["Neg(Mul(y, Log(yhat)))", "Square(Add(yhat, Neg(y)))", "Mul(y, Square(yhat))"])
def test_the_protocol_with_two_objectives_takes_the_larger_gain(expr):
    """Each objective's gain as a one-metric protocol measures it (the task scoring that
    metric); with both, the larger, and a minimized objective gains as 1 - metric does."""
    from gp_losses.config import ProtocolConfig
    from gp_losses.rejection import Protocol
    from gp_losses.space import SearchSpace
    from toy_tasks import TwoMetricDigits

    gains = {}
    for metric in ("accuracy", "confidence"):
        task = TwoMetricDigits(metric=metric)
        space = SearchSpace(task.branches)
        gains[metric] = Protocol(task, space.branches, space.operators, ProtocolConfig(eta=-1)).check(
            0, space.parse({"cls": expr})[0]).gain
    task = TwoMetricDigits()
    both = Protocol(task, space.branches, space.operators, ProtocolConfig(eta=-1),
                    (Objective("accuracy", 1.0), Objective("confidence", 1.0)))
    assert both.check(0, space.parse({"cls": expr})[0]).gain == pytest.approx(max(gains.values()), abs=1e-9)
    assert task.metric == "accuracy"  # the task's own metric is left as it was
    minimized = Protocol(task, space.branches, space.operators, ProtocolConfig(eta=-1),
                         (Objective("accuracy", -1.0), Objective("confidence", -1.0)))
    assert minimized.check(0, space.parse({"cls": expr})[0]).gain == pytest.approx(-min(gains.values()), abs=1e-6)

