"""The example store (one Chroma collection of human-verified examples per project) and few-shot selection.

**Store.** `ExampleStore` keeps a project's current ground truth in a Chroma collection named
`lp-<project id>-<embedder>`: in `<data folder>/chroma` (`chromadb.PersistentClient`), or on a Chroma server
when `LABELPILOT_CHROMA_URL` is set (`chromadb.HttpClient`). Telemetry is off and the embedding function is
explicit (Chroma's default downloads a model and fails offline): by default all-MiniLM-L6-v2, the embedder of
the offline baseline, applied to the same text (`tools.baseline.task_text`), so both see the same neighbours.
One record per labeled task: id = the task id, document = the task text, our vector, and metadata
{task_id, external_id, label (display text), value_json, split, annotation_id, content_hash, text_hash,
data_json}. `sync(db)` makes the collection equal the ground truth: new labels are embedded and added, a
relabel or a split change updates the metadata (the vector is kept unless the text changed), a deleted label
is deleted. With nothing changed it only reads the stored metadata, page by page.

**Selection.** Few-shot examples are chosen from an in-memory snapshot of the store (`ExamplePool`: the
stored vectors, read once when a labeler is built), by exact cosine similarity with the task's vector. Not a
Chroma query per task: a filtered query of local Chroma took ~14 ms here (384-d vectors, 2,000 examples), so a
1,000-task job would spend 14 s choosing examples, and approximate (HNSW) neighbours could differ between
runs, which would change the requests and defeat the response cache. The snapshot also pins the examples of
a job: the labeler's identity carries its fingerprint, so a job whose examples changed is a new job.

Policies (`FewShotKind`, one selector each in `_SELECTORS`):

- `fixed`: the version's `example_ids` (external ids, or `#<task id>`), in that order;
- `nearest`: the k most similar examples, most similar first;
- `mmr`: maximal marginal relevance over the `max(4k, 20)` most similar: each pick maximises
  `λ·similarity to the task − (1−λ)·highest similarity to the examples already picked` (λ = 0.5);
- `label_diverse`: the nearest example of each label, labels whose nearest example is most similar first
  (at most k), then the nearest others up to k; shown most similar first;
- `max_tokens` (any policy): examples are dropped, least similar first (`fixed`: from the end), until the
  examples' messages fit the budget (`tools.prompting.estimate_prompt_tokens`).

**An item is never its own example:** the task itself and every example with the same content hash are left
out. **Pool:** the train split when the project has splits (an evaluation on dev or test never sees its own
items, and test stays held out), else all ground truth. Fixed examples come from all ground truth: the
version names them. Examples whose data lacks a field the prompt shows are left out of the pool.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias
from urllib.parse import unquote, urlsplit

import httpx
import numpy as np
from langchain_core.messages import AIMessage, HumanMessage
from numpy.typing import NDArray
from pydantic import BaseModel, Field

from tools.baseline import task_text
from tools.embeddings import Embedder, FloatMatrix, chroma_embedding_function, get_embedder
from tools.errors import ConfigError, LabelpilotError, LabelSpecError, NotFoundError
from tools.groundtruth import labels_of, latest_annotations, source_text_for
from tools.labelers import TaskInput
from tools.labelspec import LabelSpec
from tools.llm import answer_json
from tools.projects import get_project, require_spec
from tools.prompting import Example, estimate_prompt_tokens, render_task, task_fields
from tools.settings import DEFAULT_LABEL_MODEL, Settings
from tools.splits import Split
from tools.storage import Database
from tools.versions import FewShotKind, FewShotPolicy, PromptConfig, few_shot_summary

logger = logging.getLogger(__name__)

#: The baseline labeler's embedder: examples and baseline neighbours come from the same vectors.
DEFAULT_EMBEDDER = "minilm"
#: MMR's trade-off between similarity to the task (1.0) and difference from the examples picked (0.0).
MMR_LAMBDA = 0.5
#: MMR re-ranks the max(4k, this) most similar examples.
MMR_MIN_CANDIDATES = 20
#: Texts embedded and records written per call.
WRITE_BATCH = 256
#: Records read per call.
READ_PAGE = 1000
#: Task contents whose selection is remembered (estimate, cache check and labeling ask for the same tasks).
SELECTION_CACHE_SIZE = 100_000
#: Port of a Chroma server URL without one (`chroma run`'s default).
CHROMA_DEFAULT_PORT = 8000
_SPLITS = frozenset(split.value for split in Split)

#: Which ground truth examples may come from: "auto" (train when the project has splits, else all),
#: "train", "all", or a set of task ids.
PoolRequest: TypeAlias = Literal["auto", "train", "all"] | AbstractSet[int]
IntArray = NDArray[np.int64]
Scores = NDArray[np.float32]


def _dump(value: object, *, sort_keys: bool = True) -> str:
    return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False, default=str)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- Chroma client


@dataclass(frozen=True)
class ChromaServer:
    """Where a Chroma server listens, read from LABELPILOT_CHROMA_URL; `display` shows no secret."""

    host: str
    port: int
    ssl: bool
    headers: Mapping[str, str]
    display: str


def parse_chroma_url(url: str) -> ChromaServer:
    """Read `http(s)://[user:password@]host[:port]` (user and password are sent as HTTP basic auth)."""
    parts = urlsplit(url.strip())
    # Shown in messages: the URL without user, password, path or query.
    display = parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1], path="", query="", fragment="").geturl()
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        shown = f": {display}" if parts.netloc else ""
        raise ConfigError(
            f"LABELPILOT_CHROMA_URL is not a valid http(s) URL of a Chroma server{shown}",
            hint="write it as http://HOST:PORT (e.g. http://localhost:8000), or unset it to keep the example "
            "store in the data folder",
        )
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(
            f"LABELPILOT_CHROMA_URL has a path or query, which labelpilot does not use: {display}{parts.path}",
            hint="give only the scheme, host and port, e.g. http://localhost:8000",
        )
    headers: dict[str, str] = {}
    if parts.username is not None or parts.password is not None:
        credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    ssl = parts.scheme == "https"
    return ChromaServer(
        host=parts.hostname,
        port=port or (443 if ssl else CHROMA_DEFAULT_PORT),
        ssl=ssl,
        headers=headers,
        display=display,
    )


def _unreachable(where: str) -> ConfigError:
    return ConfigError(
        f"cannot reach the Chroma server at {where} (LABELPILOT_CHROMA_URL)",
        hint="start it (e.g. `chroma run --path DIR --port 8000`) or check the URL; unset "
        "LABELPILOT_CHROMA_URL to keep the example store in the data folder",
    )


def chroma_client(settings: Settings) -> tuple[Any, str]:
    """Return a Chroma client (a server's from LABELPILOT_CHROMA_URL, else the data folder's) and where it is."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings
    from chromadb.errors import ChromaError

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_url:
        server = parse_chroma_url(settings.chroma_url)
        try:
            client = chromadb.HttpClient(
                host=server.host,
                port=server.port,
                ssl=server.ssl,
                headers=dict(server.headers),
                settings=chroma_settings,
            )
        # chromadb turns a failed connection into ValueError("Could not connect to a Chroma server...").
        except (ValueError, httpx.HTTPError):
            raise _unreachable(server.display) from None
        except ChromaError as exc:  # e.g. a server that wants credentials
            raise ConfigError(
                f"the Chroma server at {server.display} refused the connection: {exc.message()}",
                hint="check the user and password in LABELPILOT_CHROMA_URL (http://USER:PASSWORD@HOST:PORT)",
            ) from None
        return client, server.display
    settings.ensure_home()
    path = settings.chroma_path
    return chromadb.PersistentClient(path=str(path), settings=chroma_settings), str(path)


