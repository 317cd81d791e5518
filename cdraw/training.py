"""The one training loop, shared by every recipe: data, model, optimiser, ``for step``, log.

Runs unchanged on one CPU, on several CPU processes (gloo), on one GPU and on many, through
``accelerate launch``. ``batch_size`` is per process; each process trains on its own disjoint
shard of every global batch (:func:`cdraw.data.shard_batches`).

Output folder::

    log.csv, tensorboard/cdraw/    one row per log interval and per validation
    samples/epoch-001.png          a grid of samples after each epoch
    checkpoints/step-00001000/     accelerate's save_state: model/ (our save_pretrained, through
                                   its save hook), optimizer.bin, random_states_{r}.pkl,
                                   custom_checkpoint_0.pkl (the TrainerState); written under a
                                   temporary name, then renamed
    checkpoints/latest             the name of the newest complete checkpoint
    checkpoints/superseded/        checkpoints later than the one a --resume went back to
    best/                          the model with the best validation bound so far
    model/                         the model at the end of training (both with training.json)
    train_config.yaml              the settings of the run (--resume starts from them)
    trained_on.json                its data, and its recipe's own settings of it
    started_from.json              with --init-weights: the source model and its own training.json,
                                   copied into every training.json of the run as "started_from"

Every process writes its RNG state into the checkpoint folder, so with several machines
``output_dir`` must be on a file system they share. Checkpoints go through
``Accelerator.save_state`` / ``load_state`` into a temporary folder that is renamed when complete;
the number kept is ours (``keep_checkpoints``), applied after the rename, because accelerate's
``total_limit`` deletes the oldest checkpoint before the new one is written. Before ``load_state``
the files it would read leniently are checked (it skips an unreadable RNG state without a word
and unpickles registered objects with ``weights_only=False``), so a damaged checkpoint is one
clear error and a resume is exact or says why not.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import hashlib
import json
import math
import os
import pickle
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator, PartialState
from accelerate.utils import ProjectConfiguration
from tqdm.auto import tqdm

from cdraw.conditioning import SentencePieceTokenizer, make_tokenizer
from cdraw.config import RUN_CONFIG, TrainConfig, flat_settings
from cdraw.data import ImageData, shard_batches
from cdraw.errors import CDrawError
from cdraw.evaluate import BoundSums, bound_sums
from cdraw.images import save_grid
from cdraw.io import TRAINING_RECORD, atomic_write, load_weights, model_source, read_record, unwritable_folder
from cdraw.model import DRAW, DRAWConfig, load_config

LOG_FIELDS = ("step", "epoch", "split", "loss", "recon", "kl", "lr", "images_per_s", "elapsed_s")
#: Offset of the seeds of validation and sample noise, so they never share the training stream.
EVAL_SEED_OFFSET = 10_000


class TrainingDiverged(CDrawError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclasses.dataclass
class TrainerState:
    """Where training stands; saved with every checkpoint."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_valid: float = math.inf
    elapsed_s: float = 0.0
    world_size: int = 1
    images_seen: int | None = 0  # over all processes; None: a checkpoint from before it was counted

    # registered with accelerate (Accelerator.register_for_checkpointing): saved by save_state
    def state_dict(self) -> dict[str, int | float]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, int | float]) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, state[field.name] if field.name != "images_seen" else state.get(field.name))


def lr_at(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based): a linear warm-up over
    ``warmup_steps``, then constant, or cosine decay to 0 at ``total_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        done = (step - cfg.warmup_steps) / max(total_steps - cfg.warmup_steps, 1)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
    return cfg.lr


