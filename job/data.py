"""Loading, checking and splitting the table the job tunes on.

Sources: a CSV or Parquet file (local path, http(s) URL, or object storage: s3://, gs://,
read once by the driver through pyarrow's filesystems with the usual credentials and
AWS_ENDPOINT_URL for S3-compatible stores), or a synthetic table described as
``synthetic:rows=R,features=F,noise=X,seed=S`` for scaling work of any size.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass

import numpy as np
import pandas as pd


class InputError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """An exception's first line, for quoting it inside one error line."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]


@dataclass
class Table:
    X: pd.DataFrame
    y: np.ndarray
    source: str
    categorical: list[str]

    @property
    def rows(self) -> int:
        return len(self.y)

    @property
    def features(self) -> int:
        return self.X.shape[1]


SYNTHETIC_DEFAULTS = {"rows": 10_000, "features": 20, "noise": 1.0, "seed": 0}


def parse_synthetic(spec: str) -> dict:
    body = spec.split(":", 1)[1]
    out = dict(SYNTHETIC_DEFAULTS)
    for part in filter(None, (p.strip() for p in body.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in out:
            raise InputError(
                f"bad synthetic data spec {spec!r}: unknown part {part!r}; "
                "use synthetic:rows=R,features=F,noise=X,seed=S"
            )
        try:
            out[key] = float(value) if key == "noise" else int(value)
        except ValueError:
            raise InputError(f"bad synthetic data spec {spec!r}: {key} must be a number") from None
    if out["rows"] < 20 or out["features"] < 1 or out["noise"] < 0:
        raise InputError(
            f"bad synthetic data spec {spec!r}: need rows >= 20, features >= 1, noise >= 0"
        )
    return out


def synthetic(rows: int, features: int, noise: float, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Friedman #1 on the first five features plus small linear terms on the rest.

    Non-linear enough that tree depth and learning rate matter, so tuning has something
    to find; deterministic for a given seed.
    """
    rng = np.random.default_rng(seed)
    X = rng.random((rows, features), dtype=np.float32)
    padded = np.zeros((rows, max(features, 5)), dtype=np.float32)
    padded[:, :features] = X
    y = (
        10 * np.sin(np.pi * padded[:, 0] * padded[:, 1])
        + 20 * (padded[:, 2] - 0.5) ** 2
        + 10 * padded[:, 3]
        + 5 * padded[:, 4]
    )
    if features > 5:
        w = rng.normal(0, 0.5, features - 5).astype(np.float32)
        y = y + X[:, 5:] @ w
    y = y + noise * rng.standard_normal(rows)
    cols = [f"x{i}" for i in range(features)]
    return pd.DataFrame(X, columns=cols), y.astype(np.float64)


def _is_url(src: str) -> bool:
    return urllib.parse.urlparse(src).scheme in ("http", "https", "s3", "gs", "abfs", "file")


def read_frame(src: str) -> pd.DataFrame:
    if not _is_url(src):
        if not os.path.exists(src):
            raise InputError(
                f"data file {src!r} not found; pass an existing CSV/Parquet path or URL"
            )
        if os.path.isdir(src) and not src.rstrip("/").endswith((".parquet", ".pq")):
            raise InputError(f"data path {src!r} is a directory; pass a CSV or Parquet file")
        if not os.access(src, os.R_OK):
            raise InputError(f"data file {src!r} is not readable; check its permissions")
    lower = src.lower().split("?")[0]
    parquet = lower.endswith((".parquet", ".pq"))
    try:
        if urllib.parse.urlparse(src).scheme in ("s3", "gs", "gcs"):
            return _read_object(src, parquet)
        if parquet:
            return pd.read_parquet(src)
        return pd.read_csv(src)
    except pd.errors.EmptyDataError:
        raise InputError(
            f"data file {src!r} is empty; it needs a header row and data rows"
        ) from None
    except pd.errors.ParserError as e:
        first = str(e).splitlines()[0]
        raise InputError(f"data file {src!r} is not valid CSV ({first})") from None
    except (OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"cannot read data {src!r}: {first}") from None
    except ImportError as e:
        raise InputError(f"cannot read {src!r}: {e}") from None


def _read_object(src: str, parquet: bool) -> pd.DataFrame:
    """s3:// / gs:// through pyarrow (no s3fs / gcsfs needed); OSError when it is missing."""
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(src)
    except Exception as e:  # pyarrow.ArrowInvalid for a malformed URI
        raise OSError(str(e).splitlines()[0] if str(e) else "malformed URI") from None
    info = fs.get_file_info(path)
    if info.type == pyarrow.fs.FileType.NotFound:
        raise InputError(
            f"data object {src!r} not found; check the bucket and key (and AWS_ENDPOINT_URL "
            "for an S3-compatible store)"
        )
    with fs.open_input_file(path) as f:
        return pd.read_parquet(f) if parquet else pd.read_csv(f)


def load(src: str, target: str | None) -> Table:
    if src.startswith("synthetic:") or src == "synthetic":
        opts = parse_synthetic(src if ":" in src else "synthetic:")
        X, y = synthetic(**opts)
        return Table(X, y, src, [])
    df = read_frame(src)
    return prepare(df, target, src)


def prepare(df: pd.DataFrame, target: str | None, src: str) -> Table:
    if df.empty or len(df.columns) == 0:
        raise InputError(f"data {src!r} has no rows; it needs a header row and data rows")
    if not target:
        raise InputError(
            f"--target is required for {src!r}; name one of: {', '.join(map(str, df.columns[:12]))}"
        )
    if target not in df.columns:
        raise InputError(
            f"target column {target!r} not in {src!r}; columns are: {', '.join(map(str, df.columns[:12]))}"
        )
    y_raw = df[target]
    y = pd.to_numeric(y_raw, errors="coerce")
    if y.isna().all():
        raise InputError(
            f"target column {target!r} is not numeric; regression needs a numeric target"
        )
    bad = int(y.isna().sum() - y_raw.isna().sum())
    if bad:
        raise InputError(
            f"target column {target!r} has {bad} non-numeric values (e.g. {y_raw[y.isna() & y_raw.notna()].iloc[0]!r}); clean them or pick another --target"
        )
    keep = y.notna()
    df, y = df[keep], y[keep]
    if len(y) < 20:
        raise InputError(f"data {src!r} has {len(y)} usable rows; the job needs at least 20")
    if y.nunique() < 2:
        raise InputError(f"target column {target!r} is constant; there is nothing to learn")
    X = df.drop(columns=[target])
    if X.shape[1] == 0:
        raise InputError(f"data {src!r} has no feature columns besides the target {target!r}")
    empty = [c for c in X.columns if X[c].isna().all()]
    if empty:
        raise InputError(
            f"column(s) {', '.join(map(str, empty))} are entirely empty; drop them from the data"
        )
    categorical = []
    for c in X.columns:
        if not pd.api.types.is_numeric_dtype(X[c]) and not pd.api.types.is_bool_dtype(X[c]):
            X[c] = X[c].astype("category")
            categorical.append(str(c))
    X.columns = [str(c) for c in X.columns]
    return Table(X.reset_index(drop=True), y.to_numpy(dtype=np.float64), src, categorical)


def split(table: Table, test_size: float, seed: int):
    """Train / test split; the tuner further holds out a validation part of train."""
    from sklearn.model_selection import train_test_split

    if not 0.05 <= test_size <= 0.5:
        raise InputError(
            f"--test-size {test_size} is out of range; use a fraction between 0.05 and 0.5"
        )
    return train_test_split(table.X, table.y, test_size=test_size, random_state=seed)
