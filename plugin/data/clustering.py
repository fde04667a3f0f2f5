"""Build the two-level interest-cluster catalog from interactions and item metadata.

Each item gets a feature vector of four L2-normalised, weighted blocks:

* collaborative: truncated SVD of the PPMI item-item co-occurrence of the (training)
  interactions, shrunk towards zero for items with few views so that rare and unseen items
  are placed by their content;
* genre one-hot;
* release decade (read from a trailing ``(YYYY)`` in the title);
* text: TF-IDF of title words, description and tags, reduced by truncated SVD.

k-means splits the items into ``leaf_clusters`` leaves, and k-means over the leaf centroids
groups leaves into ``parent_clusters`` parents. Keywords are the terms (genres, decades, words,
tags) most over-represented in a cluster relative to the whole catalog. Each cluster also gets a
readable summary for a language model, from its dominant decades, genres and tags and its most
watched titles ("1990s action and thriller, such as Speed and The Rock").
Everything is seeded and single-threaded, so one dataset and one settings object give one
catalog version.

The granularity study that chose the default leaf count is :mod:`plugin.evaluation.granularity`
(``docs/CLUSTERS.md``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer
from sklearn.utils.extmath import randomized_svd
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from plugin.core.catalog import ClusterCatalog, InterestCluster, ParentCluster
from plugin.data.datasets import Dataset
from plugin.settings import ClusterSettings

# v2: readable summaries; v3: their example titles come from the decades they name
BUILD_METHOD = "ppmi-svd+genre+decade+tfidf/kmeans/v3"


@dataclass(frozen=True)
class FeatureRecipe:
    """Block weights and sizes of the item features; recorded in the catalog's build info."""

    collaborative: float = 1.0
    genre: float = 0.6
    decade: float = 0.35
    text: float = 0.3
    collaborative_dims: int = 48
    text_dims: int = 32
    # An item with this many views gets half the collaborative weight; unseen items get none.
    half_confidence_views: float = 5.0
    n_init: int = 8


DEFAULT_RECIPE = FeatureRecipe()

# Words that carry no interest: English stop words, foreign articles, sequel markers.
_EXTRA_STOP_WORDS = frozenset(
    {
        "les",
        "la",
        "le",
        "el",
        "lo",
        "los",
        "las",
        "der",
        "die",
        "das",
        "des",
        "del",
        "de",
        "du",
        "un",
        "une",
        "und",
        "il",
        "et",
        "en",
        "ein",
        "eine",
        "von",
        "part",
        "ii",
        "iii",
        "iv",
        "vi",
        "vii",
        "viii",
        "ix",
        "xi",
        "movie",
        "film",
        "films",
    }
)
_STOP_WORDS = ENGLISH_STOP_WORDS | _EXTRA_STOP_WORDS
_WORD_RE = re.compile(r"[^\W\d_]+(?:['\-][^\W\d_]+)*")
_YEAR_RE = re.compile(r"\s*\((\d{4})\)\s*$")
_ROMAN_RE = re.compile(r"^[ivxlcdm]+$")
_TAG_SPLIT_RE = re.compile(r"[|,;]")


# --- item terms ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _ItemTerms:
    genres: tuple[str, ...]
    decade: str | None
    words: tuple[str, ...]  # title and description words, in order, repeats kept
    tags: tuple[str, ...]

    def keyword_terms(self) -> set[str]:
        terms = {*self.genres, *self.words, *self.tags}
        if self.decade is not None:
            terms.add(self.decade)
        return terms


def _genre_term(genre: str) -> str:
    term = genre.strip().lower()
    return term[:-2] if term.endswith("'s") else term


def _words(text: str) -> list[str]:
    words = []
    for raw in _WORD_RE.findall(text.lower()):
        word = raw[:-2] if raw.endswith("'s") else raw
        if len(word) >= 3 and word not in _STOP_WORDS and not _ROMAN_RE.match(word):
            words.append(word)
    return words


def _item_terms(title: str, genres: Sequence[str], description: str, tags: str) -> _ItemTerms:
    year = _YEAR_RE.search(title)
    decade = f"{int(year.group(1)) // 10 * 10}s" if year else None
    bare_title = _YEAR_RE.sub("", title)
    tag_terms = tuple(t for t in (p.strip().lower() for p in _TAG_SPLIT_RE.split(tags)) if t)
    return _ItemTerms(
        genres=tuple(dict.fromkeys(_genre_term(g) for g in genres if g.strip())),
        decade=decade,
        words=tuple(_words(bare_title) + _words(description)),
        tags=tag_terms,
    )


