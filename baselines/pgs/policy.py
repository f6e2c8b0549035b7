"""PGS group policies: a group per patch from its difficulty, a (t_start, n_steps) schedule per group, respacing."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import torch

from baselines.pgs.util import ASSUMED, check_int, round_half_up

__all__ = ["GROUP_NAMES", "DEFAULT_THRESHOLDS", "DEFAULT_QUANTILES", "DEFAULT_T_FRACTIONS", "DEFAULT_MEDIUM_FRACTION",
           "GroupPolicy", "respace"]

GROUP_NAMES = ("simple", "medium", "hard")
DEFAULT_THRESHOLDS = (0.9, 0.6)  # on D (1 = easy); simple: D >= 0.9, medium: 0.6 <= D < 0.9, hard: D < 0.6
DEFAULT_QUANTILES = (0.5, 0.3, 0.2)  # fraction of the patches per group, easy → hard
DEFAULT_T_FRACTIONS = (0.2, 0.6, 1.0)  # t_start_g = round(fraction · (T - 1)): ResShift T = 15 → 3, 8, 14
DEFAULT_MEDIUM_FRACTION = 0.4  # N_medium = round(0.4 · N_uniform): 15 → 6; N = (2, 6, 15) as in PatchScaler Fig. 1(a)


def _floats(values, name: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers, got {values!r}") from None
    if any(not math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite numbers, got {values!r}")
    return out


def _ints(values, name: str) -> tuple[int, ...]:
    vals = tuple(values)
    if not vals or any(isinstance(v, bool) or not isinstance(v, int) for v in vals):
        raise ValueError(f"{name} must be a non-empty list of integers, got {values!r}")
    return vals


@dataclass(frozen=True)
class GroupPolicy:
    """Per-patch groups from D and a (t_start, n_steps) schedule per group; group 0 is the easiest.

    Exactly one of ``thresholds`` (K - 1 values, strictly decreasing in [0, 1]: group g holds γ_g <= D < γ_{g-1})
    and ``quantiles`` (K fractions summing to 1: the easiest fraction of each image's patches goes to group 0, …).
    ``t_start`` must increase strictly with difficulty; ``assumed`` lists the values that are qdm-bench defaults.
    """

    t_start: tuple[int, ...]
    n_steps: tuple[int, ...]
    thresholds: tuple[float, ...] | None = None
    quantiles: tuple[float, ...] | None = None
    names: tuple[str, ...] | None = None
    assumed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Validate lengths, ranges and ordering."""
        t_start, n_steps = _ints(self.t_start, "t_start"), _ints(self.n_steps, "n_steps")
        object.__setattr__(self, "t_start", t_start)
        object.__setattr__(self, "n_steps", n_steps)
        k = len(t_start)
        if len(n_steps) != k:
            raise ValueError(f"give one step count per group: {k} t_start values but {len(n_steps)} step counts")
        if any(t < 0 for t in t_start):
            raise ValueError(f"t_start values must be >= 0, got {t_start}")
        if any(b <= a for a, b in zip(t_start, t_start[1:])):
            raise ValueError(f"t_start must increase strictly with difficulty (easy → hard), got {t_start}; "
                             "e.g. 3,8,14")
        if any(n < 1 for n in n_steps):
            raise ValueError(f"every group needs at least 1 step, got {n_steps}")
        if (self.thresholds is None) == (self.quantiles is None):
            raise ValueError("give exactly one of thresholds (γ on D) or quantiles (fraction per group)")
        if self.thresholds is not None:
            th = _floats(self.thresholds, "thresholds")
            if len(th) != k - 1:
                raise ValueError(f"{k} groups need {k - 1} thresholds, got {len(th)} ({th})")
            if any(not 0.0 <= v <= 1.0 for v in th):
                raise ValueError(f"thresholds must lie in [0, 1] (D = 1 is easy), got {th}")
            if any(b >= a for a, b in zip(th, th[1:])):
                raise ValueError(f"thresholds must decrease strictly (γ1 > γ2 > …, easy → hard), got {th}; "
                                 f"e.g. {','.join(f'{v:g}' for v in sorted(th, reverse=True))}")
            object.__setattr__(self, "thresholds", th)
        else:
            q = _floats(self.quantiles, "quantiles")
            if len(q) != k:
                raise ValueError(f"{k} groups need {k} quantiles (fractions), got {len(q)} ({q})")
            if any(not 0.0 <= v <= 1.0 for v in q) or abs(sum(q) - 1.0) > 1e-6:
                raise ValueError(f"quantiles must be fractions in [0, 1] summing to 1, got {q}; e.g. 0.5,0.3,0.2")
            object.__setattr__(self, "quantiles", q)
        names = self.names or (GROUP_NAMES if k == 3 else tuple(f"g{i}" for i in range(k)))
        if len(names) != k:
            raise ValueError(f"give one name per group ({k}), got {names}")
        object.__setattr__(self, "names", tuple(names))

    @classmethod
    def default(cls, schedule_len: int = 15, uniform_steps: int | None = None, mode: str = "thresholds",
                thresholds: Sequence[float] | None = None, quantiles: Sequence[float] | None = None,
                t_start: Sequence[int] | None = None, n_steps: Sequence[int] | None = None) -> "GroupPolicy":
        """A 3-group policy in the spirit of PatchScaler; every value not given is a default marked [assumed].

        ``schedule_len`` T is the native schedule length (start indices lie in [0, T)); ``uniform_steps`` the NFE
        of uniform sampling (default T).  Defaults: t_start = round((0.2, 0.6, 1.0)·(T - 1)), N = (2,
        round(0.4·N_uniform), N_uniform), thresholds (0.9, 0.6) or quantiles (0.5, 0.3, 0.2).
        """
        if mode not in ("thresholds", "quantiles"):
            raise ValueError(f"unknown policy {mode!r}; use thresholds or quantiles")
        t_len = check_int(schedule_len, "schedule_len", 2)
        nu = check_int(uniform_steps if uniform_steps is not None else t_len, "uniform_steps")
        k = len(t_start) if t_start is not None else len(n_steps) if n_steps is not None else 3
        assumed = []
        if t_start is None:
            if k != 3:
                raise ValueError(f"give t_start for {k} groups (defaults exist only for 3)")
            t_start = tuple(round_half_up(f * (t_len - 1)) for f in DEFAULT_T_FRACTIONS)
            assumed.append(f"t_start = {','.join(map(str, t_start))} (round((0.2, 0.6, 1.0)·(T-1)), T = {t_len}) "
                           + ASSUMED)
        if n_steps is None:
            if len(t_start) != 3:
                raise ValueError(f"give n_steps for {len(t_start)} groups (defaults exist only for 3)")
            n_steps = (2, max(2, round_half_up(DEFAULT_MEDIUM_FRACTION * nu)), nu)
            n_steps = tuple(min(n, t + 1) for n, t in zip(n_steps, t_start))
            assumed.append(f"n_steps = {','.join(map(str, n_steps))} (PatchScaler Fig. 1(a): 2 for simple, up to "
                           f"{nu} for hard; medium {DEFAULT_MEDIUM_FRACTION:g}·{nu}) " + ASSUMED)
        if mode == "thresholds" and thresholds is None:
            thresholds = DEFAULT_THRESHOLDS if len(t_start) == 3 else None
            if thresholds is None:
                raise ValueError(f"give thresholds for {len(t_start)} groups (defaults exist only for 3)")
            assumed.append(f"thresholds γ = {','.join(f'{v:g}' for v in thresholds)} on D " + ASSUMED)
        if mode == "quantiles" and quantiles is None:
            quantiles = DEFAULT_QUANTILES if len(t_start) == 3 else tuple([1.0 / len(t_start)] * len(t_start))
            assumed.append(f"quantiles = {','.join(f'{v:g}' for v in quantiles)} of the patches per group " + ASSUMED)
        return cls(t_start=tuple(t_start), n_steps=tuple(n_steps),
                   thresholds=tuple(thresholds) if mode == "thresholds" else None,
                   quantiles=tuple(quantiles) if mode == "quantiles" else None, assumed=tuple(assumed))

    @property
    def mode(self) -> str:
        """"thresholds" or "quantiles"."""
        return "thresholds" if self.thresholds is not None else "quantiles"

    @property
    def num_groups(self) -> int:
        """K."""
        return len(self.t_start)

    def table(self) -> dict[int, tuple[int, int]]:
        """{g: (t_start_g, n_steps_g)}."""
        return {g: (t, n) for g, (t, n) in enumerate(zip(self.t_start, self.n_steps))}

    def check_schedule(self, schedule_len: int) -> None:
        """Raise ValueError unless every t_start lies in [0, T) and n_steps <= t_start + 1."""
        for g, (t, n) in self.table().items():
            if t >= schedule_len:
                raise ValueError(f"t_start {t} of group {self.names[g]} is outside the schedule [0, {schedule_len}); "
                                 f"use --t-start values <= {schedule_len - 1}")
            if n > t + 1:
                raise ValueError(f"group {self.names[g]} cannot take {n} steps from t_start {t} (at most "
                                 f"{t + 1}); lower --group-steps or raise --t-start")

    def assign(self, difficulty: torch.Tensor) -> torch.Tensor:
        """Group id per patch, (B, Hp, Wp) long, from D (B, Hp, Wp)."""
        if difficulty.dim() != 3:
            raise ValueError(f"difficulty must be (B, Hp, Wp), got {tuple(difficulty.shape)}")
        if self.thresholds is not None:
            th = torch.tensor(self.thresholds, dtype=difficulty.dtype, device=difficulty.device)
            return (difficulty[..., None] < th).sum(-1)
        b, hp, wp = difficulty.shape
        m = hp * wp
        order = torch.sort(-difficulty.reshape(b, m), dim=1, stable=True).indices  # easiest first
        bounds = torch.tensor([round_half_up(c * m) for c in itertools.accumulate(self.quantiles[:-1])],
                              device=difficulty.device)
        rank_group = torch.searchsorted(bounds, torch.arange(m, device=difficulty.device), right=True)
        groups = torch.empty(b, m, dtype=torch.long, device=difficulty.device)
        groups.scatter_(1, order, rank_group.expand(b, m))
        return groups.reshape(b, hp, wp)

    def describe(self) -> str:
        """One line for reports."""
        rule = (f"thresholds γ={','.join(f'{v:g}' for v in self.thresholds)}" if self.thresholds is not None else
                f"quantiles {','.join(f'{v:g}' for v in self.quantiles)}")
        return f"{rule}; " + ", ".join(f"{n}: t_start {t}, N {s}" for n, t, s in
                                        zip(self.names, self.t_start, self.n_steps))


def respace(t_start: int, n_steps: int) -> list[int]:
    """n_steps original indices from t_start down to 0, evenly spaced (both ends included; [t_start] for 1 step)."""
    t_start, n_steps = check_int(t_start, "t_start", 0), check_int(n_steps, "n_steps")
    if n_steps > t_start + 1:
        raise ValueError(f"cannot take {n_steps} distinct steps from t_start {t_start}; use at most {t_start + 1}")
    if n_steps == 1:
        return [t_start]
    return [round_half_up(t_start * (1 - k / (n_steps - 1))) for k in range(n_steps)]
