"""The Hugging Face Hub side of a model folder: finding one by what a user names, fetching one by its
Hub id, and its model card's metadata.

``DRAW.from_pretrained(NAME)`` and ``cdraw ... --checkpoint NAME`` find their folder through
:func:`resolve_checkpoint`; a Hub id (``owner/name``, at a revision) comes through :func:`snapshot`,
which ``huggingface_hub`` serves from its cache when offline (``HF_HUB_OFFLINE=1``). A model card
(``README.md``) starts with YAML metadata that the Hub reads (:func:`card_data`): the library, tags,
the data set and the figures of ``eval.json``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from cdraw.errors import CDrawError
from cdraw.io import (
    CONFIG_NAME,
    figures_include_training,
    local_model,
    measured_on_part,
    model_source,
    shipped_model,
    shipped_model_names,
)

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name (./name and ../name are paths)
LIBRARY = "cdraw"
TAGS = ["draw", "image-generation", "variational-autoencoder", "pytorch"]
#: what each data set's model does, as the Hub names tasks
TASKS = {
    "binarized-mnist": "unconditional-image-generation",
    "mnist": "image-generation",
    "fashion-mnist": "image-generation",
    "mnist-captions": "text-to-image",
    "coco": "text-to-image",
}
#: eval.json figures that go into the card's metadata: key -> (metric type, readable name)
METRICS = {
    "bound": ("nll", "negative variational bound (nats per image)"),
    "iwae": ("nll", "importance-weighted bound (nats per image)"),
    "label_fidelity": ("accuracy", "label fidelity"),
    "fidelity_test_seen": ("accuracy", "caption fidelity, seen captions"),
    "fidelity_test_heldout": ("accuracy", "caption fidelity, held-out captions"),
    "fidelity_test_paraphrase": ("accuracy", "caption fidelity, paraphrased captions"),
    "retrieval_images_r_at_1": ("recall", "image retrieval R@1 (a caption's image among N)"),
    "retrieval_captions_r_at_1": ("recall", "caption retrieval R@1 (an image's caption among N)"),
}


def snapshot(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Path:
    """The folder of a Hub model repository (downloaded, or from the local cache when offline)."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )
    except Exception as e:  # offline without a cached copy, an unknown id, no access: the user's to fix
        raise CDrawError(
            f"{repo_id} is not a local folder and could not be fetched from the Hugging Face Hub "
            f"({type(e).__name__}; offline without a cached copy?)"
        ) from None
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        raise CDrawError(f"the Hub repository {repo_id} is not a cdraw checkpoint (no {CONFIG_NAME})")
    return folder


def resolve_checkpoint(name: str | os.PathLike, *, stacklevel: int = 2, **hub: Any) -> Path:
    """A model folder from what a user points at (``cdraw --checkpoint``, :meth:`DRAW.from_pretrained
    <cdraw.model.DRAW.from_pretrained>`): one on this machine (a model or run folder, a shipped model's
    name: :func:`cdraw.io.local_model`) or a Hugging Face Hub id (``owner/name``, downloaded when
    online, else from the local cache; ``hub``: :func:`snapshot`'s options); else a one-line error
    saying why not. A warning (a run's model read from its ``best/``) points ``stacklevel`` frames up."""
    given = str(name)
    path = Path(name).expanduser()
    if found := local_model(given, stacklevel=stacklevel + 1):
        return found
    if path.exists():  # a folder (or file) of the user's that holds no model
        shipped = shipped_model(given)  # a folder of the user's came first; say how to reach the shipped one
        also = f"; the shipped model {shipped.name} is --checkpoint {model_source(str(shipped))}" if shipped else ""
        raise CDrawError(f"{path} is not a cdraw checkpoint (no {CONFIG_NAME} in it or in {path / 'model'}){also}")
    if HUB_ID.fullmatch(given):
        return snapshot(given, **hub)
    names = ", ".join(shipped_model_names())
    nor = f" (nor is it a shipped model: {names})" if names else ""
    raise CDrawError(f"checkpoint {path} does not exist{nor}")


def describe(config: Any, parameters: int) -> str:
    """One paragraph on a DRAW model's shape (``config``: its DRAWConfig)."""
    kind = config.condition.kind if config.condition else "unconditional"
    h, w = config.image_size
    return (
        f"DRAW ({kind}), {parameters:,} parameters, {config.channels}x{h}x{w} images, T = {config.glimpses}, "
        f"read {config.read_size}x{config.read_size}, write {config.write_size}x{config.write_size}, "
        f"LSTMs {config.enc_size}/{config.dec_size}, z {config.z_size}, prior "
        f"{'learned' if config.learned_prior else 'N(0, I)'}. Full settings: `config.json`."
    )


def card_data(training: dict[str, Any], figures: dict[str, Any], conditioned_on: str | None, name: str = "DRAW"):
    """A model card's YAML metadata (``huggingface_hub.ModelCardData``) from the folder's
    ``training.json`` and ``eval.json`` records."""
    from huggingface_hub import EvalResult, ModelCardData

    dataset = figures.get("dataset") or training.get("dataset")
    tags = TAGS + ([f"conditioned-on-{conditioned_on}"] if conditioned_on else [])
    results = []
    split = figures.get("split")
    if figures_include_training(training, figures):
        split = f"{split} (includes training images)"  # trained on the test file (--source t10k)
    if dataset:
        for key, (kind, metric) in METRICS.items():
            value = figures.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                part = measured_on_part(figures, key)
                results.append(
                    EvalResult(
                        task_type=TASKS.get(dataset, "image-generation"),
                        dataset_type=dataset,
                        dataset_name=dataset,
                        dataset_split=split if part is None else f"{split} (first {part:,} images)",
                        metric_type=kind,
                        metric_name=metric,
                        metric_value=round(float(value), 4),
                    )
                )
    return ModelCardData(
        library_name=LIBRARY,
        tags=tags,
        datasets=[dataset] if dataset else None,
        pipeline_tag=TASKS.get(dataset),
        model_name=name if results else None,
        eval_results=results or None,
    )


def card_text(data, body: str) -> str:
    """A model card: the YAML metadata between ``---`` lines, then the Markdown ``body``."""
    from huggingface_hub import ModelCard

    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body.lstrip()}"))