@contextmanager
def _connection(location: str) -> Iterator[None]:
    """Turn a lost server connection into a ConfigError naming the server."""
    try:
        yield
    except httpx.TransportError:
        raise _unreachable(location) from None


def collection_name(project_id: int, embedder: Embedder) -> str:
    """Return the name of a project's example collection for an embedder (vectors of two never mix)."""
    return f"lp-{project_id}-{embedder.name}"


# ---------------------------------------------------------------------------------------------- the store


class SyncReport(BaseModel):
    """What `ExampleStore.sync` changed."""

    collection: str
    added: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    #: Ground-truth items left out, with why (a label that no longer fits the schema, a missing field).
    skipped: list[str] = Field(default_factory=list)
    #: Examples in the store after the sync.
    total: int = 0
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        """Whether anything was written."""
        return bool(self.added or self.updated or self.deleted)

    def summary(self) -> str:
        """Return e.g. '3 added, 1 updated, 0 deleted (120 examples)'."""
        return (
            f"{self.added:,} added, {self.updated:,} updated, {self.deleted:,} deleted "
            f"({self.total:,} examples)"
        )


@dataclass(frozen=True)
class StoredExample:
    """One example as the store holds it."""

    task_id: int
    external_id: str
    data: dict[str, Any]
    value: Any
    labels: tuple[str, ...]
    split: str
    annotation_id: int
    content_hash: str


