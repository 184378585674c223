"""Instance prices for `rayscale plan`: the built-in table (the offline default), or a price
catalog in SkyPilot's catalog CSV format, the files its catalog project publishes per cloud:

    InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region,AvailabilityZone

A type listed in several regions or zones is priced at its cheapest row (in --region where
one is given). A malformed catalog is one line naming the row and the column.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

from rayscale.errors import UserError

# On-demand Linux list prices, USD per hour (AWS us-east-1, GCP us-central1), as the
# providers published them when this table was written (BUILTIN_READ). They change and
# differ by region: pass --prices with a current catalog, or --price.
BUILTIN_READ = "2025"
BUILTIN: dict[str, tuple[int, float, float]] = {  # name -> (vCPUs, GiB, USD/h)
    "m5.xlarge": (4, 16, 0.192),
    "m5.2xlarge": (8, 32, 0.384),
    "m5.4xlarge": (16, 64, 0.768),
    "c5.2xlarge": (8, 16, 0.34),
    "c5.4xlarge": (16, 32, 0.68),
    "m6i.2xlarge": (8, 32, 0.384),
    "n2-standard-4": (4, 16, 0.1942),
    "n2-standard-8": (8, 32, 0.3885),
    "n2-standard-16": (16, 64, 0.7769),
    "c2-standard-8": (8, 32, 0.4176),
}
REQUIRED = ("InstanceType", "vCPUs", "MemoryGiB", "Price")
NUMBERS = ("AcceleratorCount", "vCPUs", "MemoryGiB", "Price", "SpotPrice")
FORMAT = (
    "SkyPilot's catalog CSV: InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,"
    "Price,SpotPrice,Region,AvailabilityZone"
)


@dataclass(frozen=True)
class Offer:
    instance: str
    vcpus: float
    memory_gib: float
    price: float  # USD per hour, on demand
    spot: float | None
    region: str
    accelerators: float = 0.0


@dataclass(frozen=True)
class Catalog:
    offers: tuple[Offer, ...]
    read: str  # where the prices come from, and how old they are

    def offer(self, instance: str, region: str | None = None) -> Offer:
        """The type's cheapest row (in REGION)."""
        rows = [o for o in self.offers if o.instance == instance]
        if not rows:
            names = sorted({o.instance for o in self.offers})
            listed = ", ".join(names) if len(names) <= 12 else f"one of its {len(names)} types"
            raise UserError(
                f"unknown instance type {instance!r} in the prices of {self.read}",
                f"pass {listed}; or `cheapest`; or --cpus-per-worker C --price USD",
            )
        there = [o for o in rows if region is None or o.region == region]
        if not there:
            regions = ", ".join(sorted({o.region for o in rows}))
            raise UserError(
                f"{instance} has no price in region {region!r} ({self.read})",
                f"pass one of its regions: {regions}",
            )
        return min(there, key=lambda o: o.price)

    def cpu_types(self, region: str | None = None) -> list[Offer]:
        """Each type without accelerators, at its cheapest row (in REGION)."""
        best: dict[str, Offer] = {}
        for o in self.offers:
            if o.accelerators or (region and o.region != region):
                continue
            if o.instance not in best or o.price < best[o.instance].price:
                best[o.instance] = o
        return sorted(best.values(), key=lambda o: (o.price, o.instance))


def builtin() -> Catalog:
    return Catalog(
        tuple(Offer(name, c, m, p, None, "") for name, (c, m, p) in BUILTIN.items()),
        f"the built-in table ({BUILTIN_READ})",
    )


def read(path: str | Path) -> Catalog:
    """A catalog in SkyPilot's CSV format; rows without an on-demand price are left out."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise UserError(
                    f"{path} has no {', '.join(missing)} column",
                    f"pass a price catalog in {FORMAT}",
                )
            offers = [o for n, row in enumerate(reader, 2) if (o := _offer(path, n, row))]
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}", "pass a price catalog file") from None
    if not offers:
        raise UserError(f"{path} lists no instance with a price", f"pass a catalog in {FORMAT}")
    modified = time.strftime("%Y-%m-%d", time.localtime(path.stat().st_mtime))
    return Catalog(tuple(offers), f"{path.name} (modified {modified})")


def _offer(path: Path, n: int, row: dict[str, str]) -> Offer | None:
    vals: dict[str, float | None] = {}
    for col in NUMBERS:
        text = (row.get(col) or "").strip()
        try:
            vals[col] = float(text) if text else None
        except ValueError:
            raise UserError(
                f"{path} row {n}, column {col}: {text!r} is not a number",
                "fix that cell (a number, or empty)",
            ) from None
        if vals[col] is not None and vals[col] < 0:
            raise UserError(f"{path} row {n}, column {col}: {text} is negative", "fix that cell")
    name = (row.get("InstanceType") or "").strip()
    if not name:
        raise UserError(f"{path} row {n}, column InstanceType: empty", "name the instance type")
    if vals["Price"] is None:
        return None  # listed for spot or reservations only
    if not vals["vCPUs"] or vals["MemoryGiB"] is None:
        raise UserError(
            f"{path} row {n}, column {'vCPUs' if not vals['vCPUs'] else 'MemoryGiB'}: empty",
            "every priced row needs its vCPUs and memory",
        )
    return Offer(
        name,
        vals["vCPUs"],
        vals["MemoryGiB"],
        vals["Price"],
        vals["SpotPrice"],
        (row.get("Region") or "").strip(),
        vals["AcceleratorCount"] or 0.0,
    )