def cpu_threads_per_process(local_processes: int = 1) -> int:
    """The CPU cores each of ``local_processes`` training processes on this machine can use
    (physical cores, within this process's CPU affinity)."""
    import psutil  # a dependency of accelerate

    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        cores = min(cores, len(os.sched_getaffinity(0)))
    return max(1, cores // max(1, local_processes))


def trackers(log_with: str) -> list[str]:
    """The accelerate trackers of ``--log-with`` (``all``: those installed); asking for wandb without it is
    a one-line error, and a broken TensorBoard install never stops training (log.csv is always written)."""
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    available = {"tensorboard": is_tensorboard_available(), "wandb": is_wandb_available()}
    if log_with == "none":
        return []
    if log_with == "all":
        return [name for name, ok in available.items() if ok]
    if log_with == "wandb" and not available["wandb"]:
        raise CDrawError("--log-with wandb: wandb is not installed (pip install wandb), or use tensorboard")
    return [log_with] if available[log_with] else []


def hyperparameters(cfg: TrainConfig) -> dict[str, int | float | str | bool]:
    """The run's settings as flat ``key: value`` pairs (``model.read_size``), as trackers record them."""
    scalar = int | float | str | bool
    return {k: v if isinstance(v, scalar) else str(v) for k, v in flat_settings(cfg.to_dict()).items()}


def warm_start(model: DRAW, source: DRAW) -> tuple[list[str], list[str]]:
    """Copy into ``model`` each of ``source``'s weights with the same name and shape (the text
    encoder's only when both use the same encoder and tokenizer: an adapter LSTM over MiniLM shares
    its names with a BiLSTM over words, not their meaning). Returns the names copied and the names left as
    they were."""

    def encoder(m: DRAW) -> tuple:  # kind, pretrained model, tokenizer pieces (an embedding row means a piece)
        cond, tokenizer = m.config.condition, getattr(m.condition, "tokenizer", None)
        return (cond and cond.kind, getattr(cond, "text_encoder", None), getattr(tokenizer, "proto", None))

    same_encoder = encoder(model) == encoder(source)
    theirs, mine = source.state_dict(), model.state_dict()
    copied = {
        name
        for name, w in mine.items()
        if name in theirs and theirs[name].shape == w.shape and (same_encoder or not name.startswith("condition."))
    }
    if not copied:
        raise CDrawError("--init-weights: the model shares no weight (name and shape) with this one")
    model.load_state_dict({name: theirs[name] for name in copied}, strict=False)  # through the modules' hooks
    return [n for n in mine if n in copied], [n for n in mine if n not in copied]


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter's bytes, to compare models across processes."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Trainer:
    """Trains a :class:`~cdraw.DRAW` on image tensors; ``Trainer(cfg, train, valid).fit()``."""

    def __init__(
        self,
        cfg: TrainConfig,
        train_data: ImageData,
        valid_data: ImageData,
        *,
        resume: bool = False,
        dataset: str | None = None,
        record: dict | None = None,
    ):
        self.cfg, self.dataset, self.record = cfg, dataset, record or {}
        self.out = Path(cfg.output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        self.acc = acc = Accelerator(
            cpu=not torch.cuda.is_available(),
            mixed_precision=cfg.mixed_precision,
            log_with=trackers(cfg.log_with) or None,
            project_config=ProjectConfiguration(project_dir=str(self.out), logging_dir=str(self.out / "tensorboard")),
        )
        if cfg.tf32 and acc.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        self.rank, self.world = acc.process_index, acc.num_processes
        self.main = acc.is_main_process
        threads, cores = torch.get_num_threads(), cpu_threads_per_process(int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
        if acc.device.type == "cpu" and threads < cores and self.main:
            tqdm.write(
                f"note: training on {threads} CPU thread(s) per process, where {cores} cores are free for each "
                f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '?')}): accelerate launch sets it to 1 unless "
                f"given --num_cpu_threads_per_process {cores} (--cpu does not change it); `cdraw train` uses every "
                "core unless OMP_NUM_THREADS is set"
            )
        elif acc.device.type == "cpu" and self.main:
            tqdm.write(f"training on {threads} CPU threads per process ({self.world} process(es))")
        # held until fit() ends (or this process does): a second run into the folder is refused
        new_folder = not self.out.exists()
        self._lock = lock_run_dir(self.out) if self.main else None
        try:
            self._setup(train_data, valid_data, resume)
        except BaseException:
            self._release()
            if new_folder and self.main and {p.name for p in self.out.iterdir()} <= {".lock"}:
                shutil.rmtree(self.out, ignore_errors=True)  # a start refused leaves no folder it made
            raise

    def _setup(self, train_data: ImageData, valid_data: ImageData, resume: bool) -> None:
        cfg, acc = self.cfg, self.acc
        source = DRAW.from_pretrained(cfg.init_weights) if cfg.init_weights and not resume else None  # read first
        check_output_dir(self.out, resume)

        torch.manual_seed(cfg.seed)  # the same initial weights on every process
        model = DRAW(cfg.model)
        if cfg.init_from_data and not resume:
            model.init_from_data(train_data.mean_image())
        # where the run started (--init-weights), for every training.json it writes: kept in the run
        # folder so that a resumed run still says it; a fresh run's own, never one an earlier start left
        self._started_from = (read_record(self.out, STARTED_FROM) or None) if resume else None
        if source is not None:
            copied, fresh = warm_start(model, source)
            training = read_record(source.folder)
            self._started_from = {
                "init_weights": model_source(cfg.init_weights),
                "tensors_copied": len(copied),
                "training": training,
            }
            if self.main:
                parts = ", ".join(sorted({name.split(".")[0] for name in fresh})) or "none"
                tqdm.write(
                    f"--init-weights: {len(copied)} tensors copied from {cfg.init_weights} (not copied: {parts})"
                )
        model.compile_step(cfg.compile, **({} if cfg.compile_mode == "default" else {"mode": cfg.compile_mode}))
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2))
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.state = TrainerState(world_size=self.world)
        acc.register_for_checkpointing(self.state)
        acc.register_save_state_pre_hook(self._save_model_hook)
        acc.register_load_state_pre_hook(self._load_model_hook)
        if resume:
            self._check_same_data()
            self._load_checkpoint()
            for group in self.optimizer.param_groups:  # the checkpoint's optimizer brought its own betas
                group["betas"] = (cfg.adam_beta1, cfg.adam_beta2)
            if self.main:
                self._say_changed_settings()
        else:
            torch.manual_seed(cfg.seed * 1_000 + self.rank + 1)  # each process its own noise

        self.train_data = train_data.to(acc.device)  # a batch is then one index on the device
        self.valid_data = valid_data.select(slice(0, cfg.valid_images)) if cfg.valid_images else valid_data
        self.steps_per_epoch = len(shard_batches(len(train_data), cfg.batch_size, 0, cfg.seed, 0, self.world))
        if self.steps_per_epoch == 0:
            raise CDrawError(
                f"the training set has {len(train_data)} images, fewer than one global batch "
                f"({cfg.batch_size} x {self.world} processes): lower --batch-size"
            )
        self.total_steps = min(cfg.max_steps or math.inf, cfg.epochs * self.steps_per_epoch)  # whichever first
        if resume and self.state.step >= self.total_steps:
            ends = f"--max-steps {cfg.max_steps}, --epochs {cfg.epochs} of {self.steps_per_epoch} steps"
            raise CDrawError(
                f"--resume: {self.out} is at step {self.state.step}, where it ends ({ends}): nothing to train; "
                "a larger --max-steps or --epochs continues it"
            )
        self.schedule_steps = self.total_steps  # where the cosine ends; --max-minutes re-estimates it
        self._clock_start: tuple[int, float] | None = None  # (step, seconds) at this run's first time check
        self._window = torch.zeros(4, device=acc.device)  # loss, recon, kl, non-finite-gradient steps
        self._window_images = 0
        self._window_start = time.perf_counter()
        self._batches_seen: list[list[int]] = []

    def _trained_on(self) -> dict:
        """What TRAINED_ON holds for this run, as JSON gives it back (tuples as lists): its data
        (DATA_KEYS) and the recipe's own settings of it (``--word-dropout``, ``--epoch-size`` ...)."""
        return json.loads(json.dumps({"dataset": self.dataset, **self.record}))

    def _say_changed_settings(self) -> None:
        """One warning naming each setting this resume changes from the run's own (its train_config.yaml):
        flags given with --resume change them, any other setting is the run's (the folder is the run's,
        however it was spelt)."""
        saved = self.out / RUN_CONFIG
        if not saved.is_file():
            return
        before, now = hyperparameters(TrainConfig.from_yaml(saved)), hyperparameters(self.cfg)
        changed = [f"{k} {before.get(k)} -> {v}" for k, v in now.items() if before.get(k) != v and k != "output_dir"]
        if changed:
            tqdm.write(f"warning: --resume changes the run's settings: {', '.join(changed)}")

    def _check_same_data(self) -> None:
        """--resume on other images (another --dataset, --source, data set seed or split) is refused: the
        run's records would name data it did not train on. A run from before this record is let through."""
        before, now = read_record(self.out, TRAINED_ON), self._trained_on()
        if not before:
            return
        changed = [f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in DATA_KEYS if before.get(k) != now.get(k)]
        if changed:
            raise CDrawError(
                f"--resume: {self.out} trained on other data ({', '.join(changed)}): resume with the run's own data "
                "flags, or start a new run (--init-weights continues from its model on new data)"
            )
        changed = [f"{k} {v!r} -> {now.get(k)!r}" for k, v in before.items() if k not in DATA_KEYS and now.get(k) != v]
        if changed and self.main:  # a recipe's own flags are not in train_config.yaml: given again or not, said
            tqdm.write(f"warning: --resume changes the recipe's settings: {', '.join(changed)}")

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file drops its lock
            self._lock = None

    # -- the loop ---------------------------------------------------------------------------

    def fit(self) -> dict[str, float]:
        """Train to ``max_steps`` or ``epochs``, whichever comes first; returns the final validation figures.

        A file that cannot be written (a full disk) stops training with one line that says which
        checkpoint is kept; no temporary file or folder is left behind."""
        try:
            return self._fit()
        except OSError as e:
            for tmp in self.ckpt_dir.glob(".step-*.tmp"):
                shutil.rmtree(tmp, ignore_errors=True)
            where = f" {e.filename}" if e.filename else ""
            raise CDrawError(f"cannot write{where}: {e.strerror or e}. {self._kept()}") from None
        finally:
            self._release()

    def _fit(self) -> dict[str, float]:
        cfg, acc, st = self.cfg, self.acc, self.state
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            # whole files only: on a resume, the other processes may still be reading them (_setup)
            records = {RUN_CONFIG: yaml.safe_dump(cfg.to_dict(), sort_keys=False)}
            records[TRAINED_ON] = json.dumps(self._trained_on(), indent=2)
            if self._started_from is not None:
                records[STARTED_FROM] = json.dumps(self._started_from, indent=2)
            for name, text in records.items():
                atomic_write(self.out / name, lambda tmp, text=text: Path(tmp).write_text(text))
            if self._started_from is None:
                (self.out / STARTED_FROM).unlink(missing_ok=True)
        if self.main:
            tqdm.write(f"training run folder: {self.out.resolve()}")
        # TensorBoard: out/tensorboard/cdraw/; wandb: project "cdraw", the run named after its folder
        acc.init_trackers(TRACKER_PROJECT, config=hyperparameters(cfg), init_kwargs={"wandb": {"name": self.out.name}})
        if cfg.compile and self.main:
            tqdm.write(
                "compiling the training step (torch.compile): the first step takes longer; --no-compile skips it"
            )
        bar = tqdm(total=self.total_steps, initial=st.step, disable=not self.main, desc="training", unit="step")
        self._run_start = time.perf_counter() - st.elapsed_s
        if cfg.max_minutes is not None and st.step and st.elapsed_s:  # resumed: place the cosine's end at once,
            self._end_schedule_in_time(st.step, st.elapsed_s, st.elapsed_s / st.step)  # by the speed so far
        valid, validated_at, stop = {}, -1, False
        while st.step < self.total_steps and not stop:
            if hasattr(self.train_data, "set_epoch"):  # examples made anew each epoch (FreshEachEpoch)
                self.train_data.set_epoch(st.epoch)
            batches = shard_batches(len(self.train_data), cfg.batch_size, st.epoch, cfg.seed, self.rank, self.world)
            if st.batch_in_epoch >= len(batches):  # only after resuming on a different number of processes
                st.epoch, st.batch_in_epoch = st.epoch + 1, 0
                continue
            # the epoch's indices on the device in one copy: no host-to-device copy (a sync) per step
            batches = torch.stack(batches).to(self.acc.device).unbind(0)
            for idx in batches[st.batch_in_epoch :]:
                self._train_step(idx)
                bar.update(1)
                epoch_done = st.batch_in_epoch == len(batches)
                if epoch_done:
                    st.epoch, st.batch_in_epoch = st.epoch + 1, 0
                if st.step % cfg.log_every == 0:
                    bar.set_postfix(self._flush_log())
                stop = st.step >= self.total_steps or self._out_of_time() or self._schedule_over()  # on every process
                if epoch_done:  # validate, sample, checkpoint
                    self._flush_log()
                    valid, validated_at = self._end_of_period(f"epoch-{st.epoch:03d}"), st.step
                elif st.step % cfg.checkpoint_every == 0 and not stop:  # a stop validates and saves below
                    self._flush_log()
                    self._save_checkpoint()
                if stop:
                    break
        bar.close()
        if validated_at != st.step:  # stopped mid-epoch (--max-steps): validate and save there too
            self._flush_log()
            valid = self._end_of_period(f"step-{st.step:08d}")
        if self.main:
            self._save_model(self.out / "model", valid)
            tqdm.write(
                f"model saved in {(self.out / 'model').resolve()} (the one with the best validation bound: "
                f"{self.out / 'best'}); "
                f"try: cdraw generate --checkpoint {self.out}"
            )
        if cfg.record_batches:
            audit = {"batches": self._batches_seen, "weights_sha256": weights_digest(self._unwrapped)}
            (self.out / f"audit_rank{self.rank}.json").write_text(json.dumps(audit))
        acc.wait_for_everyone()
        acc.end_training()  # closes the trackers
        return valid

    def _out_of_time(self) -> bool:
        """--max-minutes: checked at log intervals only (the same decision on every process).

        The cosine schedule then ends with the time budget: its length is re-estimated at every check
        from the speed since the first check (compilation excluded, validation included)."""
        if self.cfg.max_minutes is None or self.state.step % self.cfg.log_every:
            return False
        budget, step = 60 * self.cfg.max_minutes, self.state.step
        spent = torch.tensor([time.perf_counter() - self._run_start], device=self.acc.device)
        spent = self.acc.reduce(spent, "max").item()
        if self._clock_start is None:
            self._clock_start = (step, spent)
        elif step > self._clock_start[0]:
            self._end_schedule_in_time(step, spent, (spent - self._clock_start[1]) / (step - self._clock_start[0]))
        return spent >= budget

    def _schedule_over(self) -> bool:
        """--max-minutes with the cosine: its end, placed by the time budget, can come before the next
        time check; the steps after it would run at learning rate 0 and change nothing."""
        return self.cfg.lr_schedule == "cosine" and self.state.step >= self.schedule_steps

    def _end_schedule_in_time(self, step: int, spent: float, per_step: float) -> None:
        """Where the cosine ends: the step the time budget runs out at, ``per_step`` seconds a step."""
        in_time = step + int(max(60 * self.cfg.max_minutes - spent, 0.0) / max(per_step, 1e-9))
        self.schedule_steps = min(self.total_steps, in_time)

    def _train_step(self, idx: torch.Tensor) -> None:
        cfg, st = self.cfg, self.state
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(cfg, st.step, self.schedule_steps)
        x = self.train_data.batch(idx)  # (B, C, H, W) in [0, 1]
        out = self.model(x, self.train_data.condition(idx))  # condition: (B,) labels, (B, L) tokens, or None
        loss = out.loss.mean()  # nats per image
        self.acc.backward(loss)
        norm = self.acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        # a finite loss can still have NaN/Inf gradients (and so NaN weights): count those steps too
        bad_grad = torch.zeros_like(loss) if norm is None else (~torch.isfinite(norm)).to(loss.dtype)
        self._window += torch.stack([out.loss.sum(), out.recon.sum(), out.kl.sum(), bad_grad]).detach()
        self._window_images += len(idx)
        if cfg.record_batches:
            self._batches_seen.append(idx.tolist())
        st.step += 1
        st.batch_in_epoch += 1
        if st.images_seen is not None:
            st.images_seen += cfg.batch_size * self.world

    @property
    def _unwrapped(self) -> DRAW:
        return self.acc.unwrap_model(self.model)

    # -- logging and the finite-loss guard --------------------------------------------------

    def _flush_log(self) -> dict[str, str]:
        """Log the mean losses since the last call; stop if any step's loss was NaN or infinite.

        Every checkpoint is preceded by this check, so a checkpoint never holds a diverged model.
        """
        if self._window_images == 0:
            return {}
        sums = self.acc.reduce(torch.cat([self._window, self._window.new_tensor([self._window_images])]), "sum")
        loss, recon, kl, bad_grads, images = sums.tolist()
        now = time.perf_counter()
        speed = images / max(now - self._window_start, 1e-9)
        self._window.zero_()
        self._window_images, self._window_start = 0, now
        if not math.isfinite(loss) or bad_grads:
            what = f"the loss became {loss / images}" if not math.isfinite(loss) else "the gradients became NaN/Inf"
            raise TrainingDiverged(
                f"{what} at or before step {self.state.step}; training stopped. {self._kept(diverged=True)}"
            )
        self._log("train", loss / images, recon / images, kl / images, speed)
        return {"loss": f"{loss / images:.2f}", "img/s": f"{speed:.0f}"}

    def _log(self, split: str, loss: float, recon: float, kl: float, speed: float | None = None) -> None:
        if not self.main:
            return
        st = self.state
        row = {
            "step": st.step,
            "epoch": st.epoch,
            "split": split,
            "loss": f"{loss:.4f}",
            "recon": f"{recon:.4f}",
            "kl": f"{kl:.4f}",
            "lr": f"{self.optimizer.param_groups[0]['lr']:.3g}",
            "images_per_s": "" if speed is None else f"{speed:.1f}",
            "elapsed_s": f"{time.perf_counter() - self._run_start:.1f}",
        }
        path = self.out / "log.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            if new:
                w.writeheader()
            w.writerow(row)
        scalars = {f"{split}/bound": loss, f"{split}/recon": recon, f"{split}/kl": kl}
        if speed is not None:
            scalars[f"{split}/images_per_s"] = speed
        self.acc.log(scalars, step=st.step)  # TensorBoard (out/tensorboard), wandb: as --log-with says

    # -- validation, samples, checkpoints ---------------------------------------------------

    def _end_of_period(self, name: str) -> dict[str, float]:
        """Validation bound (exact mean over the split), a sample grid, a checkpoint, the best model."""
        st, model = self.state, self._unwrapped
        model.eval()  # measured and drawn as `cdraw eval` and `generate` do: training-only noise off
        try:
            valid = self._validate(name, model)
        finally:
            model.train()
        if valid["bound"] < st.best_valid:  # the same decision on every process: valid is all-reduced
            st.best_valid = valid["bound"]
            if self.main:
                self._save_model(self.out / "best", valid)
        self._save_checkpoint()
        return valid

    def _validate(self, name: str, model: DRAW) -> dict[str, float]:
        """The validation bound (all processes), logged, and a sample grid (main process)."""
        cfg, acc, st = self.cfg, self.acc, self.state
        gen = torch.Generator(acc.device).manual_seed(cfg.seed + EVAL_SEED_OFFSET + self.rank)
        shard = self.valid_data.select(slice(self.rank, None, self.world))
        sums = bound_sums(model, shard, cfg.eval_batch_size, gen)
        totals = acc.reduce(torch.tensor([sums.loss, sums.recon, sums.kl, sums.count], device=acc.device), "sum")
        valid = BoundSums(*totals.tolist()).means()
        if not math.isfinite(valid["bound"]):
            raise TrainingDiverged(
                f"the validation bound is {valid['bound']}; training stopped. {self._kept(diverged=True)}"
            )
        self._log("valid", valid["bound"], valid["recon"], valid["kl"])
        if self.main:
            tqdm.write(f"{name}: validation bound {valid['bound']:.2f} nats (step {st.step})")
            sample_gen = torch.Generator(acc.device).manual_seed(cfg.seed + EVAL_SEED_OFFSET)
            n = min(cfg.num_samples, len(self.valid_data))
            cond = self.valid_data.condition(slice(0, n))  # conditional: the first validation conditions
            save_grid(model.sample(n, cond, generator=sample_gen), self.out / "samples" / f"{name}.png")
        return valid

    def _save_model(self, folder: Path, valid: dict[str, float]) -> None:
        """The model, and ``training.json``: what it was trained on, how long, its validation bound."""
        try:
            self._write_model(folder, valid)
        except OSError as e:
            raise CDrawError(f"cannot write the model into {folder}: {e.strerror or e}. {self._kept()}") from None

    def _write_model(self, folder: Path, valid: dict[str, float]) -> None:
        st = self.state
        self._unwrapped.save_pretrained(folder, card=False)  # a card belongs to a model that is published
        record = {
            "dataset": self.dataset,
            "step": st.step,
            "epoch": st.epoch,
            "images_seen": st.images_seen,  # None: resumed from a checkpoint from before it was counted
            "training_s": round(time.perf_counter() - self._run_start, 1),
            "processes": self.world,
            "device": str(self.acc.device),
            "valid": valid,
            **self.record,
        }
        if self._started_from is not None:
            record["started_from"] = self._started_from
        atomic_write(folder / TRAINING_RECORD, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2)))

    def _save_checkpoint(self) -> None:
        try:
            self._write_checkpoint()
        except BaseException as e:  # a full disk, Ctrl-C: nothing half-written stays behind
            for tmp in self.ckpt_dir.glob(".step-*.tmp"):
                shutil.rmtree(tmp, ignore_errors=True)
            if not isinstance(e, OSError):
                raise
            raise CDrawError(
                f"cannot write a checkpoint into {self.ckpt_dir}: {e.strerror or e}. {self._kept()}"
            ) from None

    def _write_checkpoint(self) -> None:
        acc, st = self.acc, self.state
        name = f"step-{st.step:08d}"
        final, tmp = self.ckpt_dir / name, self.ckpt_dir / f".{name}.tmp"
        if final.exists():  # written before a crash that came before `latest` was updated
            if self.main:
                self._point_latest_at(name)
            acc.wait_for_everyone()
            return
        st.elapsed_s = time.perf_counter() - self._run_start
        if self.main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))  # model/, optimizer, every process's RNG state, the TrainerState
        acc.wait_for_everyone()
        if self.main:
            os.replace(tmp, final)
            self._point_latest_at(name)
            kept = sorted(p for p in self.ckpt_dir.glob("step-*") if p.is_dir())
            for old in kept[: -self.cfg.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    def _save_model_hook(self, models: list, weights: list, output_dir: str) -> None:
        """accelerate's save_state writes the model as a model folder (config, weights, tokenizer):
        a checkpoint's ``model/`` loads with ``DRAW.from_pretrained`` like any other."""
        if self.main:
            self._unwrapped.save_pretrained(Path(output_dir) / "model", card=False)
        weights.clear()  # written above, not again as accelerate's own model.safetensors

    def _load_model_hook(self, models: list, input_dir: str) -> None:
        self._load_model(Path(input_dir) / "model")
        models.clear()  # loaded above, not from accelerate's own model.safetensors

    def _load_model(self, folder: Path) -> None:
        """The weights of a checkpoint's model folder, into the model being trained."""
        if self._unwrapped._saved_apart() is None:
            self._unwrapped.load_checkpoint_state(load_weights(folder, self._unwrapped))
        else:  # a (possibly fine-tuned) text encoder lives in its own folder: load it from there too
            self._unwrapped.load_state_dict(DRAW.from_pretrained(folder).state_dict())

    def _point_latest_at(self, name: str) -> None:
        atomic_write(self.ckpt_dir / "latest", lambda tmp: Path(tmp).write_text(name))

    def _kept(self, diverged: bool = False) -> str:
        """What a stopped run still has, for its error message (and, when it diverged, what to change)."""
        latest = self.ckpt_dir / "latest"
        advice = "lower --lr or --grad-clip and " if diverged else "make room (or fix the cause) and "
        if not latest.is_file():
            return f"No checkpoint was written yet (nothing to resume): {advice}start again"
        name = latest.read_text().strip()
        return f"The last good checkpoint is {self.ckpt_dir / name}: {advice}continue it with --resume"

    def _load_checkpoint(self) -> None:
        path = latest_checkpoint(self.ckpt_dir)
        saved = load_config(path / "model")
        if _architecture(saved) != _architecture(self.cfg.model):
            raise CDrawError(
                f"--resume: {path} was trained with a different model config:\n{_config_diff(saved, self.cfg.model)}"
            )
        try:
            if (path / LEGACY_TRAINER_STATE).is_file():  # written by cdraw before checkpoints were save_state's
                has_rng = self._load_legacy_checkpoint(path)
            else:
                has_rng = check_checkpoint(path, self.rank)
                self.acc.load_state(str(path))
        except (OSError, RuntimeError, ValueError, TypeError, KeyError, AttributeError, pickle.UnpicklingError) as e:
            why = f"{_first_line(e)}); {_older(self.ckpt_dir)}"
            raise CDrawError(f"--resume: checkpoint {path} is damaged ({why}") from None
        if self.state.world_size != self.world or not has_rng:
            if self.main:
                why = (
                    f"was written by {self.state.world_size} processes, resuming on {self.world}"
                    if self.state.world_size != self.world
                    else "has no random-number state for this process"
                )
                tqdm.write(f"warning: {path} {why}: the run continues but is not step-for-step identical")
            torch.manual_seed(self.cfg.seed * 1_000 + self.rank + 1 + self.state.step)
            self.state.world_size = self.world
        if self.main:
            trim_log(self.out / "log.csv", self.state.step)  # rows logged after the checkpoint come again
            self._set_aside_checkpoints_after(path)
            tqdm.write(f"resumed from {path} (step {self.state.step}, epoch {self.state.epoch})")

    def _set_aside_checkpoints_after(self, path: Path) -> None:
        """Checkpoints later than the one resumed from (``latest`` pointed back at an older one, or a
        crash came before ``latest`` moved on) belong to the steps now trained again: moved into
        ``checkpoints/superseded/TIME-XXXX/``, never mixed with this run's (nor deleted)."""
        later = [p for p in self.ckpt_dir.glob("step-*") if CHECKPOINT_NAME.fullmatch(p.name) and p.name > path.name]
        later.sort()
        if not later:
            return
        try:
            (self.ckpt_dir / "superseded").mkdir(exist_ok=True)
            aside = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=self.ckpt_dir / "superseded"))
            for old in later:
                os.replace(old, aside / old.name)
        except OSError as e:  # those not moved yet are moved by the next --resume
            why = e.strerror or e
            raise CDrawError(f"--resume: cannot move the checkpoints after {path.name} aside: {why}") from None
        names = ", ".join(p.name for p in later)
        tqdm.write(f"warning: the checkpoints after {path.name} ({names}) were moved to {aside} (not this run's)")

    def _load_legacy_checkpoint(self, path: Path) -> bool:
        """A checkpoint of the earlier layout (model/, optimizer.pt, trainer_state.json,
        rng_rank{r}.pt), so a run started before the update resumes; every file read with
        ``weights_only=True``. True when this process's RNG state is there."""
        self._load_model(path / "model")
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
        self.state.load_state_dict(json.loads((path / LEGACY_TRAINER_STATE).read_text()))
        rng_file = path / f"rng_rank{self.rank}.pt"
        if not rng_file.is_file():
            return False
        rng = torch.load(rng_file, weights_only=True)
        if not isinstance(rng, dict) or "cpu" not in rng:
            raise ValueError(f"{rng_file.name} holds no RNG state")
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"], self.acc.device)
        return True