class ExampleStore:
    """A project's human-verified examples in a Chroma collection (see the module docstring)."""

    def __init__(self, collection: Any, *, embedder: Embedder, project_id: int, location: str) -> None:
        """Wrap an open collection; use `ExampleStore.open`."""
        self.collection = collection
        self.embedder = embedder
        self.project_id = project_id
        #: The folder or the server URL (without secrets) the collection lives in.
        self.location = location
        self._snapshots: dict[str, ExamplePool] = {}

    @classmethod
    def open(cls, settings: Settings, project_id: int, *, embedder: Embedder | None = None) -> ExampleStore:
        """Open (or create) the project's collection, locally or on LABELPILOT_CHROMA_URL's server."""
        embedder = embedder if embedder is not None else get_embedder(DEFAULT_EMBEDDER)
        client, location = chroma_client(settings)
        with _connection(location):
            collection = client.get_or_create_collection(
                collection_name(project_id, embedder),
                embedding_function=chroma_embedding_function(embedder),
                configuration={"hnsw": {"space": "cosine"}},
            )
        return cls(collection, embedder=embedder, project_id=project_id, location=location)

    @property
    def name(self) -> str:
        """The collection's name."""
        return str(self.collection.name)

    def count(self) -> int:
        """Return how many examples the store holds."""
        with _connection(self.location):
            return int(self.collection.count())

    def _pages(self, include: list[str]) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            with _connection(self.location):
                page = self.collection.get(include=include, limit=READ_PAGE, offset=offset)
            yield page
            if len(page["ids"]) < READ_PAGE:
                return
            offset += READ_PAGE

    def _stored_metadata(self) -> dict[str, dict[str, Any]]:
        stored: dict[str, dict[str, Any]] = {}
        for page in self._pages(["metadatas"]):
            stored.update(zip(page["ids"], (dict(m or {}) for m in page["metadatas"]), strict=True))
        return stored

    def _ground_truth(self, db: Database) -> tuple[dict[str, tuple[dict[str, Any], str]], list[str]]:
        """Return {id: (metadata, document)} of the project's current ground truth, and what was skipped."""
        wanted: dict[str, tuple[dict[str, Any], str]] = {}
        skipped: list[str] = []
        with db.session() as session:
            project = get_project(session, self.project_id)
            spec = require_spec(project)
            for task, annotation in latest_annotations(session, project.id):
                try:
                    value = spec.validate_value(annotation.value, source_text=source_text_for(spec, task))
                    document = task_text(spec, task.data)
                except LabelpilotError as exc:
                    skipped.append(f"task '{task.external_id}': {exc.message}")
                    continue
                split = (task.meta or {}).get("split")
                metadata = {
                    "task_id": task.id,
                    "external_id": task.external_id,
                    "label": spec.display(value),
                    "value_json": _dump(value, sort_keys=False),
                    "split": split if split in _SPLITS else "",
                    "annotation_id": annotation.id,
                    "content_hash": task.content_hash,
                    "text_hash": _sha(document),
                    # Key order kept: a task without input fields shows its fields in their own order.
                    "data_json": _dump(task.data, sort_keys=False),
                }
                wanted[str(task.id)] = (metadata, document)
        return wanted, skipped

    def sync(self, db: Database) -> SyncReport:
        """Make the collection equal the project's current ground truth (embedding only what is new)."""
        started = time.perf_counter()
        wanted, skipped = self._ground_truth(db)
        stored = self._stored_metadata()
        embed = [
            key
            for key, (metadata, _) in wanted.items()
            if key not in stored or stored[key].get("text_hash") != metadata["text_hash"]
        ]
        new = set(embed)
        update = [
            key for key, (metadata, _) in wanted.items() if key not in new and stored.get(key) != metadata
        ]
        delete = [key for key in stored if key not in wanted]
        for skip in skipped:
            logger.warning("example store: skipping %s", skip)
        with _connection(self.location):
            for start in range(0, len(embed), WRITE_BATCH):
                keys = embed[start : start + WRITE_BATCH]
                documents = [wanted[key][1] for key in keys]
                self.collection.upsert(
                    ids=keys,
                    embeddings=self.embedder.embed(documents),
                    documents=documents,
                    metadatas=[wanted[key][0] for key in keys],
                )
            for start in range(0, len(update), WRITE_BATCH):
                keys = update[start : start + WRITE_BATCH]
                self.collection.update(ids=keys, metadatas=[wanted[key][0] for key in keys])
            for start in range(0, len(delete), WRITE_BATCH):
                self.collection.delete(ids=delete[start : start + WRITE_BATCH])
        if embed or update or delete:
            self._snapshots.clear()
        return SyncReport(
            collection=self.name,
            added=sum(1 for key in embed if key not in stored),
            updated=sum(1 for key in embed if key in stored) + len(update),
            deleted=len(delete),
            unchanged=len(wanted) - len(embed) - len(update),
            skipped=skipped,
            total=len(wanted),
            seconds=time.perf_counter() - started,
        )

    def snapshot(self, spec: LabelSpec) -> ExamplePool:
        """Return every stored example with its vector, ordered by task id (cached until a sync changes it)."""
        key = _dump(spec.to_json())
        found = self._snapshots.get(key)
        if found is not None:
            return found
        items: list[StoredExample] = []
        vectors: list[Any] = []
        for page in self._pages(["metadatas", "embeddings"]):
            for metadata, vector in zip(page["metadatas"], page["embeddings"], strict=True):
                items.append(_stored_example(spec, metadata or {}))
                vectors.append(vector)
        order = sorted(range(len(items)), key=lambda i: items[i].task_id)
        matrix = (
            np.asarray([vectors[i] for i in order], dtype=np.float32)
            if items
            else np.zeros((0, self.embedder.dimension), dtype=np.float32)
        )
        pool = ExamplePool(spec, self.embedder, [items[i] for i in order], matrix, name="all")
        self._snapshots[key] = pool
        return pool

    def pool(self, spec: LabelSpec, request: PoolRequest = "auto") -> ExamplePool:
        """Return the examples a request may draw from (see `ExamplePool.restrict`)."""
        return self.snapshot(spec).restrict(request)

    def pool_fingerprint(self, spec: LabelSpec, request: PoolRequest = "auto") -> str:
        """Return a short hash of a pool's examples and labels (their task and annotation ids)."""
        return self.pool(spec, request).fingerprint()

    def select(
        self,
        task: TaskInput,
        policy: FewShotPolicy,
        *,
        spec: LabelSpec,
        pool: PoolRequest = "auto",
        exclude_task_ids: AbstractSet[int] = frozenset(),
        exclude_hashes: AbstractSet[str] = frozenset(),
        config: PromptConfig | None = None,
        model: str = DEFAULT_LABEL_MODEL,
    ) -> list[Example]:
        """Choose a task's few-shot examples from the store (never the task itself or its duplicates).

        `config` and `model` are what `max_tokens` is measured with (default: a default prompt).
        """
        candidates = self.snapshot(spec)
        if policy.kind is not FewShotKind.fixed:
            candidates = candidates.restrict(pool)
        tokens = ExampleTokens(spec, config or PromptConfig(), model) if policy.max_tokens else None
        return candidates.select(
            task,
            policy,
            exclude_task_ids=exclude_task_ids,
            exclude_hashes=exclude_hashes,
            example_tokens=tokens,
        )


