"""Writes the small e-commerce-style example dataset beside this file (synthetic,
deterministic): ``items.csv`` (sku, name, category, description) and ``events.csv``
(customer, sku, action, ts). Customers favour one or two categories and tend to buy
accessories after a main product, so the sequence and co-occurrence channels have
something to find.

Run it again with ``python examples/shop/generate.py``; the files are committed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent

CATEGORIES = {
    "Running": [
        "trail shoe",
        "road shoe",
        "running socks",
        "hydration vest",
        "GPS watch",
        "rain jacket",
        "running tights",
        "headlamp",
    ],
    "Coffee": [
        "espresso machine",
        "burr grinder",
        "milk jug",
        "coffee scale",
        "dark roast beans",
        "light roast beans",
        "pour-over dripper",
        "paper filters",
    ],
    "Camping": [
        "two-person tent",
        "sleeping bag",
        "camping stove",
        "gas canister",
        "trekking poles",
        "water filter",
        "camp chair",
        "insulated mug",
    ],
    "Baking": [
        "stand mixer",
        "sourdough starter kit",
        "bread tin",
        "proofing basket",
        "digital thermometer",
        "silicone mat",
        "rolling pin",
        "bread flour",
    ],
    "Gaming": [
        "game controller",
        "mechanical keyboard",
        "gaming mouse",
        "headset",
        "mouse pad",
        "capture card",
        "monitor arm",
        "controller charger",
    ],
    "Gardening": [
        "pruning shears",
        "garden gloves",
        "seed tray",
        "potting soil",
        "watering can",
        "tomato seeds",
        "raised bed kit",
        "compost bin",
    ],
}
BRANDS = ["Northpeak", "Aster", "Kettle & Co"]


def main(seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    items = []
    for category, products in CATEGORIES.items():
        for index, product in enumerate(products):
            for b, brand in enumerate(BRANDS[: 2 if index % 2 else 3]):
                items.append(
                    {
                        "sku": f"{category[:3].upper()}-{index:02d}{b}",
                        "name": f"{brand} {product}",
                        "category": category,
                        "description": f"{product.capitalize()} by {brand}, "
                        f"for {category.lower()}.",
                    }
                )
    catalog = pd.DataFrame(items)
    by_category = {c: catalog.index[catalog["category"] == c].to_numpy() for c in CATEGORIES}
    names = list(CATEGORIES)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    rows = []
    for customer in range(1, 121):
        liked = rng.choice(names, size=int(rng.integers(1, 3)), replace=False)
        moment = start + timedelta(hours=float(rng.uniform(0, 24 * 60)))
        for _ in range(int(rng.integers(8, 22))):
            category = (
                liked[0]
                if rng.random() < 0.7
                else rng.choice(liked if rng.random() < 0.8 else names)
            )
            pool = by_category[str(category)]
            # main products (low index) first, accessories later: a sequence to learn
            weights = np.linspace(2.0, 1.0, len(pool)) if rng.random() < 0.5 else None
            item = int(rng.choice(pool, p=None if weights is None else weights / weights.sum()))
            action = "purchase" if rng.random() < 0.35 else "click"
            rows.append(
                {
                    "customer": f"c{customer:04d}",
                    "sku": catalog.loc[item, "sku"],
                    "action": action,
                    "ts": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
            )
            moment += timedelta(hours=float(rng.exponential(30.0)))
    events = pd.DataFrame(rows).drop_duplicates(["customer", "sku"], keep="first")
    catalog.to_csv(HERE / "items.csv", index=False)
    events.to_csv(HERE / "events.csv", index=False)
    print(f"{len(catalog)} items, {events['customer'].nunique()} customers, {len(events)} events")


if __name__ == "__main__":
    main()
