"""The churn model, and the scoring of an uploaded CSV with it.

The model is a logistic regression over five customer columns (numbers scaled, categories
one-hot encoded), trained from ``data/churn_train.csv``, which the example ships (600
synthetic rows; ``data/make_dataset.py`` rebuilds them byte for byte).

"Trained at build time" means here: trained once per handler process, when its first job
arrives (`churn_model`, about 50 ms), like a Lambda function's init phase. Training is
deterministic (lbfgs, no random state), so every process holds the same coefficients, and no
binary model file is committed, shipped or unpickled.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

TRAINING_DATA = Path(__file__).resolve().parent / "data" / "churn_train.csv"
ID_COLUMN = "customer_id"
FEATURES = ("tenure_months", "monthly_charges", "support_tickets", "contract", "autopay")
LABEL_COLUMN = "churned"
CONTRACTS = ("month-to-month", "one-year", "two-year")
AUTOPAY = ("yes", "no")
RESULT_COLUMNS = ("row", ID_COLUMN, "churn_probability", LABEL_COLUMN, "error")
#: Larger files are refused whole: one job should finish well within its timeout.
MAX_ROWS = 100_000
# Ids are echoed into the results: letters, digits, '-' and '_' only, so no cell of the
# results can start a spreadsheet formula.
_CUSTOMER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

Row = tuple[int, float, int, str, str]


class InvalidCsv(ValueError):
    """The file as a whole cannot be scored; retrying will not change that."""

    failure_reason = "INVALID_CSV"


@dataclass(frozen=True, slots=True, kw_only=True)
class Scoring:
    """The results CSV and its counts."""

    results_csv: bytes
    rows: int
    scored: int
    rejected: int
    predicted_churn: int


def parse_row(record: Mapping[str | None, object]) -> Row:
    """The model's features of one CSV record; `ValueError` says which column is wrong."""
    if record.get(None) is not None:
        raise ValueError("more fields than columns")
    if any(record.get(column) is None for column in FEATURES):
        raise ValueError("fewer fields than columns")
    values = {column: str(record[column]).strip() for column in FEATURES}
    contract, autopay = values["contract"], values["autopay"]
    if contract not in CONTRACTS:
        raise ValueError(f"contract: not one of {', '.join(CONTRACTS)}")
    if autopay not in AUTOPAY:
        raise ValueError("autopay: not yes or no")
    return (
        _integer(values, "tenure_months", maximum=1200),
        _amount(values, "monthly_charges", maximum=100_000.0),
        _integer(values, "support_tickets", maximum=10_000),
        contract,
        autopay,
    )


def training_data(path: Path = TRAINING_DATA) -> tuple[list[Row], list[int]]:
    """The shipped training rows and their labels (0 stayed, 1 churned)."""
    features: list[Row] = []
    labels: list[int] = []
    for _number, record in _records(path.read_bytes(), (*FEATURES, LABEL_COLUMN)):
        features.append(parse_row(record))
        labels.append(int(str(record[LABEL_COLUMN])))
    return features, labels


def train(features: Sequence[Row], labels: Sequence[int]) -> Pipeline:
    columns = ColumnTransformer(
        [
            ("numbers", StandardScaler(), [0, 1, 2]),
            ("categories", OneHotEncoder(categories=[list(CONTRACTS), list(AUTOPAY)]), [3, 4]),
        ]
    )
    model = Pipeline([("columns", columns), ("classifier", LogisticRegression())])
    model.fit(_matrix(features), np.asarray(labels))
    return model


@functools.cache
def churn_model() -> Pipeline:
    """The model of this process, trained on first use."""
    return train(*training_data())


def churn_probabilities(model: Pipeline, features: Sequence[Row]) -> list[float]:
    if not features:
        return []
    return [float(p) for p in model.predict_proba(_matrix(features))[:, 1]]


def score_csv(data: bytes, *, model: Pipeline, threshold: float = 0.5) -> Scoring:
    """Score every row of an uploaded CSV. A bad row gets an error in the results and the
    rest are scored; a file that is not a CSV with the needed columns raises `InvalidCsv`."""
    parsed: list[tuple[int, str, Row | str]] = []
    for number, record in _records(data, (ID_COLUMN, *FEATURES)):
        customer = str(record.get(ID_COLUMN) or "").strip()
        try:
            if not _CUSTOMER_ID.fullmatch(customer):
                raise ValueError(f"{ID_COLUMN}: 1-64 letters, digits, '-' or '_'")
            parsed.append((number, customer, parse_row(record)))
        except ValueError as exc:
            parsed.append((number, customer if _CUSTOMER_ID.fullmatch(customer) else "", str(exc)))
    valid = [row for _, _, row in parsed if not isinstance(row, str)]
    probabilities = iter(churn_probabilities(model, valid))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    churners = 0
    for number, customer, row in parsed:
        if isinstance(row, str):
            writer.writerow((number, customer, "", "", row))
            continue
        probability = next(probabilities)
        churners += probability >= threshold
        writer.writerow((number, customer, f"{probability:.4f}", int(probability >= threshold), ""))
    return Scoring(
        results_csv=out.getvalue().encode(),
        rows=len(parsed),
        scored=len(valid),
        rejected=len(parsed) - len(valid),
        predicted_churn=churners,
    )


def _records(
    data: bytes, required: Sequence[str]
) -> Iterator[tuple[int, dict[str | None, object]]]:
    """Numbered records (from 1) of a UTF-8 CSV whose header names every required column."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidCsv("the file is not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        header = reader.fieldnames or []
        missing = [column for column in required if column not in header]
        if missing:
            raise InvalidCsv(f"the header lacks {', '.join(missing)}")
        if len(set(header)) != len(header):
            raise InvalidCsv("the header names a column twice")
        count = 0
        for count, record in enumerate(reader, start=1):
            if count > MAX_ROWS:
                raise InvalidCsv(f"more than {MAX_ROWS} rows")
            yield count, dict(record)
    except csv.Error as exc:
        raise InvalidCsv(f"not a readable CSV (line {reader.line_num}): {exc}") from None
    if count == 0:
        raise InvalidCsv("the file has no data rows")


def _integer(values: Mapping[str, str], column: str, *, maximum: int) -> int:
    text = values[column]
    if not text.isascii() or not text.isdigit() or int(text) > maximum:
        raise ValueError(f"{column}: not a whole number 0-{maximum}")
    return int(text)


def _amount(values: Mapping[str, str], column: str, *, maximum: float) -> float:
    try:
        amount = float(values[column])
    except ValueError:
        raise ValueError(f"{column}: not a number") from None
    if not math.isfinite(amount) or not 0 <= amount <= maximum:
        raise ValueError(f"{column}: not between 0 and {maximum:g}")
    return amount


def _matrix(features: Sequence[Row]) -> np.ndarray:
    return np.asarray(features, dtype=object)
