"""The one training loop (streammix.training.train) and its stopping rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streammix.training import EarlyStopping, Evaluation, TrainingState, train


def stops_at(stopping: EarlyStopping, losses: list[np.ndarray], weights: list[np.ndarray] | None = None) -> int | None:
    """The evaluation at which ``stopping`` is exhausted (None: never)."""
    for at, value in enumerate(losses, start=1):
        stopping.update(Evaluation.of(value, weights=None if weights is None else weights[at - 1]), at)
        if stopping.exhausted(at):
            return at
    return None


def test_a_flat_loss_stops_after_patience_and_says_why():
    """The same state scored again (only the wandering of a flat fit, much smaller
    than the spread between stars) is no significant improvement, however low its mean."""
    rng = np.random.default_rng(0)
    stars = rng.normal(2.0, 1.0, 2000)
    losses = [stars + rng.normal(0, 0.002, 2000) for _ in range(50)]
    stopping = EarlyStopping(patience=10, unit="steps", k=2.0)
    at = stops_at(stopping, losses)
    assert at is not None and at <= 11 + 3  # a noise pass or so at most
    assert stopping.reason(at) == "no significant held-out improvement for 10 steps"
    assert stopping.best_value == min(v.mean() for v in losses[:at])


def test_the_plain_rule_is_a_fall_of_the_mean_by_more_than_the_tolerance():
    values = [5.0, 4.0, 3.9999995, 3.9, 3.9, 3.9, 3.95]
    stopping = EarlyStopping(patience=3, unit="epochs", tolerance=1e-6)
    assert stops_at(stopping, [np.full(4, v) for v in values]) == 7
    assert (stopping.improved_at, stopping.best_at) == (4, 4)
    assert stopping.reason(7) == "no held-out improvement for 3 epochs"


def test_a_loss_that_keeps_improving_does_not_stop():
    """Each evaluation 0.01 nats per star better, noise 0.1 per star over 1000 stars
    (paired standard error 0.003): every evaluation is a significant improvement."""
    rng = np.random.default_rng(1)
    stars = rng.normal(2.0, 1.0, 1000)
    losses = [stars - 0.01 * i + rng.normal(0, 0.1, 1000) / np.sqrt(2) for i in range(100)]
    stopping = EarlyStopping(patience=3, unit="steps", k=2.0)
    assert stops_at(stopping, losses) is None
    assert stopping.best_at == 100 and stopping.improved_at >= 97


@pytest.mark.parametrize("k", [1.0, 2.0, 3.0])
def test_a_noisy_loss_without_a_trend_stops(k):
    """A state that wanders (each evaluation's per-star noise as large as a real
    step's gain) but does not improve on average stops within a few patiences."""
    rng = np.random.default_rng(2)
    stars = rng.normal(2.0, 1.0, 1000)
    losses = [stars + rng.normal(0, 0.1, 1000) + rng.normal(0, 0.003) for _ in range(200)]
    assert stops_at(EarlyStopping(patience=10, k=k), losses) is not None
    # the plain rule counts every new low of the noise as progress: it stops later, if at all
    assert (stops_at(EarlyStopping(patience=10, k=k), losses) or 200) <= (
        stops_at(EarlyStopping(patience=10, tolerance=1e-6), losses) or 200
    )


def test_improvement_is_judged_against_the_noise():
    """The same mean gain is an improvement over a quiet difference, not over a noisy one."""
    rng = np.random.default_rng(3)
    base = rng.normal(2.0, 1.0, 1000)
    quiet, noisy = EarlyStopping(patience=5, k=2.0), EarlyStopping(patience=5, k=2.0)
    for stopping in (quiet, noisy):
        stopping.update(Evaluation.of(base), 1)
    quiet.update(Evaluation.of(base - 0.01 + rng.normal(0, 0.02, 1000)), 2)
    noisy.update(Evaluation.of(base - 0.01 + rng.normal(0, 2.0, 1000)), 2)
    assert quiet.improved_at == 2 and noisy.improved_at == 1


def test_weighted_by_membership_a_few_improving_stars_count():
    """Fifty 'members' of 10,000 stars gain 0.05 nats each while the field wanders
    by 0.05: the mean over all stars is flat within its noise, the members' is not."""
    rng = np.random.default_rng(4)
    n, members = 10_000, np.arange(10_000) < 50
    stars = rng.normal(5.0, 2.0, n)
    weights = np.where(members, 0.95, 0.001)
    losses = [stars - 0.05 * i * members + rng.normal(0, 0.05, n) for i in range(30)]
    everyone = EarlyStopping(patience=5, k=2.0)
    by_members = EarlyStopping(patience=5, k=2.0, weighted=True)
    assert stops_at(everyone, losses) is not None
    assert stops_at(by_members, losses, [weights] * 30) is None


def test_non_finite_evaluations_are_never_improvements():
    stopping = EarlyStopping(patience=2)
    assert not stopping.update(Evaluation.of(np.array([1.0, math.nan])), 1)
    assert stopping.best_at == 0 and stopping.exhausted(2)


class Quadratic:
    """A toy model: x moves towards 0 by a fraction per step; its held-out loss is x^2 + 1."""

    def __init__(self, x: float = 4.0, rate: float = 0.2, blow_up_at: set[int] | None = None):
        self.x, self.rate, self.blow_up_at, self.calls = x, rate, blow_up_at or set(), 0

    def step(self, state: TrainingState) -> float:
        self.calls += 1
        if self.calls in self.blow_up_at:
            self.x = math.nan
            return math.nan
        self.x -= self.rate * 0.5**state.rollbacks * self.x
        return self.x**2

    def evaluate(self) -> Evaluation:
        return Evaluation.of(np.full(5, self.x**2 + 1.0))

    def snapshot(self) -> float:
        return self.x

    def restore(self, x: float) -> None:
        self.x = x


def run(model: Quadratic, **kwargs) -> TrainingState:
    options = dict(total=200, stopping=EarlyStopping(patience=5, tolerance=1e-6))
    options.update(kwargs)
    return train(model.step, model.evaluate, model.snapshot, model.restore, **options)


def test_the_loop_stops_early_and_restores_the_best_state():
    """After the best evaluation the model moves away (a step that makes it worse):
    the loop keeps and restores the best state, not the last one."""
    model = Quadratic()
    worse = {"from": 12}

    def step(state: TrainingState) -> float:
        if state.at >= worse["from"]:
            model.x += 0.5
            return model.x**2
        return model.step(state)

    state = train(step, model.evaluate, model.snapshot, model.restore, total=100, stopping=EarlyStopping(patience=5))
    assert state.at == 17 and state.stopped_because == "no held-out improvement for 5 steps"
    assert state.stopping.best_at == 12
    assert model.x == pytest.approx(4.0 * 0.8**12)
    assert [h[0] for h in state.history] == list(range(1, 18))


def test_the_loop_runs_all_steps_and_says_so():
    model = Quadratic(rate=0.01)
    state = run(model, total=30, eval_every=7)
    assert state.at == 30 and state.stopped_because == "max steps (30)"
    assert [h[0] for h in state.history] == [7, 14, 21, 28, 30]  # and after the last step


def test_a_non_finite_loss_rolls_back_and_lowers_the_rate():
    model = Quadratic(blow_up_at={3})
    calls: list[int] = []
    state = run(model, total=10, rollback=lambda s: calls.append(s.rollbacks))
    assert calls == [1] and state.rollbacks == 1 and state.at == 10
    assert math.isfinite(model.x)
    # steps 1-2 at the full rate, the rolled-back step 3 not counted, then 8 steps at half the rate
    assert model.x == pytest.approx(4.0 * 0.8**2 * 0.9**8)


def test_too_many_rollbacks_in_a_row_give_up():
    model = Quadratic(blow_up_at=set(range(2, 100)))
    state = run(model, rollback=lambda s: None, max_rollbacks=3)
    assert state.gave_up and state.stopped_because == "gave up after 4 rollbacks in a row"
    assert model.x == pytest.approx(4.0 * 0.8)  # the last evaluated state


def test_budget_stops_the_loop():
    model = Quadratic()
    state = run(model, budget=lambda: "max steps (3)" if model.calls >= 3 else None)
    assert state.at == 3 and state.stopped_because == "max steps (3)"


def test_checkpoint_resume_gives_the_same_run():
    """A run checkpointed every 4 steps and killed at step 9 goes on from its
    step-8 checkpoint to the same end as an uninterrupted run."""
    import copy

    whole = run(Quadratic(), total=20, checkpoint_every=4, checkpoint=lambda s: None)

    saved: list[tuple[TrainingState, float]] = []
    model = Quadratic()

    def step(state: TrainingState) -> float:
        if state.at == 9:
            raise KeyboardInterrupt
        return model.step(state)

    def checkpoint(state: TrainingState) -> None:
        saved.append((copy.deepcopy(state), model.x))

    with pytest.raises(KeyboardInterrupt):
        train(step, model.evaluate, model.snapshot, model.restore, total=20,
              stopping=EarlyStopping(patience=5, tolerance=1e-6), checkpoint=checkpoint, checkpoint_every=4)
    state, x = saved[-1]
    assert state.at == 8 and [s.at for s, _ in saved] == [4, 8]
    resumed_model = Quadratic(x=x)
    resumed = run(resumed_model, total=20, resume=state, checkpoint=lambda s: None, checkpoint_every=4)
    assert resumed.at == whole.at == 20
    assert resumed.history == whole.history
    assert resumed_model.x == pytest.approx(4.0 * 0.8**20)


def test_a_cooldown_lowers_the_rate_to_zero_before_stopping():
    """Patience runs out at step 6 (flat from the first evaluation); the loop goes on
    for a cooldown of 6 steps with the step's factor falling from 1 towards 0, then stops."""
    factors: list[float] = []

    def step(state: TrainingState) -> float:
        factors.append(state.cooldown_factor())
        return 1.0

    flat = lambda: Evaluation.of(np.full(3, 2.0))  # noqa: E731
    state = train(step, flat, lambda: 0, lambda _: None, total=100, stopping=EarlyStopping(patience=5), cooldown=6)
    assert state.at == 12 and state.cooldown_from == 6
    assert state.stopped_because == "no held-out improvement for 5 steps, then a cooldown of 6 steps"
    assert factors[:7] == [1.0] * 7 and factors[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 6)))
    assert all(a > b for a, b in zip(factors[6:], factors[7:]))
    # no cooldown when fewer steps than it are left: the fit stops as before
    late = train(step, flat, lambda: 0, lambda _: None, total=10, stopping=EarlyStopping(patience=5), cooldown=6)
    assert late.at == 6 and late.cooldown_from is None
