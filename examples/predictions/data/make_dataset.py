"""Write the example's customer data: ``churn_train.csv`` (labelled, for training) and
``customers.csv`` (unlabelled, to upload).

The rows are synthetic, drawn from a fixed seed with the standard library only, so running
this again writes the same bytes on any machine::

    python -m examples.predictions.data.make_dataset

Churn follows a logistic rule with noise: short tenure, high charges, many support tickets,
a month-to-month contract and no autopay make a customer more likely to leave.
"""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADER = (
    "customer_id",
    "tenure_months",
    "monthly_charges",
    "support_tickets",
    "contract",
    "autopay",
)
TRAINING_ROWS = 600
UPLOAD_ROWS = 25
_CONTRACTS = {"month-to-month": 0.9, "one-year": -0.5, "two-year": -1.6}
_CONTRACT_SHARES = (0.55, 0.25, 0.20)


def customer(rng: random.Random, number: int) -> dict[str, str]:
    contract = rng.choices(list(_CONTRACTS), weights=_CONTRACT_SHARES)[0]
    tenure = min(72, int(rng.expovariate(1 / 24)))
    charges = round(min(120.0, max(18.0, rng.gauss(65, 25))), 2)
    tickets = min(10, int(rng.expovariate(1 / 1.5)))
    autopay = "yes" if rng.random() < 0.6 else "no"
    return {
        "customer_id": f"C{number:05d}",
        "tenure_months": str(tenure),
        "monthly_charges": f"{charges:.2f}",
        "support_tickets": str(tickets),
        "contract": contract,
        "autopay": autopay,
    }


def churn_probability(row: dict[str, str]) -> float:
    logit = (
        -0.6
        - 0.07 * int(row["tenure_months"])
        + 0.03 * (float(row["monthly_charges"]) - 65)
        + 0.45 * int(row["support_tickets"])
        + _CONTRACTS[row["contract"]]
        + (0.6 if row["autopay"] == "no" else 0.0)
    )
    return 1 / (1 + math.exp(-logit))


def write(path: Path, rows: list[dict[str, str]], columns: tuple[str, ...]) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    rng = random.Random(20_261_123)  # noqa: S311 - reproducible synthetic data, not secrets
    training = [customer(rng, n) for n in range(1, TRAINING_ROWS + 1)]
    for row in training:
        row["churned"] = "1" if rng.random() < churn_probability(row) else "0"
    write(HERE / "churn_train.csv", training, (*HEADER, "churned"))
    uploads = [customer(rng, n) for n in range(TRAINING_ROWS + 1, TRAINING_ROWS + UPLOAD_ROWS + 1)]
    write(HERE / "customers.csv", uploads, HEADER)


if __name__ == "__main__":
    main()
