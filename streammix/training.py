"""The one training loop of the flows and the mixtures: evaluations, when to stop, what to keep.

:func:`train` runs the loop; what a step and an evaluation do is given to it
as callables, so the background flows (an epoch per step) and the mixtures (an
optimizer step per step) share early stopping, keeping the best state,
rollback after a non-finite loss, checkpoint hooks, the progress bar and the
reason training ended.

When an evaluation counts as an improvement is :class:`EarlyStopping`'s rule.
With d_i = (loss of held-out star i at the last improvement) - (its loss now)
and weights w_i (1 for every star by default), the evaluation improves when

    mean_w(d) > k * se_w(d) + tolerance,

se_w the (weighted) paired standard error over the held-out stars (the same
stars are scored both times, so most of their spread cancels). Training stops
after ``patience`` steps (or epochs) without an improvement, and says why.
With ``k = 0`` this is the plain rule (the mean held-out loss fell by more
than ``tolerance``), the default of both the flows and the mixtures:
benchmarks/stopping_rule.py replays the other rules on the per-star held-out
losses of a demo fit and shows what they cost in accuracy (RESULTS.md, 2026-12-04,
session 11).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["EarlyStopping", "Evaluation", "ProgressBar", "TrainingState", "train"]


@dataclass(frozen=True)
class Evaluation:
    """One scoring of the held-out stars.

    Arguments:
        losses: Each held-out star's loss, shape (n,), in the same order at
            every evaluation (a weighted loss: the star's weight times its
            loss over the mean weight).
        value: The held-out loss reported and compared (default: the mean of
            ``losses``); given when the caller computes it in its own precision.
        weights: Each star's weight in a ``weighted`` stopping rule (e.g. its
            membership probability), shape (n,); None: all 1.

    Example:
        >>> Evaluation.of(torch.tensor([1.0, 3.0])).value
        2.0
    """

    losses: np.ndarray
    value: float
    weights: np.ndarray | None = None

    @classmethod
    def of(
        cls,
        losses: np.ndarray | torch.Tensor,
        value: float | None = None,
        weights: np.ndarray | torch.Tensor | None = None,
    ) -> Evaluation:
        """An evaluation from tensors or arrays (copied to float64 numpy arrays).

        Arguments:
            losses: Per-star losses, shape (n,).
            value: The reported held-out loss; default: their mean.
            weights: Per-star weights of a weighted rule, shape (n,), or None.
        """
        array = _numpy(losses)
        reported = float(array.mean()) if value is None else float(value)
        return cls(array, reported, None if weights is None else _numpy(weights))


def _numpy(values: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().to(torch.float64).cpu().numpy()
    return np.array(values, dtype=np.float64).ravel()


@dataclass
class EarlyStopping:
    """When a held-out evaluation improves, and when patience has run out (the module's rule).

    Arguments:
        patience: Steps (or epochs: whatever ``at`` counts) without an
            improvement before :meth:`exhausted` turns True.
        unit: What ``at`` counts, for :meth:`reason` (e.g. ``"steps"``).
        k: Paired standard errors by which an evaluation must beat the last
            improvement (0: any fall of the mean by more than ``tolerance``).
        tolerance: The least fall of the mean that counts.
        weighted: Weigh each star's difference by the evaluation's ``weights``.

    The state kept for the caller is the one of lowest reported value
    (:meth:`update` says when), whether or not it was an improvement.

    Example:
        >>> stop = EarlyStopping(patience=2, unit="steps", k=2.0)
        >>> rng = np.random.default_rng(0)
        >>> losses = rng.normal(1.0, 1.0, 1000)
        >>> stop.update(Evaluation.of(losses), at=1)
        True
        >>> stop.update(Evaluation.of(losses - 0.5), at=2)  # better by far more than its noise
        True
        >>> stop.update(Evaluation.of(losses - 0.499 + rng.normal(0, 0.01, 1000)), at=3)  # flat
        False
        >>> stop.exhausted(4), stop.reason(4)
        (True, 'no significant held-out improvement for 2 steps')
    """

    patience: int
    unit: str = "steps"
    k: float = 0.0
    tolerance: float = 0.0
    weighted: bool = False
    reference: Evaluation | None = None
    improved_at: int = 0
    best_value: float = math.inf
    best_at: int = 0

    def improves(self, evaluation: Evaluation) -> bool:
        """Whether ``evaluation`` improves on the last improvement (the rule above).

        Arguments:
            evaluation: The held-out stars scored now.
        """
        if not math.isfinite(evaluation.value) or not np.all(np.isfinite(evaluation.losses)):
            return False
        if self.reference is None:
            return True
        if self.k == 0 and not self.weighted:  # the plain rule, on the reported means
            return evaluation.value < self.reference.value - self.tolerance
        d = self.reference.losses - evaluation.losses
        if self.weighted and evaluation.weights is not None:
            w = evaluation.weights
            total = w.sum()
            if total <= 0:
                return False
            gain = float((w * d).sum() / total)
            noise = float(np.sqrt((w**2 * (d - gain) ** 2).sum()) / total)
        else:
            gain = float(d.mean())
            noise = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else 0.0
        return gain > self.k * noise + self.tolerance

    def update(self, evaluation: Evaluation, at: int) -> bool:
        """Score one evaluation; True if its value is the lowest yet (the state to keep).

        Arguments:
            evaluation: The held-out stars scored now.
            at: The step or epoch of the evaluation.
        """
        if self.improves(evaluation):
            self.reference, self.improved_at = evaluation, at
        value = evaluation.value
        lowest = math.isfinite(value) and value < self.best_value - self.tolerance
        if lowest:
            self.best_value, self.best_at = value, at
        return lowest

    def exhausted(self, at: int) -> bool:
        """Whether ``patience`` has passed since the last improvement (or since ``at = 0``).

        Arguments:
            at: The step or epoch now.
        """
        return at - self.improved_at >= self.patience

    def reason(self, at: int) -> str:
        """Why training stopped at ``at``, when it stopped because :meth:`exhausted`.

        Arguments:
            at: The step or epoch now.
        """
        kind = "significant " if self.k > 0 else ""
        return f"no {kind}held-out improvement for {at - self.improved_at} {self.unit}"


@dataclass
class TrainingState:
    """Where a run of :func:`train` is: saved in checkpoints, returned at the end.

    Arguments:
        stopping: The stopping rule and its state.
        at: Steps (or epochs) done.
        best: The kept state (the caller's snapshot), or None.
        rollbacks: Non-finite losses rolled back so far.
        consecutive_rollbacks: Of them, in a row up to now.
        history: ``(at, training loss, held-out loss)`` of each evaluation.
        train_loss: The latest training loss.
        done: Whether training has ended.
        stopped_because: Why it ended (empty while it runs).
        cooldown_from: Where a cooldown began (None: none).
        cooldown_steps: Its length.
        cooldown_reason: Why it began.
    """

    stopping: EarlyStopping
    at: int = 0
    best: Any = None
    rollbacks: int = 0
    consecutive_rollbacks: int = 0
    history: list[tuple[int, float, float]] = field(default_factory=list)
    train_loss: float = math.nan
    done: bool = False
    stopped_because: str = ""
    cooldown_from: int | None = None
    cooldown_steps: int = 0
    cooldown_reason: str = ""

    def cooldown_factor(self) -> float:
        """The factor on the learning rate of the step ``at``: 1, or in a cooldown of
        C steps from s, 0.5 (1 + cos(pi (at - s) / C)), which falls to 0 at its end.

        Example:
            >>> state = TrainingState(EarlyStopping(10), at=150, cooldown_from=100, cooldown_steps=100)
            >>> round(state.cooldown_factor(), 6)
            0.5
        """
        if self.cooldown_from is None:
            return 1.0
        done = min(1.0, (self.at - self.cooldown_from) / self.cooldown_steps)
        return 0.5 * (1.0 + math.cos(math.pi * done))

    @property
    def gave_up(self) -> bool:
        """Whether training ended on too many rollbacks in a row."""
        return self.stopped_because.startswith("gave up")


def train(
    step: Callable[[TrainingState], float],
    evaluate: Callable[[], Evaluation] | None,
    snapshot: Callable[[], Any],
    restore: Callable[[Any], None],
    *,
    total: int,
    stopping: EarlyStopping,
    eval_every: int = 1,
    budget: Callable[[], str | None] | None = None,
    rollback: Callable[[TrainingState], None] | None = None,
    max_rollbacks: int = 8,
    checkpoint: Callable[[TrainingState], None] | None = None,
    checkpoint_every: int | None = None,
    cooldown: int = 0,
    resume: TrainingState | None = None,
    progress: str | None = None,
    transient: bool = True,
) -> TrainingState:
    """Run ``step`` up to ``total`` times with held-out evaluations, early stopping and rollback.

    After each step the held-out stars are scored every ``eval_every`` steps
    (and after the last one); the lowest held-out value's snapshot is kept and
    restored at the end. Training ends when ``stopping`` is exhausted, when
    ``budget`` gives a reason, after ``total`` steps, or after more than
    ``max_rollbacks`` rollbacks in a row; ``stopped_because`` says which.

    Arguments:
        step: Does step ``state.at`` (0-based) and returns its training loss.
        evaluate: Scores the held-out stars; None: no evaluations (and no
            early stopping).
        snapshot: A copy of the state to keep (e.g. a state dict).
        restore: Puts a snapshot back.
        total: Most steps.
        stopping: The stopping rule (a fresh one; ignored on ``resume``).
        eval_every: Steps between evaluations.
        budget: Called after each step; a reason to stop, or None.
        rollback: With it, a non-finite training loss puts the snapshot of
            the last evaluation (at first, of the start) back, does not count
            the step, and calls ``rollback(state)`` (e.g. to lower the learning
            rate, which can read ``state.rollbacks``); that start snapshot is
            also what is kept if no evaluation is finite. Without it the loss
            is not checked.
        max_rollbacks: Rollbacks in a row after which training gives up.
        checkpoint: Called with the state every ``checkpoint_every`` steps and
            once at the end (the caller saves it with its model and optimizer).
        checkpoint_every: Steps between checkpoints (None: only at the end).
        cooldown: With it, when ``stopping`` is exhausted more than
            ``cooldown`` steps before ``total``, training goes on for
            ``cooldown`` steps while ``step`` lowers its learning rate to 0
            by :meth:`TrainingState.cooldown_factor`, then stops: a state
            wandering at a high learning rate is not where to stop.
        resume: A state from a checkpoint to go on from.
        progress: A label to show a progress bar with, or None.
        transient: Remove the progress bar at the end.

    Returns:
        The final state, with the kept snapshot already restored.

    Example:
        >>> weights = {"x": 5.0}
        >>> def step(state):
        ...     weights["x"] *= 0.5
        ...     return weights["x"]
        >>> def evaluate():
        ...     return Evaluation.of(np.full(10, weights["x"] + 1.0))
        >>> state = train(step, evaluate, lambda: dict(weights), weights.update, total=100,
        ...               stopping=EarlyStopping(patience=5, tolerance=1e-3))
        >>> state.at, state.stopped_because
        (20, 'no held-out improvement for 5 steps')
        >>> state.stopping.best_at, weights["x"] == 5.0 * 0.5**15  # the last fall by more than 1e-3
        (15, True)
    """
    state = resume if resume is not None else TrainingState(stopping)
    stopping = state.stopping
    last_good = snapshot() if rollback is not None else None
    if resume is None and rollback is not None:
        state.best = last_good
    bar = ProgressBar(progress, total, state.at, transient) if progress is not None else None
    if bar is not None:
        bar.__enter__()
    try:
        while state.at < total and not state.done:
            loss = float(step(state))
            state.train_loss = loss
            if rollback is not None and not math.isfinite(loss):
                state.rollbacks += 1
                state.consecutive_rollbacks += 1
                restore(last_good)
                rollback(state)
                if state.consecutive_rollbacks > max_rollbacks:
                    state.stopped_because = f"gave up after {state.consecutive_rollbacks} rollbacks in a row"
                    break
                continue
            state.consecutive_rollbacks = 0
            state.at += 1
            if evaluate is not None and (state.at % eval_every == 0 or state.at == total):
                evaluation = evaluate()
                state.history.append((state.at, loss, evaluation.value))
                if rollback is not None:
                    last_good = snapshot()
                if stopping.update(evaluation, state.at):
                    state.best = last_good if last_good is not None else snapshot()
                if state.cooldown_from is None and stopping.exhausted(state.at):
                    if cooldown > 0 and total - state.at > cooldown:
                        state.cooldown_from, state.cooldown_steps = state.at, cooldown
                        state.cooldown_reason = stopping.reason(state.at)
                    else:
                        state.stopped_because = stopping.reason(state.at)
                        state.done = True
            end = None if state.cooldown_from is None else state.cooldown_from + state.cooldown_steps
            if end is not None and state.at >= end:
                state.stopped_because = (
                    f"{state.cooldown_reason}, then a cooldown of {state.cooldown_steps} {stopping.unit}"
                )
                state.done = True
            if not state.done and budget is not None and (reason := budget()) is not None:
                state.stopped_because, state.done = reason, True
            if checkpoint is not None and checkpoint_every and state.at % checkpoint_every == 0:
                checkpoint(state)
            if bar is not None:
                bar.update(state.at, loss, stopping.best_value)
        if not state.stopped_because:
            state.stopped_because = f"max {stopping.unit} ({total})"
        state.done = True
        if checkpoint is not None:
            checkpoint(state)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if state.best is not None:
        restore(state.best)
    return state


class ProgressBar:
    """A rich progress bar of a training run with its loss and best held-out loss.

    Arguments:
        label: Name shown before the bar.
        total: Steps (or epochs) of the whole run.
        start: Where a resumed run starts.
        transient: Remove the bar when the run ends.

    Example:
        >>> with ProgressBar("fit", total=10, transient=True) as bar:
        ...     bar.update(3, loss=1.5, best=1.25)
    """

    def __init__(self, label: str, total: int, start: int = 0, transient: bool = True):
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  held-out best {task.fields[best]:.4f}"),
            TimeElapsedColumn(),
            transient=transient,
        )
        self.task = self.progress.add_task(label, total=total, completed=start, loss=math.nan, best=math.nan)

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, completed: int, loss: float, best: float) -> None:
        """Move the bar to ``completed`` with the latest training loss and the best held-out loss.

        Arguments:
            completed: Steps (or epochs) done.
            loss: The latest training loss.
            best: The lowest held-out loss so far.
        """
        self.progress.update(self.task, completed=completed, loss=loss, best=best)