# --- features ------------------------------------------------------------------------------


def _normalise_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def _collaborative_block(
    item_index: pd.Index, interactions: pd.DataFrame, dims: int, seed: int
) -> np.ndarray:
    """Rows: SVD embedding of PPMI item co-occurrence (zeros for items never watched)."""
    n_items = len(item_index)
    out = np.zeros((n_items, dims))
    pairs = interactions[["user_id", "item_id"]].drop_duplicates()
    if pairs.empty:
        return out
    rows = item_index.get_indexer(pd.Index(pairs["item_id"]))
    users, _ = pd.factorize(pairs["user_id"])
    watched = sp.csr_matrix(
        (np.ones(len(rows)), (rows, users)), shape=(n_items, int(users.max()) + 1)
    )
    # Damp heavy users: each user spreads one unit of co-occurrence over their items.
    per_user = np.asarray(watched.sum(axis=0)).ravel()
    co = (watched @ sp.diags(1.0 / np.maximum(per_user, 1.0)) @ watched.T).tocoo()
    keep = co.row != co.col
    i, j, v = co.row[keep], co.col[keep], co.data[keep]
    if len(v) == 0:
        return out
    marginal = np.bincount(i, weights=v, minlength=n_items)
    pmi = np.log(v * v.sum() / (marginal[i] * marginal[j]))
    positive = pmi > 0
    ppmi = sp.csr_matrix((pmi[positive], (i[positive], j[positive])), shape=(n_items, n_items))
    k = min(dims, n_items - 1)
    if k < 1 or ppmi.nnz == 0:
        return out
    u, s, _ = randomized_svd(ppmi, n_components=k, n_iter=6, random_state=seed)
    # randomized_svd fixes the sign of each component deterministically (flip_sign=True).
    out[:, :k] = u * np.sqrt(s)
    return _normalise_rows(out)


def _item_features(
    dataset: Dataset,
    terms: list[_ItemTerms],
    views: np.ndarray,
    recipe: FeatureRecipe,
    seed: int,
) -> np.ndarray:
    items = dataset.items
    item_index = pd.Index(items["item_id"])
    collaborative = _collaborative_block(
        item_index, dataset.interactions, recipe.collaborative_dims, seed
    )
    confidence = views / (views + recipe.half_confidence_views)

    genre_vocab = sorted({g for t in terms for g in t.genres})
    genre = np.zeros((len(items), max(len(genre_vocab), 1)))
    genre_col = {g: c for c, g in enumerate(genre_vocab)}
    for row, t in enumerate(terms):
        for g in t.genres:
            genre[row, genre_col[g]] = 1.0

    decade_vocab = sorted({t.decade for t in terms if t.decade is not None})
    decade = np.zeros((len(items), max(len(decade_vocab), 1)))
    decade_col = {d: c for c, d in enumerate(decade_vocab)}
    for row, t in enumerate(terms):
        if t.decade is not None:
            decade[row, decade_col[t.decade]] = 1.0

    text = np.zeros((len(items), recipe.text_dims))
    documents = [list(t.words) + list(t.tags) for t in terms]
    if sum(len(d) for d in documents) > 0:
        vectoriser = TfidfVectorizer(analyzer=lambda doc: doc, min_df=2, sublinear_tf=True)
        try:
            tfidf = vectoriser.fit_transform(documents)
        except ValueError:  # no term occurs twice
            tfidf = None
        if tfidf is not None and tfidf.shape[1] > 1:
            k = min(recipe.text_dims, tfidf.shape[1] - 1, len(items) - 1)
            if k >= 1:
                u, s, _ = randomized_svd(tfidf, n_components=k, n_iter=6, random_state=seed)
                text[:, :k] = u * s
    return np.hstack(
        [
            recipe.collaborative * collaborative * confidence[:, None],
            recipe.genre * _normalise_rows(genre),
            recipe.decade * _normalise_rows(decade),
            recipe.text * _normalise_rows(text),
        ]
    )


# --- keywords ------------------------------------------------------------------------------


