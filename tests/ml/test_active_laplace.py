"""The Laplace-posterior acquisition (worker/ml/active_laplace.py): its covariance is the inverse
Hessian of the fit's objective, the expected information of a ranking is the average over every
ordering, an unexplored direction is asked first, a greedy batch does not ask twice, and a drawn
batch draws in proportion to the score."""

import itertools
import math

import pytest
import torch

from tests.ml.test_active import _labelled
from worker.ml.active import fit_score_heads, ranking_design
from worker.ml.active_laplace import (
    expected_ranking_information,
    laplace_batch,
    laplace_draw,
    laplace_order,
    laplace_posterior,
)
from worker.ml.losses import plackett_luce_loss

D = 4


def test_the_posterior_is_the_inverse_hessian_of_the_fits_objective():
    """Autograd's Hessian of R * (mean PL loss + l2 |w|^2), the fit's objective summed over its
    R rankings (ties included), at the fitted head: its inverse is the posterior covariance."""
    features, rankings = _labelled(24)
    l2 = 0.1
    posterior = laplace_posterior(features, rankings, l2=l2)
    assert torch.equal(posterior.head, fit_score_heads(features, rankings, n_heads=1, bootstrap=False, l2=l2))
    design = ranking_design(features, rankings)
    n_rankings = len(design.rows)

    def objective(w: torch.Tensor) -> torch.Tensor:
        mean_loss, _ = plackett_luce_loss(design.x.double() @ w, design.levels)
        return n_rankings * (mean_loss + l2 * (w * w).sum())

    at_map = posterior.mean.double()
    hessian = torch.autograd.functional.hessian(objective, at_map)
    assert torch.allclose(posterior.covariance, torch.linalg.inv(hessian), rtol=1e-6, atol=1e-9)
    w = at_map.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(objective(w), w)
    assert gradient.abs().max() < 0.05  # the mean is the fit's optimum (L-BFGS tolerance)


def test_expected_information_averages_the_hessian_over_every_ordering():
    """For K = 4: the sum over the 24 orderings of P(ordering) times the Hessian in the scores
    of that ranking's per-ranking loss (the mean over its 3 terms)."""
    scores = torch.tensor([[0.3, -1.2, 0.8, 0.0], [2.0, 2.0, -1.0, 0.5]], dtype=torch.float64)
    for row, got in zip(scores, expected_ranking_information(scores), strict=True):
        expected = torch.zeros(4, 4, dtype=torch.float64)
        for order in itertools.permutations(range(4)):
            chance, left = 1.0, list(range(4))
            for i in order:
                chance *= math.exp(row[i]) / sum(math.exp(row[j]) for j in left)
                left.remove(i)
            levels = torch.tensor([[order.index(i) for i in range(4)]])
            expected += chance * torch.autograd.functional.hessian(
                lambda s, levels=levels: plackett_luce_loss(s[None], levels)[0], row
            )
        assert torch.allclose(got, expected, atol=1e-12)
    assert torch.equal(expected_ranking_information(torch.zeros(3, 1)), torch.zeros(3, 1, 1))


def _explored_along_feature_0(n: int = 30) -> tuple[list[torch.Tensor], list[list[list[list[int]]]]]:
    """Pairs that differ only along feature 0 (every feature varies across tasks, so all are
    standardised alike), ranked by it: the data pin w_0 and say nothing about w_1, w_2, w_3."""
    g = torch.Generator().manual_seed(0)
    features, rankings = [], []
    for _ in range(n):
        f = torch.randn(1, D, generator=g).repeat(2, 1)
        f[0, 0] += 1.0
        f[1, 0] -= 1.0
        features.append(f)
        rankings.append([[[0], [1]]])
    return features, rankings


def _pair(direction: int, size: float) -> torch.Tensor:
    f = torch.zeros(2, D)
    f[0, direction], f[1, direction] = size, -size
    return f


@pytest.mark.parametrize("score", ["information", "pool", "error"])
def test_an_unexplored_direction_is_asked_first(score):
    posterior = laplace_posterior(*_explored_along_feature_0(), l2=0.05)
    explored, unexplored = _pair(0, 1.0), _pair(1, 1.0)
    tasks = [explored, explored.clone(), unexplored, torch.zeros(1, D), explored.clone()]
    order = laplace_batch(posterior, tasks, 5, score=score)
    assert order[0] == 2
    assert order[-1] == 3  # one completion: nothing to learn, last


