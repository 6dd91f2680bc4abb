"""The validation metrics a domain declares: name, unit and direction.

Reports, comparisons, published rows and targets read a domain's metrics from here (through the
records), never from the domain's name: a regression domain has a loss and no accuracy, an RL
domain a return. Validation computes two matrices per checkpoint, the query loss and the
domain's score (accuracy for classification, mean return for RL); ``source`` says which one a
metric is, and its record fields are ``{name}_by_step`` and ``{name}_final_per_task``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Source = Literal["loss", "score"]


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    higher_is_better: bool
    source: Source  # which validation matrix holds it: the query loss, or the domain's score

    def __str__(self) -> str:
        return self.name

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better else a < b

    def reached(self, value: float, target: float) -> bool:
        """Whether ``value`` meets ``target`` (at or above it, or at or below for a loss)."""
        return value >= target if self.higher_is_better else value <= target

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    def as_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Metric:
        return cls(
            name=str(record["name"]),
            unit=str(record["unit"]),
            higher_is_better=bool(record["higher_is_better"]),
            source="score" if record.get("source") == "score" else "loss",
        )


MSE = Metric("loss", "mean squared error", higher_is_better=False, source="loss")
CROSS_ENTROPY = Metric("loss", "cross-entropy", higher_is_better=False, source="loss")
ACCURACY = Metric(
    "accuracy", "fraction of query examples right", higher_is_better=True, source="score"
)
RETURN = Metric("return", "mean return per episode", higher_is_better=True, source="score")
NEGATIVE_RETURN = Metric("loss", "minus the mean return", higher_is_better=False, source="loss")

CLASSIFICATION = (ACCURACY, CROSS_ENTROPY)
REGRESSION = (MSE,)


def metric_fields(metrics: tuple[Metric, ...], losses: Any, scores: Any) -> dict[str, list[Any]]:
    """A validation's record fields from its [steps + 1, V] loss and score matrices: per declared
    metric, the mean per step and the final step per task (nothing for an undeclared one)."""
    fields: dict[str, list[Any]] = {}
    for metric in metrics:
        matrix = losses if metric.source == "loss" else scores
        fields[f"{metric.name}_by_step"] = matrix.mean(axis=1).tolist()
        fields[f"{metric.name}_final_per_task"] = matrix[-1].tolist()
    return fields