def _stored_example(spec: LabelSpec, metadata: Mapping[str, Any]) -> StoredExample:
    value = json.loads(str(metadata["value_json"]))
    return StoredExample(
        task_id=int(metadata["task_id"]),
        external_id=str(metadata["external_id"]),
        data=json.loads(str(metadata["data_json"])),
        value=value,
        labels=tuple(labels_of(spec, value)),
        split=str(metadata.get("split") or ""),
        annotation_id=int(metadata["annotation_id"]),
        content_hash=str(metadata["content_hash"]),
    )


# ---------------------------------------------------------------------------------------------- selection


class ExampleTokens:
    """Input tokens one example adds to a request: its task message and its answer (cached per example)."""

    def __init__(self, spec: LabelSpec, config: PromptConfig, model: str) -> None:
        self.spec = spec
        self.config = config
        self.model = model
        self._known: dict[str | int | None, int] = {}

    def __call__(self, example: Example) -> int:
        """Return the example's estimated tokens (the two messages `render_messages` adds for it)."""
        found = self._known.get(example.task_id)
        if found is None:
            # Ground-truth examples carry no reasoning, so their answer is the bare label (as rendered).
            messages = [
                HumanMessage(content=render_task(self.spec, self.config, example.data)),
                AIMessage(content=answer_json(self.spec, example.value)),
            ]
            found = self._known[example.task_id] = estimate_prompt_tokens(messages, self.model)
        return found