@pytest.mark.parametrize("score", ["information", "pool", "error"])
def test_a_greedy_batch_asks_two_directions_not_two_copies(score):
    """A and its copy each teach a little more than B alone; once A's ranking is counted, its
    copy teaches less than B, which asks about another direction (a weak prior, so one ranking
    settles much of a direction)."""
    posterior = laplace_posterior(*_explored_along_feature_0(), l2=0.005)
    a, b = _pair(1, 1.0), _pair(2, 0.9)
    assert laplace_batch(posterior, [b, a.clone()], 1, score=score) == [1]  # alone, the copy beats B
    assert laplace_batch(posterior, [a, a.clone(), b], 2, score=score) == [0, 2]


def test_the_pool_score_is_about_the_target_pairs():
    """By default the pool is the open tasks' own pairs; a target that only has pairs along
    direction 2 makes the task that teaches direction 2 the first, though A teaches more alone."""
    posterior = laplace_posterior(*_explored_along_feature_0(), l2=0.005)
    a, b = _pair(1, 1.0), _pair(2, 0.9)
    assert laplace_batch(posterior, [a, b], 1, score="pool") == [0]
    along_2 = torch.zeros(3, D)
    along_2[:, 2] = torch.tensor([1.0, 0.0, -1.0])
    assert laplace_batch(posterior, [a, b], 1, score="pool", target=[along_2]) == [1]
    with pytest.raises(ValueError, match=r"target\[0\]: expected an \(n, 4\) tensor"):
        laplace_batch(posterior, [a, b], 1, score="pool", target=[torch.zeros(3, 2)])


def test_bad_batch_input_names_the_field():
    posterior = laplace_posterior(*_explored_along_feature_0(), l2=0.05)
    with pytest.raises(ValueError, match=r"score: 'entropy' is not one of information, pool, error"):
        laplace_batch(posterior, [_pair(1, 1.0)], 1, score="entropy")
    with pytest.raises(ValueError, match=r"batch: must be at least 0"):
        laplace_batch(posterior, [_pair(1, 1.0)], -1)
    with pytest.raises(ValueError, match=r"features\[0\]: expected a \(K, 4\) tensor"):
        laplace_batch(posterior, [torch.zeros(2, 3)], 1)
    assert laplace_batch(posterior, [], 3) == []
    assert laplace_batch(posterior, [_pair(1, 1.0)], 0) == []


@pytest.mark.parametrize("score", ["pool", "error"])
def test_the_handout_order_is_the_greedy_batch_then_the_rest_by_score(score):
    """The product's order (HandoutOrder.information): every task once, the greedy batch first,
    then the rest by their score with that batch counted, a lone completion last."""
    posterior = laplace_posterior(*_explored_along_feature_0(), l2=0.005)
    a, b, settled = _pair(1, 1.0), _pair(2, 0.9), _pair(0, 1.0)
    tasks = [settled, a, torch.zeros(1, D), a.clone(), b, _pair(3, 0.5)]
    order = laplace_order(posterior, tasks, 2, score=score)
    assert sorted(order) == list(range(len(tasks)))
    assert order[:2] == laplace_batch(posterior, tasks, 2, score=score) == [1, 4]
    assert order[-1] == 2
    assert order.index(5) < order.index(0)  # an open direction before a settled one
    assert laplace_order(posterior, tasks, 0, score=score)[0] == 1  # no greedy pick: by score alone


def test_a_drawn_batch_draws_in_proportion_to_the_score():
    """laplace_draw: distinct open tasks, never a lone completion while another can teach, the
    recorded chance is the one the draw used (frequencies over 400 generator seeds match it), and
    a generator seed repeats the draw."""
    posterior = laplace_posterior(*_explored_along_feature_0(), l2=0.05)
    explored, unexplored = _pair(0, 1.0), _pair(1, 0.2)  # small: the two scores are comparable
    tasks = [explored, unexplored, torch.zeros(1, D)]
    draws = [laplace_draw(posterior, tasks, 2, torch.Generator().manual_seed(s)) for s in range(400)]
    for drawn in draws:
        assert sorted(n for n, _ in drawn) == [0, 1]  # the lone completion never
        assert drawn[1][1] == pytest.approx(1.0)  # the only teaching task left
    chance = {n: q for (n, q), _ in draws}  # first draw: task -> its chance
    assert 0.9 > chance[1] > 0.5 > chance[0] > 0.1  # the unexplored direction is likelier
    assert chance[0] + chance[1] == pytest.approx(1.0)
    first_unexplored = sum(drawn[0][0] == 1 for drawn in draws)
    sd = math.sqrt(400 * chance[1] * (1 - chance[1]))
    assert abs(first_unexplored - 400 * chance[1]) < 4 * sd
    again = laplace_draw(posterior, tasks, 2, torch.Generator().manual_seed(7))
    assert again == draws[7]
    lone = laplace_draw(posterior, [torch.zeros(1, D)], 1, torch.Generator().manual_seed(0))
    assert lone == [(0, 1.0)]  # nothing can teach: any open task
