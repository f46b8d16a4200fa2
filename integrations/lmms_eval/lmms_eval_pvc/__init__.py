"""lmms-eval plugin for PVC-InternVL (InternVL2 + PVC token compression + optional PruneVid).

Installing this package (``pip install ./integrations/lmms_eval``) registers the model ``pvc_internvl``
through lmms-eval's ``lmms_eval.models`` entry-point group; lmms-eval then lists it beside its built-in
models (``--model pvc_internvl``). Importing this module is cheap: the model class lives in
``lmms_eval_pvc.model`` and is imported only when lmms-eval instantiates it.
"""

from __future__ import annotations

MODEL_NAME = "pvc_internvl"
MODEL_CLASS_PATH = "lmms_eval_pvc.model.PVCInternVL"

__all__ = ["MODEL_NAME", "MODEL_CLASS_PATH", "manifest"]


def manifest():
    """The entry point's payload: one ``ModelManifest`` (a chat-style model, ``is_simple = False``)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_NAME, chat_class_path=MODEL_CLASS_PATH, aliases=("pvc",))
