"""What a dataset says about its classes, and whether two class lists agree."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

__all__ = ["check_classes_match", "dataset_facts"]


def dataset_facts(dataset: Dataset) -> dict:
    """What inference needs besides the weights: the class count, the class names and, for
    instance data, the label -> category id map (``{label: id of the annotation file}``;
    synthetic data: labels are the category ids)."""
    facts = {}
    n = getattr(dataset, "num_classes", None)
    if n is not None:
        facts["num_classes"] = int(n)
    names = getattr(dataset, "classes", None)  # semantic: class 0 included
    categories = getattr(dataset, "categories", None)
    if not names and categories:  # instance: label 0 is background
        names = ["background", *categories]
        to_category = getattr(dataset, "label_to_category_id", None)
        to_category = to_category or {k: k for k in range(1, len(categories) + 1)}
        facts["label_to_category_id"] = {int(k): int(v) for k, v in to_category.items()}
    if names:
        facts["class_names"] = [str(x) for x in names]  # indexed by the model's labels
    return facts


def _short(names: list[str], limit: int = 8) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_classes_match(
    class_names: list[str], num_classes: int, dataset: Dataset, source: str | Path
) -> None:
    """Raise a ``ValueError`` naming both class lists if the classes of ``source`` (a
    checkpoint, or the training data) differ from those of ``dataset``, the validation data:
    in count, or in names when ``class_names`` are real names (not the placeholders ``"0"``,
    ``"1"``, ... of a checkpoint that does not record them). Scores would mean nothing."""
    facts = dataset_facts(dataset)
    data_names = facts.get("class_names") or [str(k) for k in range(facts.get("num_classes", 0))]
    model_names = list(class_names)
    named = model_names != [str(k) for k in range(num_classes)]
    if num_classes == len(data_names) and (not named or model_names == data_names):
        return
    what = f"({_short(model_names)})" if named else "(names not recorded)"
    raise ValueError(
        f"{source} has {num_classes} classes {what} but val_data has "
        f"{len(data_names)} ({_short(data_names)}): evaluate on data with the same classes"
    )
