"""Likelihood evaluation: the variational bound and the importance-weighted bound, in nats per image.

For a model with encoder q and prior p, -log p(x) <= E_q[-log p(x|z) + log q(z|x) - log p(z)]
(the negative ELBO, what :class:`~cdraw.DRAW` returns as ``loss``), and the tighter IWAE bound
(Burda et al. 2016) with k samples: -log p(x) <= -log (1/k) sum_i p(x, z_i) / q(z_i | x), which
falls towards -log p(x) as k grows. Both are exact means over the whole split (no dropped batch).

Shapes: B batch, K importance samples.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from cdraw.data import ImageData
from cdraw.errors import CDrawError, CDrawWarning
from cdraw.io import DigitSource, all_runs, data_source, figures_include_training, read_record
from cdraw.model import DRAW

#: Images per forward pass when evaluating with importance samples (batch * samples per chunk).
IWAE_CHUNK = 2000


@dataclass
class BoundSums:
    """Sums over a set of images, so shards from several processes add up to an exact mean."""

    loss: float = 0.0
    recon: float = 0.0
    kl: float = 0.0
    count: int = 0

    def __add__(self, other: BoundSums) -> BoundSums:
        return BoundSums(self.loss + other.loss, self.recon + other.recon, self.kl + other.kl, self.count + other.count)

    def means(self) -> dict[str, float]:
        n = max(self.count, 1)
        return {"bound": self.loss / n, "recon": self.recon / n, "kl": self.kl / n, "images": self.count}


@torch.no_grad()
def bound_sums(
    model: DRAW, data: ImageData, batch_size: int = 1000, generator: torch.Generator | None = None, progress=None
) -> BoundSums:
    """Sum of the negative ELBO (and its two terms) over every image of ``data``."""
    device = next(model.parameters()).device
    total = torch.zeros(3, dtype=torch.float64, device=device)  # loss, recon, kl: summed on device
    for start in range(0, len(data), batch_size):
        rows = slice(start, start + batch_size)
        x, cond = data.batch(rows).to(device), data.condition(rows)
        out = model(x, cond, generator=generator)
        total += torch.stack([out.loss.sum(), out.recon.sum(), out.kl.sum()]).double()
        if progress is not None:
            progress.update(len(x))
    loss, recon, kl = total.tolist()
    return BoundSums(loss, recon, kl, len(data))


@torch.no_grad()
def iwae_nll(
    model: DRAW, x: Tensor, k: int, generator: torch.Generator | None = None, condition: Tensor | None = None
) -> Tensor:
    """Importance-weighted estimate of -log p(x) with ``k`` samples: (B, C, H, W) -> (B,) nats.

    ``condition``: (B,) or (B, L), for a conditional model (then it is -log p(x | condition)).
    """
    b = x.shape[0]
    per_chunk = max(1, IWAE_CHUNK // b)
    log_w = []  # chunks of (k_chunk, B)
    for start in range(0, k, per_chunk):
        kc = min(per_chunk, k - start)
        xr = x.repeat(kc, 1, 1, 1)  # (kc * B, C, H, W): sample-major, so view(kc, B) below
        cr = condition.repeat(kc, *[1] * (condition.dim() - 1)) if condition is not None else None
        out = model(xr, cr, return_log_ratio=True, generator=generator)
        log_w.append((-out.recon - out.log_ratio).view(kc, b))  # log p(x|z) + log p(z) - log q(z|x)
    log_w = torch.cat(log_w).double()  # (K, B)
    return -(torch.logsumexp(log_w, dim=0) - math.log(k))  # stable log-mean-exp


@torch.no_grad()
def iwae_sum(
    model: DRAW, data: ImageData, k: int, batch_size: int = 100, generator: torch.Generator | None = None, progress=None
) -> float:
    """Sum over ``data`` of the k-sample IWAE estimate of -log p(x)."""
    device = next(model.parameters()).device
    total = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, len(data), batch_size):
        rows = slice(start, start + batch_size)
        x = data.batch(rows).to(device)
        total += iwae_nll(model, x, k, generator, data.condition(rows)).sum()
        if progress is not None:
            progress.update(len(x))
    return total.item()


@torch.no_grad()
def bound_matrix(
    model: DRAW, images: Tensor, conditions: Tensor, generator: torch.Generator | None = None, progress=None
) -> Tensor:
    """The variational bound of every image under every caption: (N, N), row i image i, column j
    caption j (nats; lower is more likely). Costs N^2 forward passes.

    images: (N, C, H, W) in [0, 1]; conditions: (N, L) token ids, row i the caption of image i.
    All N captions of an image are scored on the same latent noise (common random numbers), so a
    row compares captions, not noise draws.
    """
    device = next(model.parameters()).device
    n = len(images)
    conditions = conditions.to(device)
    bounds = torch.empty(n, n, dtype=torch.float64)
    for i in range(n):
        x = images[i : i + 1].to(device).expand(n, *images.shape[1:])  # image i under every caption
        bounds[i] = model(x, conditions, generator=generator, shared_noise=True).loss.double().cpu()
        if progress is not None:
            progress.update(1)
    return bounds


def true_ranks(scores: Tensor) -> Tensor:
    """The rank of the diagonal entry in each row of (N, N) ``scores`` (lower is better; 1 = the
    best); ties count against the diagonal. Returns (N,) int64."""
    return (scores <= scores.diagonal().unsqueeze(1)).sum(1)


def retrieval_ranks(bounds: Tensor) -> dict[str, Tensor]:
    """Both directions of retrieval from a :func:`bound_matrix`.

    - ``captions``: for each image, the rank of its own caption among the N captions by the bound
      -log p(x | y) (caption retrieval, image -> text).
    - ``images``: for each caption, the rank of its own image among the N images (image retrieval,
      text -> image, the direction alignDRAW reports). Images differ in how many nats they cost
      whatever the caption, so each image is scored by its bound under the caption minus its mean
      bound over the N captions: a log-likelihood ratio against an average caption. (Subtracting a
      row's mean leaves caption ranks unchanged.)
    """
    relative = bounds - bounds.mean(1, keepdim=True)  # (N images, N captions)
    return {"captions": true_ranks(relative), "images": true_ranks(relative.T)}


def retrieval_picks(dataset: str, split: str, n: int, data_dir: str | None = None, folder: str | None = None) -> Tensor:
    """Indices of ``n`` examples of a split with distinct targets, for retrieval (the data set's
    ``retrieval_keys``: one caption per COCO image, one per MNIST-with-captions layout); ``folder``:
    the data set's own folder, as for :func:`evaluation_data`."""
    from cdraw import datasets

    found = datasets.get(dataset)
    if found.retrieval_keys is None:
        raise CDrawError(f"retrieval ranks captions: {dataset} has none")
    first: dict = {}
    for i, key in enumerate(found.retrieval_keys(split, data_dir, folder)):
        first.setdefault(key, i)
        if len(first) == n:
            break
    return torch.tensor(list(first.values()), dtype=torch.long)


def retrieval_summary(ranks: Tensor) -> dict[str, float]:
    """R@1, R@5 (shares of queries whose true match ranks in the top 1 / 5) and the median rank."""
    r = ranks.double()
    return {
        "r_at_1": (r <= 1).double().mean().item(),
        "r_at_5": (r <= 5).double().mean().item(),
        "median_rank": r.median().item(),
        "candidates": len(r),
    }


# -- conditional models: which data, and does a generated image show what was asked? ------------


def evaluation_data(
    model: DRAW, dataset: str, split: str, data_dir: str | None = None, folder: str | None = None
) -> ImageData:
    """A split of ``dataset`` (a name of :data:`cdraw.datasets.DATASETS`) for ``model``: its labels or
    captions encoded by the model's tokenizer. ``folder``: the data set's own folder where it was made
    elsewhere than in ``data_dir`` (``cdraw prepare coco --out``, ``cdraw prepare mnist-captions --out``)."""
    found = _fitting(model, dataset)
    return found.load(split, data_dir, model.encode_condition if found.conditions else None, folder=folder)


def _fitting(model: DRAW, dataset: str):
    """The data set ``dataset`` names, if its conditions (labels, captions or none) are the model's."""
    from cdraw import datasets
    from cdraw.datasets.base import conditioned_on

    found = datasets.get(dataset)
    wants = conditioned_on(model.config)
    if found.conditions != wants:
        has = f"has {found.conditions}s" if found.conditions else "has no labels or captions"
        model_wants = f"{wants}s" if wants else "nothing (it is unconditional: use binarized-mnist)"
        raise CDrawError(f"{dataset} {has}, and this model is conditioned on {model_wants}")
    return found


@torch.no_grad()
def sample_batched(
    model: DRAW, conditions: Tensor, batch_size: int, generator: torch.Generator | None = None
) -> Tensor:
    """One image per condition, (N,) or (N, L) -> (N, C, H, W) means, in batches."""
    out = [model.sample(len(c), c, generator=generator) for c in conditions.split(batch_size)]  # each (b, C, H, W)
    return torch.cat(out).cpu()


def label_fidelity_of(
    model: DRAW, classifier, per_class: int, batch_size: int = 500, generator: torch.Generator | None = None
) -> dict[str, float]:
    """Generate ``per_class`` images of every class the classifier knows (0..9); the share it reads as that class."""
    from cdraw.fidelity import EMPTY_CLASS, label_fidelity

    classes = min(model.config.condition.num_classes, EMPTY_CLASS)  # a class 10 would be scored as "no digit"
    labels = torch.arange(classes).repeat_interleave(per_class)  # (classes * per_class,)
    images = sample_batched(model, labels, batch_size, generator)
    result = {"label_fidelity": label_fidelity(classifier, images, labels), "fidelity_images": len(labels)}
    for k in range(classes):
        sel = labels == k
        result[f"fidelity_class_{k}"] = label_fidelity(classifier, images[sel], labels[sel])
    return result


def caption_matches_of(
    model: DRAW,
    classifier,
    captions: list[str],
    layouts: list | None = None,
    batch_size: int = 500,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Generate one 60x60 image per caption -> (N,) bool: whether its digits and positions fit it.
    ``layouts``: what each caption asks for as :class:`cdraw.mnist_captions.Caption` (needed for
    paraphrases); default: the captions parsed as template captions."""
    from cdraw.fidelity import caption_matches

    images = sample_batched(model, model.encode_condition(captions), batch_size, generator)
    return caption_matches(classifier, images, layouts if layouts is not None else captions)


#: the MNIST-with-captions splits that caption fidelity is measured on
FIDELITY_SPLITS = ("test_seen", "test_heldout", "test_paraphrase")


@dataclass(frozen=True)
class CaptionFidelity:
    """Caption fidelity on one split: the share of generated images that fit their caption, over
    how many captions, and the share per layout (:data:`~cdraw.mnist_captions.TEMPLATE_NAMES`, those
    present; a paraphrase counts under the layout it says again); for held-out captions also by
    whether training shows their picture under the mirrored caption (:func:`~cdraw.mnist_captions.picture_seen`):
    ``by_picture`` maps "picture_seen" (always a pair of digits), "new_pair" and "new_one_digit" (a digit
    in a corner where training never puts it) to (share, captions), those present. The first two
    compare like with like: pairs whose picture training shows under other words, and pairs it never
    shows."""

    share: float
    captions: int
    by_layout: dict[str, float]
    by_picture: dict[str, tuple[float, int]] = field(default_factory=dict)


def caption_fidelity_splits(
    model: DRAW,
    classifier,
    n: int,
    data_dir: str | None = None,
    generator: torch.Generator | None = None,
    folder: str | None = None,
) -> dict[str, CaptionFidelity]:
    """Caption fidelity on the first ``n`` captions of each of FIDELITY_SPLITS (of the data set in
    ``folder``, else in ``data_dir``)."""
    from cdraw.datasets.mnist_captions import load_mnist_captions, read_metadata
    from cdraw.mnist_captions import TEMPLATE_NAMES, picture_seen

    bans = tuple(tuple(b) for b in read_metadata(folder, data_dir=data_dir)["bans"])
    found = {}
    for split in FIDELITY_SPLITS:
        data = load_mnist_captions(split, folder, data_dir=data_dir)
        captions, layouts = data.captions[:n], data.layouts()[:n]
        with warnings.catch_warnings():
            if split == "test_paraphrase":  # unknown words are the point of this split: no warning
                warnings.simplefilter("ignore", CDrawWarning)
            matches = caption_matches_of(model, classifier, captions, layouts, generator=generator)  # (n,)
        templates = torch.tensor([c.template for c in layouts])  # (n,)
        by_layout = {
            name: matches[templates == t].float().mean().item()
            for t, name in enumerate(TEMPLATE_NAMES)
            if (templates == t).any()
        }
        by_picture = {}
        if split == "test_heldout":
            seen = torch.tensor([picture_seen(c, bans) for c in layouts])  # (n,)
            pair = torch.tensor([len(c.digits) == 2 for c in layouts])  # (n,)
            groups = (("picture_seen", seen), ("new_pair", ~seen & pair), ("new_one_digit", ~seen & ~pair))
            for name, group in groups:
                if group.any():
                    by_picture[name] = (matches[group].float().mean().item(), int(group.sum()))
        found[split] = CaptionFidelity(matches.float().mean().item(), len(captions), by_layout, by_picture)
    return found


# -- the whole evaluation of a model folder (`cdraw eval`) ---------------------------------------


def measured_on(
    model: DRAW,
    folder: str | Path,
    dataset: str | None = None,
    split: str | None = None,
    stacklevel: int = 2,
    data_dir: str | None = None,
    data_folder: str | None = None,
) -> tuple[str, str, bool]:
    """The data set and split that ``cdraw eval`` and ``cdraw reconstruct`` run the model in ``folder`` on:
    as asked, else the data set its ``training.json`` records (or the first that fits it) and that data
    set's evaluation split. A warning (one line) for each way the result could mislead: a data set other
    than the one it trained on, a test split whose images it trained on (``--source t10k``; for MNIST
    with captions, a data set in ``data_folder`` / ``data_dir`` composed from digits it trained on), or
    held-out roles it was not held out from; they point ``stacklevel`` frames up, as
    :func:`warnings.warn` counts. Returns ``(dataset, split, test_includes_training)``."""
    from cdraw import datasets

    dataset = dataset or datasets.for_model(model.config, folder, stacklevel=stacklevel + 1).name
    fits = _fitting(model, dataset)  # a data set that does not fit the model: refused before any warning
    split = split or fits.eval_split
    training = read_record(folder)
    if training.get("dataset") and training["dataset"] != dataset:
        warnings.warn(
            f"{folder} was trained on {training['dataset']}, and is measured here on {dataset}",
            CDrawWarning,
            stacklevel=stacklevel + 1,
        )
    test_includes_training = figures_include_training(training, {"dataset": dataset, "split": split})
    if test_includes_training:
        warnings.warn(
            f"{folder} was trained on images of the {dataset} test file (--source t10k, in this run or one it "
            "continued): its test split includes images it trained on",
            CDrawWarning,
            stacklevel=stacklevel + 1,
        )
    if dataset == "mnist-captions":
        unlike = _captions_unlike_training(folder, training, split, data_dir, data_folder)
        for said in unlike.values():
            warnings.warn(said, CDrawWarning, stacklevel=stacklevel + 1)
        test_includes_training = test_includes_training or "digits" in unlike
    return dataset, split, test_includes_training


def _captions_unlike_training(
    folder: str | Path, training: dict, split: str, data_dir: str | None, data_folder: str | None
) -> dict[str, str]:
    """How the MNIST with captions a caption model is measured on differs from what it (or a run it
    continued) trained on, in ways that make figures mislead, each in words: ``digits``, a test split
    composed of digits it trained on (data made from MNIST's train file hold all of t10k for the
    tests; a model trained on t10k's 8,000 has seen most of them); ``bans``, other held-out roles (the
    data set's seed), so test_heldout holds captions it trained on. {} when the data set is not there
    yet (reading it says so) or a record is silent."""
    from cdraw.datasets.mnist_captions import captions_folder, read_metadata
    from cdraw.mnist_captions import METADATA_NAME

    where = captions_folder(data_folder, data_dir)
    if not (where / METADATA_NAME).is_file():
        return {}
    meta = read_metadata(where)
    runs = [r for r in all_runs(training) if r.get("dataset") == "mnist-captions"]
    unlike = {}
    measured = DigitSource.read(meta.get("source", {}).get(split))  # the digits of the split measured

    def trained_on_them(run: dict) -> bool:
        trained = DigitSource.read(run.get("source"))
        return measured is not None and trained is not None and trained.shares_digits_with(measured)

    seen = [r for r in runs if trained_on_them(r)]
    if split.startswith("test") and seen:
        unlike["digits"] = (
            f"{folder} was trained on {data_source(seen[0])}, and the {split} split of {where} is drawn from "
            f"{data_source({'source': meta['source'][split]})}: it includes digits the model trained on, so its "
            f"figures are not held-out figures; {_remake(seen[0])}"
        )
    other = [r for r in runs if "bans" in r and r["bans"] != meta.get("bans")]
    if other:
        unlike["bans"] = (
            f"the held-out roles of {where} (data seed {meta.get('seed')}) are not the ones {folder} trained without "
            f"(data seed {other[0].get('data_seed', 'not recorded')}): its test_heldout captions are not held out "
            f"from it; {_remake(other[0])}"
        )
    return unlike


def _remake(run: dict) -> str:
    """How to make MNIST with captions as a caption run's ``training.json`` says it was made."""
    trained = DigitSource.read(run.get("source"))
    flags = " --source t10k-split" if trained and trained.part is not None else ""
    flags += " --source mnist-train" if trained and trained.file == "train" else ""
    flags += f" --seed {run['data_seed']}" if isinstance(run.get("data_seed"), int) else ""
    command = f"cdraw prepare mnist-captions{flags} --out DIR"
    return f"make the data set as its training data was made, `{command}`, and pass --captions-dir DIR"


def evaluate(
    model: DRAW,
    folder: str | Path,
    *,
    dataset: str | None = None,
    split: str | None = None,
    data_dir: str | None = None,
    data_folder: str | None = None,
    limit: int | None = None,
    batch_size: int = 1000,
    iw_samples: int = 10,
    iw_limit: int | None = None,
    fidelity: bool = False,
    fidelity_samples: int = 100,
    retrieval: int = 0,
    seed: int = 0,
    progress: bool = True,
    say: Callable[[str], object] = print,
) -> dict:
    """What `cdraw eval` measures of the model in ``folder``: the bound on a split (``limit``: its first
    N images; ``data_folder``: the data set's own folder, as for :func:`evaluation_data`), an IWAE
    estimate with ``iw_samples`` (0: none; on the first ``iw_limit`` images),
    fidelity and retrieval for conditional models. Each figure is reported through ``say`` as it
    comes; the returned dict is what ``--json`` writes."""
    from tqdm.auto import tqdm

    if (fidelity or retrieval) and model.config.condition is None:
        raise CDrawError("--fidelity and --retrieval measure conditional models; this one is unconditional")
    if retrieval and model.config.condition.kind == "label":
        raise CDrawError("--retrieval ranks captions; this is a label model")
    device = model.h_dec0.device
    dataset, split, test_includes_training = measured_on(
        model, folder, dataset, split, stacklevel=3, data_dir=data_dir, data_folder=data_folder
    )
    if fidelity:  # before the bound and IWAE, not after them
        _check_fidelity_data(model, dataset)
    full = data = evaluation_data(model, dataset, split, data_dir, data_folder)
    if limit:
        data = data.select(slice(0, limit))
    torch.manual_seed(seed)
    gen = torch.Generator(device).manual_seed(seed)

    start = time.perf_counter()
    with tqdm(total=len(data), desc="bound", unit="img", disable=not progress) as bar:
        result = bound_sums(model, data, batch_size, gen, progress=bar).means()
    result.update(dataset=dataset, split=split, split_images=len(full), checkpoint=str(folder), seed=seed)
    if test_includes_training:
        result["test_includes_training"] = True
    say(f"{dataset} {split} ({result['images']} images), model {folder}")
    recon, kl = result["recon"], result["kl"]
    say(f"variational bound: {result['bound']:.2f} nats  (reconstruction {recon:.2f} + KL {kl:.2f})")
    if iw_samples:
        iw_data = data.select(slice(0, iw_limit)) if iw_limit else data
        with tqdm(total=len(iw_data), desc=f"IWAE k={iw_samples}", unit="img", disable=not progress) as bar:
            total = iwae_sum(model, iw_data, iw_samples, max(1, batch_size // 10), gen, progress=bar)
        result.update(iwae=total / len(iw_data), iw_samples=iw_samples, iwae_images=len(iw_data))
        said = f"IWAE estimate of -log p(x), k={iw_samples}, {len(iw_data)} images: {result['iwae']:.2f} nats"
        if len(iw_data) < len(data):  # the bound on the same images, to compare with (its own draws: the
            own = torch.Generator(device).manual_seed(seed)  # figures after it stay as they were)
            result["iwae_images_bound"] = bound_sums(model, iw_data, batch_size, own).means()["bound"]
            said += f" (the bound on those images: {result['iwae_images_bound']:.2f})"
        say(said)
    if fidelity:
        result.update(_fidelity(model, dataset, fidelity_samples, data_dir, data_folder, gen, say))
    if retrieval:
        result.update(_retrieval(model, full, dataset, split, retrieval, data_dir, data_folder, gen, progress, say))
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def _check_fidelity_data(model: DRAW, dataset: str) -> None:
    """Whether fidelity is defined for ``model`` on ``dataset`` (the shipped classifiers read MNIST
    and Fashion-MNIST digits; caption fidelity needs MNIST with captions' layouts)."""
    if model.config.condition.kind == "label" and dataset not in ("mnist", "fashion-mnist"):
        raise CDrawError(f"label fidelity needs --data mnist or fashion-mnist, got {dataset}")
    if model.config.condition.kind != "label" and dataset != "mnist-captions":
        raise CDrawError("caption fidelity is defined for MNIST with captions (--data mnist-captions)")


def _fidelity(model: DRAW, dataset: str, n: int, data_dir, data_folder, gen, say) -> dict:
    """Label fidelity (``n`` images generated per class) or caption fidelity (``n`` seen, held-out
    and paraphrased captions)."""
    from cdraw.fidelity import shipped_classifier

    device = model.h_dec0.device
    if model.config.condition.kind == "label":
        found = label_fidelity_of(model, shipped_classifier(dataset, device), n, generator=gen)
        share, images = found["label_fidelity"], found["fidelity_images"]
        say(f"label fidelity: {share:.1%} of {images} generated images show their class")
        return found
    classifier, found = shipped_classifier("mnist", device), {}
    for split, got in caption_fidelity_splits(model, classifier, n, data_dir, gen, data_folder).items():
        found[f"fidelity_{split}"] = got.share
        found.update({f"fidelity_{split}_{name.replace(' ', '_')}": share for name, share in got.by_layout.items()})
        say(
            f"caption fidelity, {split}: {got.share:.1%} of {got.captions} generated images"
            f" (by layout: {', '.join(f'{name} {share:.0%}' for name, share in got.by_layout.items())})"
        )
        for name, (share, count) in got.by_picture.items():
            found[f"fidelity_{split}_{name}"], found[f"fidelity_{split}_{name}_captions"] = share, count
        if got.by_picture:
            parts = [
                f"{name.replace('_', ' ')} {share:.1%} of {count}" for name, (share, count) in got.by_picture.items()
            ]
            say(f"  of which {', '.join(parts)} (picture seen: a pair training shows under the mirrored caption)")
    return found


def _retrieval(
    model: DRAW, data: ImageData, dataset: str, split: str, n: int, data_dir, data_folder, gen, progress, say
) -> dict:
    """alignDRAW's retrieval on ``n`` examples with distinct captions, both ways: each image's caption
    among the ``n`` captions, and each caption's image among the ``n`` images, by the bound."""
    from tqdm.auto import tqdm

    chosen = data.select(retrieval_picks(dataset, split, n, data_dir, data_folder))
    with tqdm(total=len(chosen), desc="retrieval", unit="img", disable=not progress) as bar:
        bounds = bound_matrix(model, chosen.batch(slice(None)), chosen.condition(slice(None)), gen, progress=bar)
    found = {}
    for direction, ranks in retrieval_ranks(bounds).items():
        prefix = f"retrieval_{direction}_"
        found.update({prefix + k: v for k, v in retrieval_summary(ranks).items()})
        query, among = ("an image", "captions") if direction == "captions" else ("a caption", "images")
        say(
            f"retrieval of {direction} ({query} -> its own among {len(ranks)} {among}, {split}): "
            f"R@1 {found[prefix + 'r_at_1']:.1%}, R@5 {found[prefix + 'r_at_5']:.1%}, "
            f"median rank {found[prefix + 'median_rank']:.0f}"
        )
    return found