#: the trainer's state in a checkpoint of the earlier layout (before accelerate's save_state)
LEGACY_TRAINER_STATE = "trainer_state.json"


def check_checkpoint(path: Path, rank: int) -> bool:
    """Check what ``Accelerator.load_state`` reads leniently; True when ``rank``'s RNG state is there.

    load_state unpickles registered objects with ``weights_only=False`` and silently skips an RNG
    state it cannot read: here both are read with ``weights_only=True`` first (numpy's RNG state
    allowed), so a damaged or foreign file is an error, not a quietly different run."""
    from accelerate.utils.other import load as accelerate_load  # weights_only=True, numpy RNG allowed

    state = torch.load(path / "custom_checkpoint_0.pkl", map_location="cpu", weights_only=True)
    missing = [f.name for f in dataclasses.fields(TrainerState) if f.name not in state]
    if missing:
        raise ValueError(f"custom_checkpoint_0.pkl lacks {', '.join(missing)}")
    rng_file = path / f"random_states_{rank}.pkl"
    if not rng_file.is_file():
        return False
    rng = accelerate_load(rng_file, map_location="cpu")
    if not isinstance(rng, dict) or "torch_manual_seed" not in rng:
        raise ValueError(f"{rng_file.name} holds no RNG state")
    return True


def lock_run_dir(out: Path):
    """An exclusive lock on ``out/.lock`` for this process's life: a second run into the same
    folder is refused. The operating system drops the lock when the process ends, however it ends,
    so a crashed run never blocks its ``--resume``. None where file locks are not available."""
    try:
        import fcntl
    except ImportError:  # not on this platform
        return None
    try:
        out.mkdir(parents=True, exist_ok=True)
        f = open(out / ".lock", "a+")  # noqa: SIM115 (held open on purpose)
    except OSError as e:
        raise unwritable_folder(out, e, "--output-dir") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):  # a file system without locks
            f.close()
            return None
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise CDrawError(
            f"another training run (process {pid}) is writing to {out}: wait for it, or choose another --output-dir"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def latest_checkpoint(ckpt_dir: Path) -> Path:
    """The checkpoint folder ``ckpt_dir/latest`` names: a ``step-NNNNNNNN`` folder inside ``ckpt_dir``."""
    latest = ckpt_dir / "latest"
    try:
        name = latest.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise CDrawError(f"--resume: cannot read {latest} ({_first_line(e)}); {_older(ckpt_dir)}") from None
    if not name:
        raise CDrawError(f"--resume: {latest} is empty; {_older(ckpt_dir)}")
    if not CHECKPOINT_NAME.fullmatch(name):
        raise CDrawError(
            f"--resume: {latest} names {name!r}, not a checkpoint of this run (step-NNNNNNNN in {ckpt_dir}); "
            f"{_older(ckpt_dir)}"
        )
    path = ckpt_dir / name
    if not path.is_dir() or path.is_symlink():
        raise CDrawError(f"--resume: {latest} names {name}, which is not a folder in {ckpt_dir}; {_older(ckpt_dir)}")
    return path


CHECKPOINT_NAME = re.compile(r"step-\d{8}")


def _older(ckpt_dir: Path) -> str:
    found = sorted(p.name for p in ckpt_dir.glob("step-*") if p.is_dir() and CHECKPOINT_NAME.fullmatch(p.name))
    have = f"checkpoints there: {', '.join(found)}" if found else "there is no other checkpoint"
    return f"write the name of an intact one into {ckpt_dir / 'latest'} ({have})"


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def trim_log(path: Path, step: int) -> None:
    """Drop the rows of ``log.csv`` logged after ``step`` (a resumed run logs them again)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) <= step]
    if len(kept) == len(rows):
        return

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            w.writeheader()
            w.writerows(kept)

    atomic_write(path, write)


def check_output_dir(out: Path, resume: bool) -> None:
    """A new run never writes into an existing one; ``resume`` needs a checkpoint to resume from."""
    ckpt_dir = Path(out) / "checkpoints"
    has_checkpoint = (ckpt_dir / "latest").is_file()
    if resume and not has_checkpoint:
        raise CDrawError(f"--resume: no checkpoint in {ckpt_dir}; start without --resume")
    outputs = [n for n in RUN_OUTPUTS if (Path(out) / n).exists()]
    if not resume and outputs:
        how = "pass --resume to continue it, or" if has_checkpoint else "it has no checkpoint to resume from:"
        raise CDrawError(
            f"{out} already holds a training run ({', '.join(outputs)}): {how} "
            "choose another --output-dir (nothing was overwritten)"
        )


#: What a training run writes into its folder: any of them means the folder holds a run.
RUN_OUTPUTS = ("checkpoints", "model", "best", "log.csv", "samples", "tensorboard")
#: With --init-weights: the source model (its name, its training.json), in the run folder.
STARTED_FROM = "started_from.json"
TRACKER_PROJECT = "cdraw"  # wandb's project; TensorBoard's subfolder of out/tensorboard
#: Which images the run trains on (DATA_KEYS: --resume keeps them) and its recipe's own settings of
#: them (--word-dropout ...: --resume takes them back, see recipe_settings), in the run folder.
TRAINED_ON = "trained_on.json"
DATA_KEYS = ("dataset", "source", "data_seed", "bans", "train_split")


#: what a saved condition config says of its files rather than its shape: where its tokenizer or
#: text model is (a checkpoint points at its own copies) and the trained tokenizer's real vocabulary
_FROM_FILES = ("tokenizer", "text_encoder", "vocab_size")


def _architecture(cfg: DRAWConfig) -> dict:
    """The config as a dict, without what its encoder's files decide (see _FROM_FILES)."""
    d = cfg.to_dict()
    if d["condition"] is not None:
        d["condition"] = {k: v for k, v in d["condition"].items() if k not in _FROM_FILES}
    return d


def _config_diff(a: DRAWConfig, b: DRAWConfig) -> str:
    da, db = _architecture(a), _architecture(b)
    return "\n".join(f"  {k}: checkpoint {da[k]!r}, now {db[k]!r}" for k in da if da[k] != db[k])


def recipe_settings(output_dir: str | os.PathLike) -> dict:
    """What a run in ``output_dir`` recorded of its data and its recipe's own flags (its trained_on.json):
    a recipe takes those it is not given again on ``--resume`` from here (they are not TrainConfig's)."""
    return read_record(Path(output_dir).expanduser(), TRAINED_ON)


def condition_tokenizer(cfg: TrainConfig, conditions: Sequence, *, resume: bool = False):
    """The tokenizer of ``cfg.model``'s condition encoder.

    A BiLSTM caption model without a tokenizer yet gets one first: SentencePiece trained on
    ``conditions`` (the training captions), saved in ``output_dir/tokenizer`` (the first process
    of each machine trains it, the others wait and read it; ``resume`` reuses the one already
    there, a new run replaces it).
    """
    cond = cfg.model.condition
    if cond is None:
        raise CDrawError("this config has no condition encoder (model.condition); use an unconditional recipe")
    if cond.kind == "bilstm" and cond.tokenizer is None:
        check_output_dir(Path(cfg.output_dir), resume)  # before touching an existing run's tokenizer
        folder = Path(cfg.output_dir) / "tokenizer"
        state = PartialState()
        with state.local_main_process_first():
            have = (folder / SentencePieceTokenizer.MODEL_FILE).is_file()
            if state.is_local_main_process and not (resume and have):
                SentencePieceTokenizer.train(list(conditions), cond.vocab_size, cond.max_length).save(folder)
        cond.tokenizer = str(folder.resolve())
    return make_tokenizer(cond)


def conditioned_data(
    cfg: TrainConfig,
    images: torch.Tensor,
    levels: int,
    conditions: Sequence,
    image_index: torch.Tensor | None = None,
    *,
    resume: bool = False,
) -> ImageData:
    """Images with their labels or captions, encoded by the tokenizer of ``cfg.model``'s encoder
    (:func:`condition_tokenizer`: call this on the training split first)."""
    tokenizer = condition_tokenizer(cfg, conditions, resume=resume)
    ids = tokenizer.encode(list(conditions) if not torch.is_tensor(conditions) else conditions)
    return ImageData(images, levels, ids, image_index)


def train(
    cfg: TrainConfig,
    train_data: ImageData,
    valid_data: ImageData,
    *,
    resume: bool = False,
    dataset: str | None = None,
    record: dict | None = None,
) -> dict[str, float]:
    """Train with the one loop; returns the final validation figures (bound, recon, kl in nats).

    ``dataset``: the data set's name (as `cdraw eval --data` knows it) and ``record``: more facts
    about the data (e.g. which file it came from), both kept in the model's ``training.json``.
    """
    return Trainer(cfg, train_data, valid_data, resume=resume, dataset=dataset, record=record).fit()
