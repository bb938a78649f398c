"""The evaluation that follows tuning, shared by the CLI and the service's driver: which values run
(the tuned set, halved where the schedule says so, and the baselines), for how long, with which
task options; and the AdamQLR paper's bootstrap summary of an ASHA job's repeats."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lodo
import schedules

from .asha import AshaConfig, bootstrap_summary
from .rundir import write_json
from .tuning import TuneConfig

BOOTSTRAP_RESAMPLES = 50  # clarke.md §2.4


def reference_values(
    task: str, name: str, tuned: str = "paper", *, schedule: schedules.Schedule | None = None
) -> tuple[dict[str, float], str]:
    """(values, source) of an optimizer this job did not tune: Table 6's values where the paper has
    them (unless ``tuned="defaults"``), else the registry defaults.

    Table 6 holds the values before the final-run halving (lodo.md §3.5, §3.8), so when
    ``schedule`` halves (``mnist-autoregression``) they are halved as the paper's final runs had
    them; ``schedule=None`` leaves them as printed.
    """
    if tuned == "paper":
        try:
            values = schedules.paper_values(task, name)
        except ValueError:
            pass
        else:
            return _for_final_runs(schedule, name, values, "paper Table 6")
    return lodo.get(name).defaults, "defaults"


def tuned_values(document: dict[str, Any], source: str) -> tuple[dict[str, float], str]:
    """(values, source) of a ``hyperparameters.json`` for final runs: a GA result halved as its
    schedule says (§3.5), an ASHA or one-pass result as it is."""
    values = dict(document["hyperparameters"])
    if document.get("strategy", "ga") != "ga":
        return values, source
    schedule = schedules.Schedule.model_validate(document["schedule"])
    return _for_final_runs(schedule, document["optimizer"], values, source)


def _for_final_runs(
    schedule, name: str, values: dict[str, float], source: str
) -> tuple[dict[str, float], str]:
    final = values if schedule is None else schedules.apply_halving(schedule, name, values)
    return final, f"{source} (halved)" if final != values else source


@dataclass(frozen=True)
class FinalEvaluation:
    """The arguments of :func:`tuner.evaluate.evaluate` after a GA or ASHA run."""

    entries: dict[str, dict[str, float]]
    sources: dict[str, str]
    steps: int
    step_scale: float
    task_options: dict[str, Any]

    @classmethod
    def after_tuning(
        cls,
        config: TuneConfig | AshaConfig,
        document: dict[str, Any],
        baselines: list[str],
        *,
        step_scale: float,
    ) -> FinalEvaluation:
        """GA: the schedule's final length, its halving rule (lodo.md §3.5) applied to the tuned
        values and to the baselines' Table 6 values alike. ASHA: ``max_t`` steps at the batch size
        it tuned, nothing halved. Baselines as :func:`reference_values`; ``step_scale`` is the
        request's (a GA schedule carries its own)."""
        if isinstance(config, AshaConfig):  # the AdamQLR paper's protocol: no halving
            schedule, steps, task_options = None, config.max_t, dict(document["task_options"])
        else:
            schedule = config.schedule
            steps, step_scale, task_options = (
                schedule.final_steps,
                schedule.step_scale,
                dict(config.task_options),
            )
        final, source = _for_final_runs(schedule, config.optimizer, document["hyperparameters"], "tuned")
        entries, sources = {config.optimizer: final}, {config.optimizer: source}
        for name in baselines:
            if name not in entries:
                entries[name], sources[name] = reference_values(config.task, name, schedule=schedule)
        return cls(entries, sources, steps, step_scale, task_options)


def write_bootstrap(evaluation: dict[str, Any], out_dir: Path, seed: int) -> dict[str, dict[str, Any]]:
    """Bootstrap medians of an evaluation's repeats, written to ``out_dir/bootstrap.json``."""
    summary = bootstrap_summary(evaluation, resamples=BOOTSTRAP_RESAMPLES, seed=seed)
    write_json(out_dir / "bootstrap.json", {"resamples": BOOTSTRAP_RESAMPLES, "optimizers": summary})
    return summary
