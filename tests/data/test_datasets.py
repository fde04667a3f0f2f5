"""Loading and validating datasets: MovieLens-100K and the two-file format."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plugin.core.events import WatchEvent
from plugin.data.datasets import (
    BUILTIN_DATASETS,
    INTERACTION_COLUMNS,
    Dataset,
    DatasetError,
    load_dataset,
    load_files,
    load_movielens_100k,
    write_files,
)
from plugin.settings import DataSettings

ITEMS_CSV = """item_id,title,genres,description,tags
i1,Alpha (1995),Comedy|Drama,A funny film,cult|quotable
i2,Beta (1987),Action,,
i3,Gamma,Horror,,
"""

INTERACTIONS_CSV = """event_id,user_id,item_id,timestamp,rating,watch_ratio
e1,u1,i1,1700000000,4,
e2,u1,i2,2023-11-14T22:14:00Z,,0.9
e3,u2,i3,1700000100.5,3.5,0.25
e4,u2,i1,2023-11-14T23:00:00+02:00,5,1.0
"""


@pytest.fixture(scope="module")
def movielens() -> Dataset:
    return load_movielens_100k()


def write_pair(
    tmp_path: Path, interactions: str = INTERACTIONS_CSV, items: str = ITEMS_CSV
) -> tuple[Path, Path]:
    inter_path, items_path = tmp_path / "interactions.csv", tmp_path / "items.csv"
    inter_path.write_text(interactions)
    items_path.write_text(items)
    return inter_path, items_path


# --- MovieLens-100K ------------------------------------------------------------------------


def test_movielens_100k_shape_and_types(movielens: Dataset) -> None:
    inter = movielens.interactions
    assert movielens.name == "movielens-100k"
    assert list(inter.columns) == list(INTERACTION_COLUMNS)
    assert len(inter) == 100_000
    assert inter["user_id"].nunique() == 943
    assert len(movielens.items) == 1682 and movielens.items["item_id"].is_unique
    assert str(inter["event_time"].dtype) == "datetime64[ns, UTC]"
    assert inter["rating"].between(1, 5).all() and inter["watch_ratio"].isna().all()
    assert isinstance(inter.index, pd.RangeIndex)
    assert isinstance(inter["user_id"].iloc[0], str) and isinstance(inter["item_id"].iloc[0], str)
    keys = list(zip(inter["event_time"], inter["event_id"], strict=True))
    assert keys == sorted(keys)
    assert inter["event_id"].is_unique


def test_movielens_100k_items_carry_year_and_genres(movielens: Dataset) -> None:
    items = movielens.items.set_index("item_id")
    assert items.loc["1", "title"] == "Toy Story (1995)"
    assert items.loc["1", "genres"] == ("Animation", "Children's", "Comedy")
    assert items.loc["267", "genres"] == ()  # MovieLens' "unknown" placeholder is no genre
    assert (items["description"] == "").all() and (items["tags"] == "").all()


def test_fingerprint_is_stable_and_content_sensitive(movielens: Dataset) -> None:
    again = load_movielens_100k()
    assert movielens.fingerprint() == again.fingerprint()
    assert len(movielens.fingerprint()) == 16
    int(movielens.fingerprint(), 16)
    changed = movielens.interactions.copy()
    changed.loc[5, "rating"] = 1.0 if changed.loc[5, "rating"] != 1.0 else 2.0
    other = Dataset(movielens.name, changed, movielens.items)
    assert other.fingerprint() != movielens.fingerprint()


def test_load_dataset_picks_builtin_or_files(tmp_path: Path) -> None:
    assert "movielens-100k" in BUILTIN_DATASETS
    assert load_dataset(DataSettings()).name == "movielens-100k"
    inter, items = write_pair(tmp_path)
    loaded = load_dataset(DataSettings(interactions=inter, items=items))
    assert loaded.name == "interactions" and len(loaded.interactions) == 4


def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(ValueError, match="movielens-100k") as err:
        load_dataset(DataSettings(dataset="netflix-prize"))
    assert "netflix-prize" in str(err.value)


# --- splits and events ---------------------------------------------------------------------


def test_time_split_boundaries(movielens: Dataset) -> None:
    train, test = movielens.time_split(0.8)
    boundary = movielens.interactions["event_time"].quantile(0.8)
    assert len(train.interactions) + len(test.interactions) == 100_000
    assert train.interactions["event_time"].max() < boundary
    assert test.interactions["event_time"].min() >= boundary
    assert abs(len(train.interactions) - 80_000) < 100
    assert train.items is movielens.items and test.items is movielens.items
    assert isinstance(test.interactions.index, pd.RangeIndex)
    assert test.interactions.index[0] == 0


def test_time_split_keeps_one_instant_on_one_side(tmp_path: Path) -> None:
    rows = ["event_id,user_id,item_id,timestamp,rating"]
    rows += [f"e{i},u{i},i1,{1000 if i < 6 else 2000},4" for i in range(10)]
    inter, items = write_pair(tmp_path, "\n".join(rows) + "\n")
    data = load_files(inter, items)
    train, test = data.time_split(0.7)  # the 0.7 quantile lies between the two instants
    assert len(train.interactions) == 6 and len(test.interactions) == 4
    train, test = data.time_split(0.5)  # the median *is* the first instant: nothing before it
    assert len(train.interactions) == 0 and len(test.interactions) == 10
    with pytest.raises(ValueError, match="quantile"):
        load_files(inter, items).time_split(1.0)


def test_head_takes_the_first_events(movielens: Dataset) -> None:
    head = movielens.head(10)
    pd.testing.assert_frame_equal(head.interactions, movielens.interactions.iloc[:10])
    assert len(movielens.head(0).interactions) == 0


def test_events_are_valid_watch_events_in_order(movielens: Dataset) -> None:
    events = list(movielens.head(2000).events())
    assert len(events) == 2000
    assert [e.order_key for e in events] == sorted(e.order_key for e in events)
    for event in events[:200]:
        assert WatchEvent.model_validate(event.model_dump()) == event
        assert type(event.event_time) is datetime and event.event_time.tzinfo == UTC
        assert isinstance(event.rating, float) and event.watch_ratio is None
    assert events[0].event_id == movielens.interactions["event_id"].iloc[0]


def test_events_carry_missing_scores_as_none(tmp_path: Path) -> None:
    events = list(load_files(*write_pair(tmp_path)).events())
    by_id = {e.event_id: e for e in events}
    assert by_id["e2"].rating is None and by_id["e2"].watch_ratio == 0.9
    assert by_id["e1"].watch_ratio is None and by_id["e1"].rating == 4.0
    for event in events:
        assert WatchEvent.model_validate(event.model_dump()) == event


# --- the two-file format -------------------------------------------------------------------


def test_csv_parses_epoch_and_iso_timestamps(tmp_path: Path) -> None:
    data = load_files(*write_pair(tmp_path))
    times = data.interactions.set_index("event_id")["event_time"]
    assert times["e1"] == pd.Timestamp(1_700_000_000, unit="s", tz="UTC")
    assert times["e3"] == pd.Timestamp(1_700_000_100.5, unit="s", tz="UTC")
    assert times["e2"] == pd.Timestamp("2023-11-14T22:14:00Z")
    assert times["e4"] == pd.Timestamp("2023-11-14T21:00:00Z")  # +02:00 converted to UTC
    assert list(data.interactions["event_id"]) == ["e4", "e1", "e2", "e3"]  # by time
    items = data.items.set_index("item_id")
    assert items.loc["i1", "genres"] == ("Comedy", "Drama")
    assert items.loc["i1", "tags"] == "cult|quotable" and items.loc["i2", "description"] == ""


def test_event_ids_are_derived_from_name_and_row(tmp_path: Path) -> None:
    body = "user_id,item_id,timestamp,watch_ratio\nu1,i1,100,0.5\nu2,i2,50,1.0\n"
    data = load_files(*write_pair(tmp_path, body), name="my data")
    assert list(data.interactions["event_id"]) == ["my_data:2", "my_data:1"]
    assert data.interactions["rating"].isna().all()


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_round_trip(tmp_path: Path, movielens: Dataset, suffix: str) -> None:
    original = movielens.head(3000)
    inter, items = tmp_path / f"inter.{suffix}", tmp_path / f"items.{suffix}"
    write_files(original, inter, items)
    loaded = load_files(inter, items, name=original.name)
    pd.testing.assert_frame_equal(loaded.interactions, original.interactions)
    pd.testing.assert_frame_equal(loaded.items, original.items)
    assert loaded.fingerprint() == original.fingerprint()


def test_parquet_with_epoch_and_integer_ids(tmp_path: Path) -> None:
    pd.DataFrame({"item_id": [1, 2], "title": ["A", "B"], "genres": ["x", "y|z"]}).to_parquet(
        tmp_path / "items.parquet"
    )
    pd.DataFrame(
        {
            "user_id": [7, 8],
            "item_id": [2, 1],
            "timestamp": [1_600_000_000, 1_500_000_000],
            "rating": [4.5, np.nan],
            "watch_ratio": [np.nan, 0.3],
        }
    ).to_parquet(tmp_path / "inter.parquet")
    data = load_files(tmp_path / "inter.parquet", tmp_path / "items.parquet")
    assert list(data.interactions["user_id"]) == ["8", "7"]
    assert list(data.items["genres"]) == [("x",), ("y", "z")]


def test_parquet_naive_timestamps_are_rejected(tmp_path: Path) -> None:
    pd.DataFrame({"item_id": ["a"], "title": ["A"], "genres": ["x"]}).to_parquet(
        tmp_path / "items.parquet"
    )
    pd.DataFrame(
        {
            "user_id": ["u"],
            "item_id": ["a"],
            "rating": [3.0],
            "timestamp": [pd.Timestamp("2024-01-01")],
        }
    ).to_parquet(tmp_path / "i.parquet")
    with pytest.raises(DatasetError, match="no time zone") as err:
        load_files(tmp_path / "i.parquet", tmp_path / "items.parquet")
    assert err.value.row == 1 and err.value.column == "timestamp"


GOOD_ROW = "e9,u9,i1,1700000200,4,"
HEADER = "event_id,user_id,item_id,timestamp,rating,watch_ratio"


def inter_with(bad_line: str, at_row: int = 2) -> str:
    lines = INTERACTIONS_CSV.strip().splitlines()
    lines.insert(at_row, bad_line)  # lines[0] is the header, so data row == at_row
    return "\n".join(lines) + "\n"


BAD_INTERACTIONS = [
    ("rating-text", inter_with("e9,u9,i1,1700000200,abc,"), 2, "rating", "not a number: 'abc'"),
    ("rating-nan", inter_with("e9,u9,i1,1700000200,NaN,", 4), 4, "rating", "not a number"),
    ("rating-negative", inter_with("e9,u9,i1,1700000200,-1,"), 2, "rating", "negative rating"),
    ("rating-too-big", inter_with("e9,u9,i1,1700000200,11,"), 2, "rating", "above 10"),
    ("rating-inf", inter_with("e9,u9,i1,1700000200,inf,"), 2, "rating", "finite"),
    ("ratio-too-big", inter_with("e9,u9,i1,1700000200,,12"), 2, "watch_ratio", "above 10"),
    ("ratio-negative", inter_with("e9,u9,i1,1700000200,,-0.5"), 2, "watch_ratio", "negative"),
    ("no-engagement", inter_with("e9,u9,i1,1700000200,,"), 2, "rating", "both are empty"),
    ("time-garbage", inter_with("e9,u9,i1,yesterday,4,"), 2, "timestamp", "not epoch seconds"),
    (
        "time-naive",
        inter_with("e9,u9,i1,2023-11-14T22:14:00,4,"),
        2,
        "timestamp",
        "without a time zone",
    ),
    ("time-date-only", inter_with("e9,u9,i1,2023-11-14,4,"), 2, "timestamp", "without a time zone"),
    ("time-millis", inter_with("e9,u9,i1,1700000000000,4,"), 2, "timestamp", "milliseconds"),
    ("time-empty", inter_with("e9,u9,i1,,4,"), 2, "timestamp", "empty timestamp"),
    ("user-empty", inter_with("e9,,i1,1700000200,4,"), 2, "user_id", "empty user_id"),
    ("user-space", inter_with("e9,u 9,i1,1700000200,4,"), 2, "user_id", "printable ASCII"),
    (
        "item-unknown",
        inter_with("e9,u9,i77,1700000200,4,", 3),
        3,
        "item_id",
        "'i77' is not in the items file",
    ),
    (
        "event-duplicate",
        inter_with("e1,u9,i1,1700000200,4,", 3),
        3,
        "event_id",
        "duplicate event_id 'e1'",
    ),
    (
        "first-bad-row-wins",
        inter_with("e9,u9,i1,1700000200,abc,", 3).replace(
            "e2,u1,i2,2023-11-14T22:14:00Z", "e2,u1,i2,noon"
        ),
        2,
        "timestamp",
        "not epoch",
    ),
    (
        "missing-column",
        "user_id,item_id,rating\nu1,i1,4\n",
        None,
        "timestamp",
        "missing required column",
    ),
    (
        "no-score-columns",
        "user_id,item_id,timestamp\nu1,i1,4\n",
        None,
        "rating",
        "'rating' or 'watch_ratio'",
    ),
    ("header-only", HEADER + "\n", None, None, "no data rows"),
    ("zero-bytes", "", None, None, "file is empty"),
    ("ragged", inter_with("e9,u9,i1,1700000200,4,,extra", 3), 3, None, "malformed CSV"),
]


@pytest.mark.parametrize(
    ("body", "row", "column", "message"),
    [case[1:] for case in BAD_INTERACTIONS],
    ids=[case[0] for case in BAD_INTERACTIONS],
)
def test_bad_interactions_name_file_row_and_column(
    tmp_path: Path, body: str, row: int | None, column: str | None, message: str
) -> None:
    inter, items = write_pair(tmp_path, interactions=body)
    with pytest.raises(DatasetError) as err:
        load_files(inter, items)
    error = err.value
    assert (error.path, error.row, error.column) == (inter, row, column)
    assert message in error.message
    text = str(error)
    assert text.startswith("interactions.csv")
    if row is not None:
        assert f"row {row}" in text
    if column is not None:
        assert f"column '{column}'" in text


BAD_ITEMS = [
    ("duplicate", ITEMS_CSV + "i2,Beta again,Action,,\n", 4, "item_id", "duplicate item_id 'i2'"),
    ("empty-title", ITEMS_CSV.replace("i3,Gamma", "i3,"), 3, "title", "empty title"),
    ("empty-id", ITEMS_CSV.replace("i2,Beta", ",Beta"), 2, "item_id", "empty item_id"),
    ("missing-genres", "item_id,title\ni1,A\n", None, "genres", "missing required column"),
]


@pytest.mark.parametrize(
    ("body", "row", "column", "message"),
    [case[1:] for case in BAD_ITEMS],
    ids=[case[0] for case in BAD_ITEMS],
)
def test_bad_items_name_file_row_and_column(
    tmp_path: Path, body: str, row: int | None, column: str | None, message: str
) -> None:
    inter, items = write_pair(tmp_path, items=body)
    with pytest.raises(DatasetError) as err:
        load_files(inter, items)
    assert (err.value.path, err.value.row, err.value.column) == (items, row, column)
    assert message in err.value.message
    assert str(err.value).startswith("items.csv")


def test_error_message_format() -> None:
    error = DatasetError(Path("/data/interactions.csv"), 17, "rating", "not a number: 'abc'")
    assert str(error) == "interactions.csv, row 17, column 'rating': not a number: 'abc'"
    assert isinstance(error, ValueError)
    assert str(DatasetError(Path("x.csv"), None, None, "file is empty")) == "x.csv: file is empty"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("interactions.txt", "a,b\n", "unknown file type '.txt'"),
        ("interactions.parquet", "not parquet at all", "not a readable Parquet file"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    _, items = write_pair(tmp_path)
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DatasetError, match=message) as err:
        load_files(path, items)
    assert err.value.path == path and err.value.row is None


def test_missing_file(tmp_path: Path) -> None:
    _, items = write_pair(tmp_path)
    with pytest.raises(DatasetError, match="file not found") as err:
        load_files(tmp_path / "nope.csv", items)
    assert str(err.value).startswith("nope.csv: file not found")
