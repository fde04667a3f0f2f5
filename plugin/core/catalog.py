"""The interest-cluster catalog: a two-level hierarchy of clusters with language descriptions.

The catalog is a versioned artifact. Its version is a hash of its content, so plans, models and
manifests can say exactly which clusters they were made against. Building it lives in
``plugin.data.clustering``; this module is the data and its (de)serialisation only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CATALOG_FORMAT = 1


@dataclass(frozen=True)
class InterestCluster:
    """A leaf cluster: a set of items with a keyword description."""

    cluster_id: int
    parent_id: int
    keywords: tuple[str, ...]
    top_items: tuple[str, ...]
    size: int
    # A readable description for a language model ("1990s action and thriller, such as
    # Speed and The Rock"); empty for catalogs built before it existed.
    summary: str = ""

    @property
    def description(self) -> str:
        return ", ".join(self.keywords)

    @property
    def readable(self) -> str:
        """The readable summary, or the keywords when the catalog has none."""
        return self.summary or self.description


@dataclass(frozen=True)
class ParentCluster:
    """A top-level cluster grouping leaf clusters."""

    parent_id: int
    keywords: tuple[str, ...]
    children: tuple[int, ...]
    summary: str = ""

    @property
    def description(self) -> str:
        return ", ".join(self.keywords)

    @property
    def readable(self) -> str:
        """The readable summary, or the keywords when the catalog has none."""
        return self.summary or self.description


@dataclass(frozen=True)
class ClusterCatalog:
    """All leaf clusters (index == cluster_id), their parents, and the item -> cluster map."""

    clusters: tuple[InterestCluster, ...]
    parents: tuple[ParentCluster, ...]
    item_to_cluster: Mapping[str, int]
    build: Mapping[str, Any] = field(default_factory=dict)
    item_titles: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for index, cluster in enumerate(self.clusters):
            if cluster.cluster_id != index:
                raise ValueError(f"cluster at index {index} has id {cluster.cluster_id}")

    def __len__(self) -> int:
        return len(self.clusters)

    def cluster_of(self, item_id: str) -> int | None:
        """The leaf cluster of an item, or None for an item the catalog does not know."""
        return self.item_to_cluster.get(item_id)

    def describe(self, cluster_id: int) -> str:
        cluster = self.clusters[cluster_id]
        return f"{self.parents[cluster.parent_id].keywords[0]} / {cluster.description}"

    def title(self, item_id: str) -> str:
        return self.item_titles.get(item_id, item_id)

    @property
    def version(self) -> str:
        """Content hash: equal catalogs have equal versions, whatever machine built them."""
        return hashlib.sha256(_canonical(self._content())).hexdigest()[:16]

    def _content(self) -> dict[str, Any]:
        return {
            "format": CATALOG_FORMAT,
            "build": dict(self.build),
            "clusters": [
                {
                    "cluster_id": c.cluster_id,
                    "parent_id": c.parent_id,
                    "keywords": list(c.keywords),
                    "top_items": list(c.top_items),
                    "size": c.size,
                    # Only when present, so catalogs without summaries keep their versions.
                    **({"summary": c.summary} if c.summary else {}),
                }
                for c in self.clusters
            ],
            "parents": [
                {
                    "parent_id": p.parent_id,
                    "keywords": list(p.keywords),
                    "children": list(p.children),
                    **({"summary": p.summary} if p.summary else {}),
                }
                for p in self.parents
            ],
            "item_to_cluster": dict(sorted(self.item_to_cluster.items())),
            "item_titles": dict(sorted(self.item_titles.items())),
        }

    def save(self, path: Path) -> str:
        """Write the catalog as JSON with its version; returns the version."""
        path.parent.mkdir(parents=True, exist_ok=True)
        content = self._content()
        document = {"version": self.version, **content}
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(document, indent=1, sort_keys=True))
        tmp.replace(path)  # atomic: a reader never sees half a catalog
        return self.version

    @classmethod
    def load(cls, path: Path) -> ClusterCatalog:
        """Read a saved catalog and check its content still matches its version."""
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no cluster catalog; run `explore clusters`") from None
        if document.get("format") != CATALOG_FORMAT:
            raise ValueError(
                f"{path}: catalog format {document.get('format')}, expected {CATALOG_FORMAT}"
            )
        catalog = cls(
            clusters=tuple(
                InterestCluster(
                    cluster_id=c["cluster_id"],
                    parent_id=c["parent_id"],
                    keywords=tuple(c["keywords"]),
                    top_items=tuple(c["top_items"]),
                    size=c["size"],
                    summary=c.get("summary", ""),
                )
                for c in document["clusters"]
            ),
            parents=tuple(
                ParentCluster(
                    parent_id=p["parent_id"],
                    keywords=tuple(p["keywords"]),
                    children=tuple(p["children"]),
                    summary=p.get("summary", ""),
                )
                for p in document["parents"]
            ),
            item_to_cluster={str(k): int(v) for k, v in document["item_to_cluster"].items()},
            build=document.get("build", {}),
            item_titles=document.get("item_titles", {}),
        )
        if catalog.version != document.get("version"):
            raise ValueError(f"{path}: content does not match version {document.get('version')}")
        return catalog


def _canonical(content: Mapping[str, Any]) -> bytes:
    return json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
