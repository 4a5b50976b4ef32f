"""tools.embeddings: the numpy MiniLM against sentence-transformers' vectors, the registry, and Chroma."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from tools.embeddings import (
    Embedder,
    HashingEmbedder,
    MiniLMEmbedder,
    chroma_embedding_function,
    embedder_names,
    get_embedder,
    load_safetensors,
)
from tools.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "minilm_reference.json"
REFERENCE: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
REFERENCE_TEXTS: list[str] = REFERENCE["texts"]
REFERENCE_VECTORS = np.asarray(REFERENCE["vectors"], dtype=np.float32)

# Mixed lengths on purpose: short, empty, punctuation-only, unicode and one past the 256-token limit.
MIXED_TEXTS = [
    "refund please",
    REFERENCE_TEXTS[-1],
    "",
    "How long does a transfer from the UK take to arrive in my account?",
    "?!",
    "東京は日本の首都です。",
    "card",
    "My top-up failed twice and the money left my account anyway, what now?",
]

SHORT_TEXTS = [text for text in MIXED_TEXTS if len(text) < 100]

CHROMA_DOCS = {
    "card": "I lost my bank card and need to block it.",
    "rate": "What exchange rate do you use to convert euros to dollars?",
    "cat": "The cat slept on the warm windowsill all afternoon.",
    "pizza": "Bake the pizza at 250 degrees with mozzarella and basil.",
    "password": "How do I reset the password of my online banking?",
    "football": "The striker scored twice in the second half of the match.",
}


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


@pytest.fixture(autouse=True)
def offline_and_homeless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point HOME at an empty folder and forbid hub downloads; returns the fake home."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


# ------------------------------------------------------------------------------------------------------
# MiniLM against the reference


def test_reference_fixture_exercises_truncation_and_the_empty_string() -> None:
    assert max(REFERENCE["untruncated_token_counts"]) > 256
    assert REFERENCE["max_seq_length"] == 256
    assert "" in REFERENCE_TEXTS
    assert REFERENCE_VECTORS.shape == (len(REFERENCE_TEXTS), 384)


@pytest.mark.parametrize("batch_size", [1, 32])
def test_vectors_match_sentence_transformers(minilm: MiniLMEmbedder, batch_size: int) -> None:
    vectors = minilm.embed(REFERENCE_TEXTS, batch_size=batch_size)
    similarity = cosine(vectors, REFERENCE_VECTORS)
    worst = int(similarity.argmin())
    assert similarity.min() >= 0.9999, f"text {worst} {REFERENCE_TEXTS[worst][:40]!r}: {similarity[worst]}"


@pytest.fixture(scope="module")
def mixed_vectors(minilm: MiniLMEmbedder) -> np.ndarray:
    return minilm.embed(MIXED_TEXTS)


def test_shape_dtype_and_unit_length(mixed_vectors: np.ndarray) -> None:
    assert mixed_vectors.shape == (len(MIXED_TEXTS), 384)
    assert mixed_vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(mixed_vectors, axis=1), 1.0, atol=1e-5)


def test_order_is_preserved_with_mixed_lengths(minilm: MiniLMEmbedder, mixed_vectors: np.ndarray) -> None:
    permutation = [3, 7, 1, 0, 5, 2, 6, 4]
    shuffled = minilm.embed([MIXED_TEXTS[i] for i in permutation], batch_size=3)
    np.testing.assert_allclose(shuffled, mixed_vectors[permutation], atol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_batch_size_does_not_change_vectors(
    minilm: MiniLMEmbedder, mixed_vectors: np.ndarray, batch_size: int
) -> None:
    np.testing.assert_allclose(minilm.embed(MIXED_TEXTS, batch_size=batch_size), mixed_vectors, atol=1e-5)


def test_token_budget_does_not_change_vectors(mixed_vectors: np.ndarray) -> None:
    tight = MiniLMEmbedder(max_tokens_per_pass=16)  # one text per pass for all but the shortest
    np.testing.assert_allclose(tight.embed(MIXED_TEXTS), mixed_vectors, atol=1e-5)


def test_empty_input_and_empty_string(minilm: MiniLMEmbedder) -> None:
    empty = minilm.embed([])
    assert empty.shape == (0, 384)
    assert empty.dtype == np.float32
    assert np.isfinite(minilm.embed([""])).all()


def test_accepts_array_like_sequences(minilm: MiniLMEmbedder, mixed_vectors: np.ndarray) -> None:
    # A numpy array (or pandas column) has no truth value; the embedders must not ask for one. Such
    # array-likes are not `Sequence[str]` to mypy, hence the casts, but callers do pass them.
    texts = cast(Sequence[str], np.array(SHORT_TEXTS[:2]))
    np.testing.assert_allclose(minilm.embed(texts), mixed_vectors[[0, 2]], atol=1e-5)
    assert minilm.embed(cast(Sequence[str], np.array([], dtype=str))).shape == (0, 384)


def test_rejects_a_bare_string_and_a_bad_batch_size(minilm: MiniLMEmbedder) -> None:
    with pytest.raises(TypeError):
        minilm.embed("one text")
    with pytest.raises(ValueError, match="batch_size"):
        minilm.embed(["a"], batch_size=0)


def test_similar_sentences_are_closer(minilm: MiniLMEmbedder) -> None:
    anchor, paraphrase, unrelated = minilm.embed(
        ["My card was declined", "The payment with my card did not go through", "Bake bread at 200 degrees"]
    )
    assert anchor @ paraphrase > anchor @ unrelated + 0.3


def test_concurrent_first_use_loads_once_and_agrees() -> None:
    embedder = MiniLMEmbedder()
    with ThreadPoolExecutor(max_workers=4) as pool:
        # result() re-raises in this thread whatever failed in a worker.
        results = [future.result() for future in [pool.submit(embedder.embed, SHORT_TEXTS) for _ in range(4)]]
    for result in results[1:]:
        np.testing.assert_allclose(result, results[0], atol=1e-6)


def test_import_loads_nothing_heavy() -> None:
    code = (
        "import sys, tools.embeddings as e; e.MiniLMEmbedder(); "
        "print(sorted(m for m in ('chromadb', 'sklearn', 'tokenizers', 'torch') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    output = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    assert output.stdout.strip() == "[]"


def test_missing_model_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config\.json"):
        MiniLMEmbedder(tmp_path).embed(["hello"])


# ------------------------------------------------------------------------------------------------------
# safetensors reader


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], *, dtype_code: str = "F32") -> None:
    header: dict[str, Any] = {"__metadata__": {"format": "np"}}
    buffers, offset = [], 0
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array).tobytes()
        header[name] = {
            "dtype": dtype_code,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        buffers.append(raw)
        offset += len(raw)
    header_bytes = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(header_bytes)) + header_bytes + b"".join(buffers))


def test_safetensors_reader_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([-1.5, 2.25], dtype=np.float32)
    write_safetensors(path, {"a": a, "b": b})
    loaded = load_safetensors(path)
    assert set(loaded) == {"a", "b"}
    np.testing.assert_array_equal(loaded["a"], a)
    np.testing.assert_array_equal(loaded["b"], b)


def test_safetensors_reader_rejects_unknown_dtype(tmp_path: Path) -> None:
    path = tmp_path / "bf16.safetensors"
    write_safetensors(path, {"x": np.zeros(2, dtype=np.uint16)}, dtype_code="BF16")
    with pytest.raises(ConfigError, match="BF16"):
        load_safetensors(path)


def test_safetensors_reader_reads_the_bundled_model(minilm: MiniLMEmbedder) -> None:
    tensors = load_safetensors(minilm.model_dir / "model.safetensors")
    assert tensors["embeddings.word_embeddings.weight"].shape == (30522, 384)
    assert tensors["encoder.layer.5.output.dense.weight"].dtype == np.float32


# ------------------------------------------------------------------------------------------------------
# Registry and the hashing fallback


def test_registry_names_and_protocol() -> None:
    assert embedder_names() == ["hashing", "minilm", "sentence-transformers"]
    default = get_embedder()
    assert isinstance(default, MiniLMEmbedder)
    assert isinstance(default, Embedder)
    assert isinstance(get_embedder("hashing"), HashingEmbedder)


def test_unknown_embedder_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as raised:
        get_embedder("word2vec")
    assert "minilm" in raised.value.user_message()


def test_sentence_transformers_missing_is_a_config_error() -> None:
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="sentence-transformers"):
            get_embedder("sentence-transformers")
    else:
        pytest.skip("sentence-transformers is installed here")


def test_hashing_embedder() -> None:
    embedder = HashingEmbedder()
    vectors = embedder.embed(["card declined at the shop", "my card was declined", "pizza recipe", ""])
    assert vectors.shape == (4, embedder.dimension)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[:3], axis=1), 1.0, atol=1e-5)
    assert not vectors[3].any()  # no tokens, no direction
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert embedder.embed([]).shape == (0, embedder.dimension)


# ------------------------------------------------------------------------------------------------------
# Chroma


def make_client(path: Path) -> Any:
    import chromadb
    from chromadb.config import Settings

    return chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))


def test_chroma_function_config_round_trip() -> None:
    function = chroma_embedding_function(HashingEmbedder())
    assert function.name() == "labelpilot"
    assert function.get_config() == {"embedder": "hashing"}
    rebuilt = function.build_from_config(function.get_config())
    assert isinstance(rebuilt.embedder, HashingEmbedder)  # type: ignore[attr-defined]
    assert len(function(["hello there"])[0]) == HashingEmbedder().dimension
    with pytest.raises(ValueError, match="cannot change"):
        function.validate_config_update({"embedder": "hashing"}, {"embedder": "minilm"})


def test_chroma_collection_persists_and_reopens(
    tmp_path: Path, offline_and_homeless: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tools.embeddings import ChromaEmbeddingFunction

    store = tmp_path / "chroma"
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)

    client = make_client(store)
    collection = client.create_collection(
        "examples", embedding_function=chroma_embedding_function(MiniLMEmbedder())
    )
    collection.add(ids=list(CHROMA_DOCS), documents=list(CHROMA_DOCS.values()))
    found = collection.query(query_texts=["my card is gone, please freeze it"], n_results=2)
    assert found["ids"][0][0] == "card"
    assert collection.configuration_json["hnsw"]["space"] == "cosine"
    assert collection.configuration_json["embedding_function"] == {
        "type": "known",
        "name": "labelpilot",
        "config": {"embedder": "minilm"},
    }

    reopened = make_client(store).get_collection("examples")
    assert isinstance(reopened.configuration["embedding_function"], ChromaEmbeddingFunction)
    found = reopened.query(query_texts=["convert currency"], n_results=1)
    assert found["ids"][0] == ["rate"]

    assert list(offline_and_homeless.iterdir()) == []  # nothing in HOME (telemetry off, no model cache)
    assert list(workdir.iterdir()) == []  # nor in the working directory


def test_chroma_collection_reopens_in_a_fresh_process(tmp_path: Path, offline_and_homeless: Path) -> None:
    store = tmp_path / "chroma"
    collection = make_client(store).create_collection(
        "examples", embedding_function=chroma_embedding_function(MiniLMEmbedder())
    )
    collection.add(ids=list(CHROMA_DOCS), documents=list(CHROMA_DOCS.values()))

    # A new process knows the function only once tools.embeddings has defined it: by building one to pass
    # in (as here), or by importing `ChromaEmbeddingFunction`, which registers it for get_collection(name).
    code = (
        "import sys, chromadb\n"
        "from chromadb.config import Settings\n"
        "from tools.embeddings import MiniLMEmbedder, chroma_embedding_function\n"
        "client = chromadb.PersistentClient(path=sys.argv[1], settings=Settings(anonymized_telemetry=False))\n"
        "ef = chroma_embedding_function(MiniLMEmbedder())\n"
        "explicit = client.get_collection('examples', embedding_function=ef)\n"
        "by_name = client.get_collection('examples')\n"
        "for c in (explicit, by_name):\n"
        "    print(c.query(query_texts=['recipe for dinner'], n_results=1)['ids'][0][0])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HOME": str(offline_and_homeless)}
    output = subprocess.run(
        [sys.executable, "-c", code, str(store)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert output.returncode == 0, output.stderr[-2000:]
    assert output.stdout.split() == ["pizza", "pizza"]
    assert list(offline_and_homeless.iterdir()) == []