def _keyword_ranking(
    members: list[np.ndarray],
    term_matrix: sp.csr_matrix,
    vocab: list[str],
    weights: np.ndarray,
    min_share: float = 0.08,
) -> list[list[str]]:
    """For each group of item rows, its distinctive terms, best first.

    A term's score in a group is ``p * log(p / q)``: ``p`` its (view-weighted) share of the
    group's items, ``q`` its share of the whole catalog. A term must be over-represented, hold
    at least ``min_share`` of the group and occur in two of its items (one for groups under
    four items), so one odd title cannot name a cluster of two hundred.
    """
    catalog_share = np.asarray(term_matrix.T @ weights).ravel() / weights.sum()
    order = np.argsort(np.array(vocab, dtype=object), kind="stable")  # ties: alphabetical
    ranked = []
    for rows in members:
        sub = term_matrix[rows]
        counts = np.asarray(sub.sum(axis=0)).ravel()
        share = np.asarray(sub.T @ weights[rows]).ravel() / weights[rows].sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(share > 0, share * np.log(share / catalog_share), -np.inf)
        needed = 2 if len(rows) >= 4 else 1
        score[(counts < needed) | (share < min_share) | (share <= catalog_share)] = -np.inf
        by_score = order[np.argsort(-score[order], kind="stable")]
        ranked.append([vocab[t] for t in by_score if np.isfinite(score[t])])
    return ranked


def _pick_keywords(
    ranked: list[list[str]], fill: list[list[str]], k: int, fallback: str
) -> list[tuple[str, ...]]:
    """Per group: its top ``k`` distinctive terms, topped up from ``fill`` (words of its most
    watched titles), nudged so that no two groups share a description."""
    used: set[tuple[str, ...]] = set()
    chosen = []
    for index, (terms, extra_terms) in enumerate(zip(ranked, fill, strict=True)):
        pool = list(dict.fromkeys([*terms, *extra_terms])) or [f"{fallback} {index}"]
        pick = pool[:k]
        extra = iter(pool[k:])
        while tuple(pick) in used:
            replacement = next(extra, None)
            if replacement is None:
                pick = [*pick[: k - 1], f"{fallback} {index}"]
                break
            pick[-1] = replacement
        used.add(tuple(pick))
        chosen.append(tuple(pick))
    return chosen


def _title_words(
    rows: Iterable[int], terms: list[_ItemTerms], views: np.ndarray, item_ids: list[str]
) -> list[str]:
    """Title and tag words of a group's items, most watched item first."""
    words: list[str] = []
    for row in sorted(rows, key=lambda r: (-views[r], item_ids[r])):
        words.extend(terms[row].tags)
        words.extend(terms[row].words)
        if len(words) > 40:
            break
    return words


# --- readable summaries --------------------------------------------------------------------

# A decade, genre or tag names a cluster in its summary when this share of its (view-weighted)
# items carry it; below it the term is a minority taste and would mislead a reader.
SUMMARY_MIN_SHARE = 0.35
SUCH_AS = ", such as "  # between a summary's head and its example titles
_LEADING_ARTICLE_RE = re.compile(r"^(.*), (The|A|An|L'|La|Le|Les|Il|Das|Der|Die|El)$")
_PARENTHESIS_RE = re.compile(r"\s*\([^()]*\)\s*$")


def readable_title(title: str) -> str:
    """A catalog title as people write it: no year or alternative title in brackets, and a
    trailing article moved to the front ("Rock, The (1996)" -> "The Rock")."""
    bare = title.strip()
    while _PARENTHESIS_RE.search(bare):
        bare = _PARENTHESIS_RE.sub("", bare)
    moved = _LEADING_ARTICLE_RE.match(bare)
    if moved:
        article = moved.group(2)
        space = "" if article.endswith("'") else " "
        bare = f"{article}{space}{moved.group(1)}"
    return bare or title.strip()


def _dominant(
    rows: np.ndarray, values: list[Sequence[str]], weights: np.ndarray, most: int
) -> list[str]:
    """The terms that at least SUMMARY_MIN_SHARE of the group's weight carries, best first."""
    share: dict[str, float] = {}
    total = float(weights[rows].sum())
    for row in rows:
        for term in dict.fromkeys(values[row]):
            share[term] = share.get(term, 0.0) + float(weights[row]) / total
    ranked = sorted(share, key=lambda t: (-share[t], t))
    return [t for t in ranked if share[t] >= SUMMARY_MIN_SHARE][:most]


