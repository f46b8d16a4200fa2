"""Document functions of the pvc_local task: media files live in ./media next to this file."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

MEDIA_DIR = Path(__file__).resolve().parent / "media"


def doc_to_visual(doc: dict) -> list:
    """PIL images (RGB) for the document's images, then the path of its video (lmms-eval reads a string with a
    video extension as a video)."""
    visuals: list = []
    for name in doc.get("images") or []:
        with Image.open(MEDIA_DIR / name) as image:
            visuals.append(image.convert("RGB"))
    if doc.get("video"):
        visuals.append(str(MEDIA_DIR / doc["video"]))
    return visuals


def doc_to_text(doc: dict) -> str:
    return doc["question"]


def process_results(doc: dict, results: list) -> dict:
    """`answered`: the answer is not empty; `exact_match`: it equals the reference (case and full stop ignored)."""
    prediction = (results[0] if results else "") or ""
    clean = prediction.strip().rstrip(".").lower()
    return {"answered": float(bool(prediction.strip())), "exact_match": float(clean == doc["answer"].lower())}
