"""Prometheus metrics of the service, on a registry of its own (tests create many apps in one process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

#: why profiling rows are dropped: the ``reason`` label of ``flywheel_profile_dropped_rows_total``
PROFILE_DROP_REASONS = ("queue_full", "worker_died", "write_failed", "shutdown")


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "flywheel_requests_total",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "flywheel_request_latency_seconds",
            "Request latency by endpoint",
            ["endpoint"],
            buckets=(0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0, 2.5),
            registry=self.registry,
        )
        self.predictions = Histogram(
            "flywheel_prediction_value",
            "Distribution of predictions (probabilities for binary tasks)",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
            registry=self.registry,
        )
        self.rows = Counter("flywheel_predicted_rows_total", "Rows scored", registry=self.registry)
        self.model_version = Gauge(
            "flywheel_model_version",
            "Version of the model being served (1 for the current one)",
            ["model", "version"],
            registry=self.registry,
        )
        self.model_created = Gauge(
            "flywheel_model_created_timestamp_seconds",
            "When the served version was registered (epoch seconds): the freshness SLO's age",
            registry=self.registry,
        )
        self.model_loads = Counter(
            "flywheel_model_loads_total", "Model loads by outcome", ["outcome"], registry=self.registry
        )
        self.queue_depth = Gauge(
            "flywheel_profile_queue_depth",
            "Rows handed to the profiling process and not yet taken by it",
            registry=self.registry,
        )
        self.profile_dropped = Counter(
            "flywheel_profile_dropped_rows_total",
            "Rows lost to profiling, by reason: queue_full (the bound on rows in flight), worker_died "
            "(queued or held by a profiling process that died), write_failed (rows of each failed write: "
            "a prediction log, a window profile, feedback labels), shutdown (not handed over or written "
            "when the service stopped)",
            ["reason"],
            registry=self.registry,
        )
        # every reason exported from the start, at 0, so an alert can rate() one that never happened yet
        for reason in PROFILE_DROP_REASONS:
            self.profile_dropped.labels(reason=reason)
        self.profiler_up = Gauge(
            "flywheel_profiler_up",
            "1 while the profiling process runs, 0 while it is down (waiting to restart) or profiling is off",
            registry=self.registry,
        )
        self.profiler_restarts = Counter(
            "flywheel_profiler_restarts_total",
            "Profiling processes started to replace one that died (a crash loop shows as a steady rate)",
            registry=self.registry,
        )
        self.feedback = Counter(
            "flywheel_feedback_total", "Ground-truth labels received", registry=self.registry
        )
        self.model_is_champion = Gauge(
            "flywheel_model_is_champion",
            "1 when the served version is the one the champion alias names, 0 when it is not or none is",
            registry=self.registry,
        )

        # per version and role (champion, canary, shadow), while a rollout runs: what its guardrails read
        self.version_rows = Counter(
            "flywheel_version_scored_rows_total",
            "Rows scored, by model version and role: champion, canary (answers a share of the requests), "
            "shadow (scores a copy, answers nothing)",
            ["version", "role"],
            registry=self.registry,
        )
        self.version_errors = Counter(
            "flywheel_version_errors_total",
            "Scorings that failed, by version and role (a failed canary scoring is answered by the champion)",
            ["version", "role"],
            registry=self.registry,
        )
        self.version_latency = Histogram(
            "flywheel_version_scoring_seconds",
            "Time the booster took for one request's rows, by version and role",
            ["version", "role"],
            buckets=(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.version_mean = Summary(
            "flywheel_version_mean_prediction",
            "Each request's mean prediction (multiclass: of its predicted class's probability), by version "
            "and role: the mean of means is what the rollout's shift guardrail compares",
            ["version", "role"],
            registry=self.registry,
        )
        self.shadow_dropped = Counter(
            "flywheel_shadow_dropped_total",
            "Requests not shadowed: the shadow queue was full, or the candidate takes other features",
            ["reason"],
            registry=self.registry,
        )
        self.shadow_agreement = Counter(
            "flywheel_shadow_decisions_total",
            "Rows the shadow scored, by whether its decision (class) agreed with the champion's",
            ["agree"],
            registry=self.registry,
        )
        self._series: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._versions: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {}

    def request_series(self, endpoint: str, status: int) -> tuple[Any, Any]:
        """The request counter and latency histogram of one endpoint and status, looked up once: a
        ``labels()`` call costs ~6 us, as much as the rest of the bookkeeping of a request."""
        series = self._series.get((endpoint, status))
        if series is None:
            series = (
                self.requests.labels(endpoint=endpoint, status=str(status)),
                self.latency.labels(endpoint=endpoint),
            )
            self._series[(endpoint, status)] = series
        return series

    def version_series(self, version: str, role: str) -> tuple[Any, Any, Any, Any]:
        """(rows, errors, latency, mean prediction) of one version in one role, looked up once."""
        series = self._versions.get((version, role))
        if series is None:
            labels = {"version": version, "role": role}
            series = (
                self.version_rows.labels(**labels),
                self.version_errors.labels(**labels),
                self.version_latency.labels(**labels),
                self.version_mean.labels(**labels),
            )
            self._versions[(version, role)] = series
        return series

    def observe_version(self, version: str, role: str, predictions: Any, seconds: float) -> None:
        """One scoring of ``version`` as ``role``: rows, time, mean prediction."""
        rows, _, latency, mean = self.version_series(version, role)
        n = len(predictions)
        rows.inc(n)
        latency.observe(seconds)
        if n == 1 and predictions.ndim == 1:  # one row: numpy's mean costs 2.8 us, a float 0.1
            mean.observe(float(predictions[0]))
        elif n:
            values = predictions if predictions.ndim == 1 else predictions.max(axis=1)
            mean.observe(float(values.mean()))

    def serving(self, model: str, version: str, created_at: float = 0.0) -> None:
        self.model_version.clear()
        self.model_version.labels(model=model, version=version).set(1)
        self.model_created.set(created_at)

    def observe_predictions(self, predictions: Any) -> None:
        """The first 100 predictions of a request into the histogram; a multiclass row is its class
        probabilities, of which the predicted class's is taken."""
        observed = predictions if predictions.ndim == 1 else predictions.max(axis=1)
        for p in observed[:100]:
            self.predictions.observe(float(p))