_blas_controller: Any = None


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Run one task's similarity products with a single BLAS thread (not its embedding).

    They are tiny matrix-vector products: with OpenBLAS's threads (which compete with Chroma's) they ran 3-30x
    slower than on one thread on a busy 2-core machine. Without threadpoolctl (a scikit-learn dependency)
    nothing is limited.
    """
    global _blas_controller
    if _blas_controller is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _blas_controller = False
        else:
            _blas_controller = ThreadpoolController()
    if _blas_controller is False:
        yield
        return
    with _blas_controller.limit(limits=1, user_api="blas"):
        yield


def _ranked(scores: Scores) -> IntArray:
    """Indices of the allowed examples (finite scores), most similar first, ties by task id."""
    order = np.argsort(-scores, kind="stable")
    return order[np.isfinite(scores[order])]


def _nearest(pool: ExamplePool, scores: Scores, k: int) -> list[int]:
    return [int(i) for i in _ranked(scores)[:k]]


def _mmr(pool: ExamplePool, scores: Scores, k: int) -> list[int]:
    candidates = _ranked(scores)[: max(4 * k, MMR_MIN_CANDIDATES)]
    vectors = pool.vectors[candidates]
    relevance = scores[candidates]
    redundancy = np.zeros(len(candidates), dtype=np.float32)
    picked: list[int] = []
    for _ in range(min(k, len(candidates))):
        value = MMR_LAMBDA * relevance - (1.0 - MMR_LAMBDA) * redundancy
        value[picked] = -np.inf
        best = int(np.argmax(value))
        similarity = vectors @ vectors[best]
        redundancy = similarity if not picked else np.maximum(redundancy, similarity)
        picked.append(best)
    return [int(candidates[i]) for i in picked]


def _label_diverse(pool: ExamplePool, scores: Scores, k: int) -> list[int]:
    ranked = _ranked(scores)
    covered: set[str] = set()
    chosen: list[int] = []
    for index in ranked:  # the first example of a label in this order is its nearest one
        if len(chosen) == k or covered >= pool.labels:
            break
        new = set(pool.items[index].labels) - covered
        if new:
            chosen.append(int(index))
            covered |= new
    taken = set(chosen)
    for index in ranked:
        if len(chosen) >= k:
            break
        if int(index) not in taken:
            chosen.append(int(index))
    return sorted(chosen, key=lambda index: (-float(scores[index]), index))


#: Similarity-based selectors: (pool, scores with excluded examples at -inf, k) -> pool indices in order.
_SELECTORS: dict[FewShotKind, Callable[[ExamplePool, Scores, int], list[int]]] = {
    FewShotKind.nearest: _nearest,
    FewShotKind.mmr: _mmr,
    FewShotKind.label_diverse: _label_diverse,
}


def _fit_budget(
    chosen: list[int], scores: Scores | None, cost: Callable[[int], int], budget: int
) -> list[int]:
    """Drop examples, least similar first (without scores: from the end), until their tokens fit."""
    kept = list(chosen)
    total = sum(cost(index) for index in kept)
    while kept and total > budget:
        # min() keeps the first of equal scores: scanning from the end drops the later one of a tie.
        drop = kept[-1] if scores is None else min(reversed(kept), key=lambda index: float(scores[index]))
        kept.remove(drop)
        total -= cost(drop)
    return kept


class ExamplePool:
    """Examples in memory (data, value, vector), ordered by task id; chooses few-shot examples for a task."""

    def __init__(
        self,
        spec: LabelSpec,
        embedder: Embedder,
        items: Sequence[StoredExample],
        vectors: FloatMatrix,
        *,
        name: str,
    ) -> None:
        self.spec = spec
        self.embedder = embedder
        self.items = list(items)
        self.vectors = vectors
        #: What the pool is: "all" (ground truth), "train" (split), "fixed" or "chosen" (given task ids).
        self.name = name
        self._task_ids = np.asarray([item.task_id for item in self.items], dtype=np.int64)
        self._by_task = {item.task_id: i for i, item in enumerate(self.items)}
        self._by_external = {item.external_id: i for i, item in enumerate(self.items)}
        self._by_hash: dict[str, list[int]] = {}
        for i, item in enumerate(self.items):
            self._by_hash.setdefault(item.content_hash, []).append(i)
        #: Every label the examples carry.
        self.labels = frozenset(label for item in self.items for label in item.labels)
        self._examples: dict[int, Example] = {}

    def __len__(self) -> int:
        return len(self.items)

    def subset(self, indices: Sequence[int], *, name: str) -> ExamplePool:
        """Return a pool of these examples, in this order."""
        chosen = list(indices)
        return ExamplePool(
            self.spec, self.embedder, [self.items[i] for i in chosen], self.vectors[chosen], name=name
        )

    @property
    def has_splits(self) -> bool:
        """Whether any example has a split (the project's ground truth was split)."""
        return any(item.split for item in self.items)

    def restrict(self, request: PoolRequest) -> ExamplePool:
        """Return the examples `request` allows: "auto" is the train split when there are splits, else all."""
        if request == "auto":
            request = "train" if self.has_splits else "all"
        if request == "all":
            return self
        if request == "train":
            if not self.has_splits:
                raise NotFoundError(
                    "the ground truth has no splits, so there is no train split to take examples from",
                    hint="assign them with: labelpilot gt split (or take examples from all ground truth)",
                )
            return self.subset(
                [i for i, item in enumerate(self.items) if item.split == "train"], name="train"
            )
        if isinstance(request, str):
            raise ValueError(f"unknown example pool {request!r}: use auto, train, all or a set of task ids")
        return self.subset([i for i, item in enumerate(self.items) if item.task_id in request], name="chosen")

    def describe(self) -> str:
        """Return e.g. 'the train split (120 examples)'."""
        what = {
            "all": "all ground truth",
            "train": "the train split",
            "fixed": "the version's fixed list",
        }.get(self.name, "the chosen tasks")
        return f"{what} ({len(self):,} example{'s' if len(self) != 1 else ''})"

    def fingerprint(self) -> str:
        """Return a short hash of the pool: its embedder and each example's task and annotation id."""
        document = {
            "embedder": self.embedder.name,
            "examples": sorted((item.task_id, item.annotation_id) for item in self.items),
        }
        return _sha(_dump(document))[:16]

    def find(self, refs: Sequence[str]) -> tuple[list[int], list[str]]:
        """Resolve example references (external ids, or `#<task id>`): (pool indices in order, not found)."""
        found: list[int] = []
        missing: list[str] = []
        for ref in refs:
            text = str(ref).strip()
            index = self._by_external.get(text)
            if index is None and text.startswith("#") and text[1:].isdigit():
                index = self._by_task.get(int(text[1:]))
            if index is None:
                missing.append(text)
            elif index not in found:
                found.append(index)
        return found, missing

    def renderable(self, config: PromptConfig) -> tuple[ExamplePool, list[str]]:
        """Return the examples whose data has every field `config`'s prompt shows, and the others' ids."""
        keep: list[int] = []
        dropped: list[str] = []
        for i, item in enumerate(self.items):
            try:
                task_fields(self.spec, config, item.data)
            except LabelSpecError:
                dropped.append(item.external_id)
            else:
                keep.append(i)
        if not dropped:
            return self, []
        return self.subset(keep, name=self.name), dropped

    def example(self, index: int) -> Example:
        """Return the pool's example `index` as the prompt renders it (task_id = the external id)."""
        found = self._examples.get(index)
        if found is None:
            item = self.items[index]
            found = self._examples[index] = Example(
                data=item.data, value=item.value, task_id=item.external_id
            )
        return found

    def similarities(self, task: TaskInput) -> Scores:
        """Return the cosine similarity of every example to the task (vectors are unit length)."""
        if not self.items:
            return np.zeros(0, dtype=np.float32)
        vector = self.embedder.embed([task_text(self.spec, task.data)])[0]
        with _one_blas_thread():
            return np.asarray(self.vectors @ vector, dtype=np.float32)

    def _allowed(
        self, exclude_task_ids: AbstractSet[int], exclude_hashes: AbstractSet[str]
    ) -> NDArray[np.bool_]:
        allowed = np.ones(len(self.items), dtype=np.bool_)
        for task_id in exclude_task_ids:
            index = self._by_task.get(task_id)
            if index is not None:
                allowed[index] = False
        for content_hash in exclude_hashes:
            allowed[self._by_hash.get(content_hash, [])] = False
        return allowed

    def select_indices(
        self,
        task: TaskInput,
        policy: FewShotPolicy,
        *,
        exclude_task_ids: AbstractSet[int] = frozenset(),
        exclude_hashes: AbstractSet[str] = frozenset(),
        example_tokens: Callable[[Example], int] | None = None,
    ) -> list[int]:
        """Like `select`, as pool indices."""
        if policy.kind is FewShotKind.none or not self.items:
            return []
        allowed = self._allowed({task.task_id, *exclude_task_ids}, {task.content_hash, *exclude_hashes})
        scores: Scores | None = None
        if policy.kind is FewShotKind.fixed:
            found, _ = self.find(policy.example_ids)
            chosen = [index for index in found if allowed[index]]
        else:
            scores = np.where(allowed, self.similarities(task), np.float32(-np.inf)).astype(np.float32)
            with _one_blas_thread():
                chosen = _SELECTORS[policy.kind](self, scores, policy.k)
        if policy.max_tokens is not None and example_tokens is not None:
            tokens = example_tokens
            chosen = _fit_budget(chosen, scores, lambda index: tokens(self.example(index)), policy.max_tokens)
        return chosen

    def select(
        self,
        task: TaskInput,
        policy: FewShotPolicy,
        *,
        exclude_task_ids: AbstractSet[int] = frozenset(),
        exclude_hashes: AbstractSet[str] = frozenset(),
        example_tokens: Callable[[Example], int] | None = None,
    ) -> list[Example]:
        """Choose a task's few-shot examples (see the module docstring); never the task or its duplicates.

        `example_tokens` measures an example for `policy.max_tokens` (without it the budget is not applied).
        """
        indices = self.select_indices(
            task,
            policy,
            exclude_task_ids=exclude_task_ids,
            exclude_hashes=exclude_hashes,
            example_tokens=example_tokens,
        )
        return [self.example(index) for index in indices]


# ---------------------------------------------------------------------------------------------- for a labeler


class FewShotExamples:
    """A prompt version's few-shot examples for `LLMLabeler(examples_for=...)`: a sync callable, so cost
    estimates include the examples; selections are remembered per task content."""

    def __init__(
        self,
        pool: ExamplePool,
        policy: FewShotPolicy,
        *,
        example_tokens: Callable[[Example], int] | None = None,
        notes: Sequence[str] = (),
        cache_size: int = SELECTION_CACHE_SIZE,
    ) -> None:
        self.pool = pool
        self.policy = policy
        self.example_tokens = example_tokens
        #: What a person should know (where the examples come from, what the sync did, what was left out).
        self.notes = list(notes)
        self._cache: OrderedDict[str, list[int]] = OrderedDict()
        self._cache_size = cache_size

    def __call__(self, task: TaskInput) -> list[Example]:
        """Return the task's examples (none when its text cannot be built: rendering then says why)."""
        indices = self._cache.get(task.content_hash)
        # The selection depends only on the content: the task and its duplicates share the content hash,
        # which is excluded. A task whose stored content differs from `content_hash` is chosen afresh.
        if indices is None or any(self.pool.items[i].task_id == task.task_id for i in indices):
            try:
                indices = self.pool.select_indices(task, self.policy, example_tokens=self.example_tokens)
            except LabelSpecError:
                return []
            self._cache[task.content_hash] = indices
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(task.content_hash)
        return [self.pool.example(index) for index in indices]

    def fingerprint(self) -> str:
        """Return the pool's fingerprint (it changes when an example, its label or its split changes)."""
        return self.pool.fingerprint()

    def identity(self) -> dict[str, Any]:
        """Return what a labeler's identity (and so its job key) must include about its examples."""
        return {
            "few_shot_examples": {
                "pool": self.pool.name,
                "size": len(self.pool),
                "embedder": self.pool.embedder.name,
                "fingerprint": self.fingerprint(),
            }
        }


def examples_for_version(
    db: Database,
    settings: Settings,
    project_name: str,
    version: PromptConfig,
    *,
    pool: PoolRequest | None = None,
    embedder: Embedder | None = None,
    store: ExampleStore | None = None,
    model: str | None = None,
) -> FewShotExamples | None:
    """Build the few-shot example source of a prompt version (None when its policy is `none`).

    Syncs the project's example store with the ground truth once, then selects from a snapshot of it.
    `pool` defaults to "auto" (the train split when the project has splits, else all ground truth; a fixed
    list ignores it); `embedder` to the baseline's (MiniLM); `model`, what `max_tokens` is counted for, to
    the version's model, else the configured one. Raises ConfigError when a fixed example is not in the
    ground truth or lacks a field the prompt shows.
    """
    policy = version.few_shot
    if policy.kind is FewShotKind.none:
        return None
    with db.session() as session:
        project = get_project(session, project_name)
        project_id, spec, name = project.id, require_spec(project), project.name
    store = store if store is not None else ExampleStore.open(settings, project_id, embedder=embedder)
    report = store.sync(db)
    notes: list[str] = []
    if report.changed:
        notes.append(f"example store {report.collection}: {report.summary()}")
    if report.skipped:
        shown = "; ".join(report.skipped[:3]) + ("; ..." if len(report.skipped) > 3 else "")
        notes.append(f"{len(report.skipped):,} ground-truth item(s) cannot be examples: {shown}")
    everything = store.snapshot(spec)
    if policy.kind is FewShotKind.fixed:
        chosen = _fixed_pool(everything, policy, version, project=name)
        held_out = [item.external_id for item in chosen.items if item.split in ("dev", "test")]
        if held_out:
            notes.append(
                f"fixed example(s) {', '.join(held_out)} belong to the dev/test split: evaluations there "
                "show them to the model (never as an example of themselves)"
            )
    else:
        usable, dropped = everything.renderable(version)
        if dropped:
            notes.append(
                f"{len(dropped):,} example(s) lack a field the prompt shows and are left out "
                f"({', '.join(dropped[:5])}{', ...' if len(dropped) > 5 else ''})"
            )
        chosen = usable.restrict(pool if pool is not None else "auto")
    summary = few_shot_summary(policy)
    if len(chosen):
        notes.append(f"few-shot examples ({summary}) come from {chosen.describe()}")
    else:
        todo = (
            "label more ground truth and run `labelpilot gt split`"
            if chosen.name == "train"
            else "label some ground truth first"
        )
        notes.append(
            f"few-shot examples ({summary}): {chosen.describe()}, so prompts go without examples ({todo})"
        )
    tokens = None
    if policy.max_tokens is not None:
        tokens = ExampleTokens(spec, version, model or version.model or settings.label_model)
    return FewShotExamples(chosen, policy, example_tokens=tokens, notes=notes)


def _fixed_pool(
    everything: ExamplePool, policy: FewShotPolicy, config: PromptConfig, *, project: str
) -> ExamplePool:
    found, missing = everything.find(policy.example_ids)
    if missing:
        raise ConfigError(
            f"the fixed few-shot example(s) {', '.join(repr(m) for m in missing)} are not in the ground truth "
            f"of project '{project}'",
            hint="label them first (labelpilot gt set ID LABEL), or create a version with other --examples "
            "(task ids as exports show them, or #<row id>)",
        )
    fixed = everything.subset(found, name="fixed")
    _, unusable = fixed.renderable(config)
    if unusable:
        raise ConfigError(
            f"the fixed few-shot example(s) {', '.join(repr(u) for u in unusable)} lack a field the prompt shows",
            hint="choose examples that have every field the instructions refer to",
        )
    return fixed