def _join(words: Sequence[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} and {words[-1]}"


def _summary(
    rows: np.ndarray,
    terms: list[_ItemTerms],
    titles: list[str],
    views: np.ndarray,
    weights: np.ndarray,
    item_ids: list[str],
    n_titles: int,
) -> str:
    """One cluster's readable summary: dominant decades, genres and tag, then top titles."""
    decades = sorted(_dominant(rows, [(t.decade,) if t.decade else () for t in terms], weights, 2))
    genres = _dominant(rows, [t.genres for t in terms], weights, 3)
    tags = _dominant(rows, [t.tags for t in terms], weights, 1)
    head = " ".join(part for part in (_join(decades), _join(genres), _join(tags)) if part)
    by_views = sorted(rows, key=lambda r: (-views[r], item_ids[r]))
    # Examples from the decades the head names, so that "1990s drama, such as ..." does not
    # go on with a 1977 film; a cluster whose named decades hold no titles keeps its top ones.
    in_decades = [r for r in by_views if terms[r].decade in decades]
    by_views = in_decades or by_views
    examples = list(dict.fromkeys(readable_title(titles[r]) for r in by_views[: n_titles * 2]))
    examples = [e for e in examples if e][:n_titles]
    if not examples:
        return head or "mixed titles"
    return f"{head or 'titles'}{SUCH_AS}{_join(examples)}"


# --- the build -----------------------------------------------------------------------------


def build_catalog(
    dataset: Dataset,
    settings: ClusterSettings,
    progress: bool = False,
    recipe: FeatureRecipe = DEFAULT_RECIPE,
) -> ClusterCatalog:
    """Cluster the dataset's items into a two-level catalog (fit on all of ``dataset``'s
    interactions: pass the training split). Deterministic for one dataset and settings."""
    if settings.leaf_clusters is None:  # the workspace resolves it first
        raise ValueError(
            "clusters.leaf_clusters is None: choose it with plugin.data.granularity_rule"
        )
    items = dataset.items
    n_items = len(items)
    if settings.leaf_clusters > n_items:
        raise ValueError(
            f"clusters.leaf_clusters ({settings.leaf_clusters}) exceeds the number of items "
            f"({n_items}) in dataset {dataset.name!r}"
        )
    steps = tqdm(total=5, desc="clusters", disable=not progress, leave=False)
    item_ids = items["item_id"].tolist()
    views = (
        dataset.interactions["item_id"]
        .value_counts()
        .reindex(item_ids, fill_value=0)
        .to_numpy(dtype=float)
    )
    terms = [
        _item_terms(title, genres, description, tags)
        for title, genres, description, tags in zip(
            items["title"], items["genres"], items["description"], items["tags"], strict=True
        )
    ]
    # One thread: k-means and BLAS reductions then run in one fixed order, so the same
    # input gives the same clusters on every run.
    with threadpool_limits(limits=1):
        features = _item_features(dataset, terms, views, recipe, settings.seed)
        steps.update()
        distinct = len(np.unique(features.round(9), axis=0))
        if distinct < settings.leaf_clusters:
            raise ValueError(
                f"clusters.leaf_clusters ({settings.leaf_clusters}) exceeds the number of "
                f"distinguishable items ({distinct}); lower it or add item metadata"
            )
        leaf_km = KMeans(settings.leaf_clusters, n_init=recipe.n_init, random_state=settings.seed)
        leaf_of_item = leaf_km.fit_predict(features)
        steps.update()
        centroids = _normalise_rows(
            np.vstack(
                [features[leaf_of_item == c].mean(axis=0) for c in range(settings.leaf_clusters)]
            )
        )
        parent_km = KMeans(
            settings.parent_clusters, n_init=recipe.n_init, random_state=settings.seed
        )
        parent_of_leaf = parent_km.fit_predict(centroids)
        steps.update()
    sizes = np.bincount(leaf_of_item, minlength=settings.leaf_clusters)
    if (sizes == 0).any():  # k-means relocates empty clusters, so this is a bug, not data
        raise RuntimeError("k-means produced an empty leaf cluster")

    leaf, leaf_parent = _renumber(leaf_of_item, parent_of_leaf, sizes)
    term_matrix, vocab = _term_matrix(terms)
    weights = 1.0 + np.log1p(views)  # watched items speak louder for their cluster
    leaf_members = [np.flatnonzero(leaf == c) for c in range(settings.leaf_clusters)]
    parent_members = [
        np.flatnonzero(np.isin(leaf, [c for c, p in enumerate(leaf_parent) if p == parent]))
        for parent in range(settings.parent_clusters)
    ]
    leaf_keywords = _pick_keywords(
        _keyword_ranking(leaf_members, term_matrix, vocab, weights),
        [_title_words(rows, terms, views, item_ids) for rows in leaf_members],
        settings.keywords,
        "cluster",
    )
    parent_keywords = _pick_keywords(
        _keyword_ranking(parent_members, term_matrix, vocab, weights),
        [_title_words(rows, terms, views, item_ids) for rows in parent_members],
        settings.keywords,
        "group",
    )
    titles = items["title"].astype(str).tolist()
    leaf_summaries = [
        _summary(rows, terms, titles, views, weights, item_ids, 2) for rows in leaf_members
    ]
    parent_summaries = [
        _summary(rows, terms, titles, views, weights, item_ids, 2) for rows in parent_members
    ]
    steps.update()

    clusters = []
    for c, rows in enumerate(leaf_members):
        by_views = sorted(rows, key=lambda r: (-views[r], item_ids[r]))
        clusters.append(
            InterestCluster(
                cluster_id=c,
                parent_id=leaf_parent[c],
                keywords=leaf_keywords[c],
                top_items=tuple(item_ids[r] for r in by_views[: settings.top_items]),
                size=len(rows),
                summary=leaf_summaries[c],
            )
        )
    parents = tuple(
        ParentCluster(
            parent_id=p,
            keywords=parent_keywords[p],
            children=tuple(c for c in range(settings.leaf_clusters) if leaf_parent[c] == p),
            summary=parent_summaries[p],
        )
        for p in range(settings.parent_clusters)
    )
    steps.update()
    steps.close()
    return ClusterCatalog(
        clusters=tuple(clusters),
        parents=parents,
        item_to_cluster={item_ids[r]: int(leaf[r]) for r in range(n_items)},
        build={
            "method": BUILD_METHOD,
            "dataset": dataset.name,
            "dataset_fingerprint": dataset.fingerprint(),
            "items": n_items,
            "interactions": len(dataset.interactions),
            "settings": settings.model_dump(),
            "recipe": asdict(recipe),
        },
        item_titles=dict(zip(item_ids, items["title"].tolist(), strict=True)),
    )


def _renumber(
    leaf_of_item: np.ndarray, parent_of_leaf: np.ndarray, sizes: np.ndarray
) -> tuple[np.ndarray, list[int]]:
    """New ids: parents by size, leaves by parent then size, ties by the cluster's first item
    (file order). Returns each item's new leaf id and each new leaf's new parent id."""
    n_items, n_leaves = len(leaf_of_item), len(parent_of_leaf)
    parent_ids = [int(p) for p in parent_of_leaf]
    n_parents = max(parent_ids) + 1
    first_item = np.full(n_leaves, n_items)
    np.minimum.at(first_item, leaf_of_item, np.arange(n_items))
    parent_sizes = np.bincount(parent_of_leaf, weights=sizes, minlength=n_parents)
    parent_first = np.full(n_parents, n_items)
    np.minimum.at(parent_first, parent_of_leaf, first_item)
    parent_order = sorted(range(n_parents), key=lambda p: (-parent_sizes[p], parent_first[p]))
    parent_new = {old: new for new, old in enumerate(parent_order)}
    leaf_order = sorted(
        range(n_leaves), key=lambda c: (parent_new[parent_ids[c]], -sizes[c], first_item[c])
    )
    leaf_new = np.empty(n_leaves, dtype=int)
    leaf_new[leaf_order] = np.arange(n_leaves)
    return leaf_new[leaf_of_item], [parent_new[parent_ids[old]] for old in leaf_order]


def _term_matrix(terms: list[_ItemTerms]) -> tuple[sp.csr_matrix, list[str]]:
    """Binary item x term matrix over every keyword candidate, and its sorted vocabulary."""
    item_terms = [sorted(t.keyword_terms()) for t in terms]
    vocab = sorted({term for ts in item_terms for term in ts})
    column = {term: c for c, term in enumerate(vocab)}
    indptr = np.cumsum([0] + [len(ts) for ts in item_terms])
    indices = np.array([column[term] for ts in item_terms for term in ts], dtype=int)
    matrix = sp.csr_matrix(
        (np.ones(len(indices)), indices, indptr), shape=(len(terms), max(len(vocab), 1))
    )
    return matrix, vocab
