"""Checkpoints: everything in safetensors, one folder per checkpoint.

A checkpoint folder (a run keeps ``last/`` and ``best/``) holds:

- ``model.safetensors``: the weights, with the instkit metadata under the ``"instkit"`` key (JSON):
  ``format``, ``kind``, ``model_config`` (rebuilds the architecture), ``categories`` (COCO
  category list: the label map, label i = entry i), ``train_config``, ``state`` (``epoch``,
  ``step``, ``batch_in_epoch``, ``best_metric``, ``best_epoch``, ``bad_epochs``) and
  ``pretrained`` (where the initial weights came from).
- ``training_state.safetensors``: the optimizer state (its tensors, e.g. SGD momentum or AdamW
  moments, as ``optimizer.<param>.<key>``), the torch RNG state, and under ``"instkit_training"``
  the JSON parts: optimizer ``param_groups`` and scalar state, scheduler and AMP scaler state.
- ``config.json``: the same metadata, readable.

With an EMA of the weights (``TrainConfig.ema``), ``model.safetensors`` holds the averaged
weights (the ones evaluated, and what ``eval`` / ``predict`` load), its metadata says so under
``ema`` (decay, tau, updates), and a checkpoint with training state adds
``training_weights.safetensors``: the raw weights the optimizer steps, for ``--resume``.

A folder is written beside its final place (``.NAME.tmp-PID``) and swapped in with one atomic
exchange (Linux ``renameat2``), so ``last/`` is always the old or the new checkpoint, complete.
Where the exchange is not available the old folder is first renamed aside (``.NAME.old-PID``);
a crash between the two renames leaves it there, and readers (``--resume``) use it while the next
save puts it back. Folders of these names left by a process that no longer runs are removed by the
next save to the same place.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import torch

from instkit.categories import Categories
from instkit.errors import FormatError, InstkitError, Location
from instkit.models import ModelAdapter, adapter_from_config

FORMAT = "instkit-checkpoint/1"
MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.safetensors"
RAW_FILE = "training_weights.safetensors"


def unwrap(model: Any) -> Any:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return getattr(model, "module", model)


def _json(value: Any) -> str:
    return json.dumps(value, default=str, allow_nan=True)


def save_checkpoint(
    directory: str | os.PathLike[str],
    adapter: ModelAdapter,
    *,
    state: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
    ema: Any = None,
) -> Path:
    """Write ``adapter``'s weights and, when given, the optimizer/scheduler/scaler state;
    with ``ema`` (an ``instkit.engine.ema.ModelEMA``) its averaged weights as the model's."""
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    _recover(target)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write_folder(tmp, adapter, state=state, train_config=train_config, optimizer=optimizer,
                      scheduler=scheduler, scaler=scaler, ema=ema)
        _install(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


_AUX = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)")


def _aux_folders(target: Path) -> list[tuple[Path, str, int]]:
    """``(path, "tmp" | "old", pid)`` of the folders save_checkpoint makes beside ``target``."""
    found = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return []
    for entry in entries:
        match = _AUX.fullmatch(entry.name)
        if match and match["name"] == target.name and entry.is_dir(follow_symlinks=False):
            found.append((Path(entry.path), match["kind"], int(match["pid"])))
    return found


def _writer_gone(pid: int) -> bool:
    from instkit.io.files import _pid_alive

    return pid != os.getpid() and not _pid_alive(pid)


def _recover(target: Path) -> None:
    """Put back an old checkpoint that a crash between two renames left aside, and remove the
    folders of writers that no longer run."""
    for path, kind, pid in sorted(_aux_folders(target), key=lambda t: t[0].name):
        if not _writer_gone(pid):
            continue
        if kind == "old" and not target.exists() and (path / MODEL_FILE).is_file():
            os.replace(path, target)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _install(tmp: Path, target: Path) -> None:
    """Move the complete folder ``tmp`` to ``target``; an existing ``target`` is never missing."""
    if not target.exists():
        os.replace(tmp, target)
        return
    if _exchange(tmp, target):
        shutil.rmtree(tmp, ignore_errors=True)  # now the previous checkpoint
        return
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def _write_folder(tmp: Path, adapter: ModelAdapter, *, state: dict[str, Any] | None,
                  train_config: dict[str, Any] | None, optimizer: Any, scheduler: Any,
                  scaler: Any, ema: Any = None) -> None:
    from safetensors.torch import save_file, save_model

    from instkit import __version__

    meta = {
        "format": FORMAT,
        "instkit_version": __version__,
        "kind": adapter.kind,
        "model_config": adapter.config,
        "categories": adapter.categories.to_coco(),
        "train_config": train_config or {},
        "state": state or {},
        "pretrained": adapter.pretrained,
    }
    if ema is not None:
        meta["ema"] = ema.state()
    weights = ema.module if ema is not None else unwrap(adapter.model)
    save_model(weights, str(tmp / MODEL_FILE), metadata={"instkit": _json(meta)})
    if ema is not None and optimizer is not None:
        save_model(unwrap(adapter.model), str(tmp / RAW_FILE))
    (tmp / "config.json").write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    if optimizer is not None:
        tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, rng in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = rng
        opt_state = optimizer.state_dict()
        scalars: dict[str, Any] = {}
        for pid, entries in opt_state["state"].items():
            for key, value in entries.items():
                if torch.is_tensor(value):
                    tensors[f"optimizer.{pid}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars[f"{pid}.{key}"] = value
        training = {
            "param_groups": opt_state["param_groups"],
            "scalars": scalars,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
        }
        save_file(tensors, str(tmp / STATE_FILE), metadata={"instkit_training": _json(training)})
    # safetensors creates its files 0600; give them what the umask gives any new file (the
    # folder was made with mkdir's 0777 less the umask).
    file_mode = stat.S_IMODE(tmp.stat().st_mode) & 0o666
    for item in tmp.iterdir():
        os.chmod(item, file_mode)


def _checkpoint_at(folder: Path) -> Path | None:
    """``folder`` if it holds a checkpoint; else the old one that a save interrupted between its
    two renames left beside it."""
    if (folder / MODEL_FILE).is_file():
        return folder
    if not folder.exists():
        for aside, kind, _ in sorted(_aux_folders(folder), key=lambda t: t[0].name):
            if kind == "old" and (aside / MODEL_FILE).is_file():
                return aside
    return None


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint folder from a checkpoint folder or a run folder (``best/``, else ``last/``)."""
    base = Path(path)
    found = _checkpoint_at(base)
    if found is not None:
        return found
    for name in ("best", "last"):
        found = _checkpoint_at(base / name)
        if found is not None:
            return found
    if not base.exists():
        raise InstkitError("model folder not found", Location(file=str(base)))
    raise InstkitError(f"no checkpoint here: expected {MODEL_FILE}, or a best/ or last/ folder "
                       "holding one (a run folder of `instkit train`)", Location(file=str(base)))


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The instkit metadata of a checkpoint (folder or run folder)."""
    from safetensors import safe_open

    folder = resolve_checkpoint(path)
    file = folder / MODEL_FILE
    try:
        with safe_open(str(file), framework="pt") as handle:
            raw = (handle.metadata() or {}).get("instkit")
    except Exception as exc:  # noqa: BLE001 - a damaged file is one user error
        raise FormatError(f"checkpoint cannot be read: {exc}", Location(file=str(file))) from None
    if raw is None:
        raise FormatError("not an instkit checkpoint (no 'instkit' metadata)",
                          Location(file=str(file)))
    meta = json.loads(raw)
    if meta.get("format") != FORMAT:
        raise FormatError(f"unsupported checkpoint format {meta.get('format')!r}",
                          Location(file=str(file)))
    meta["path"] = str(folder)
    return meta


def load_adapter(path: str | os.PathLike[str], device: str = "cpu") -> tuple[ModelAdapter, dict[str, Any]]:
    """Rebuild the model stored at ``path`` (checkpoint or run folder) with its weights."""
    meta = read_metadata(path)
    categories = Categories.from_coco(meta["categories"])
    adapter = adapter_from_config(meta["model_config"], categories)
    load_weights(adapter, meta["path"], device=device)
    adapter.pretrained = meta["path"]
    return adapter, meta


def load_weights(adapter: ModelAdapter, path: str | os.PathLike[str], device: str = "cpu") -> None:
    """Load a checkpoint's weights into ``adapter`` (same kind, classes and architecture)."""
    from safetensors.torch import load_model

    meta = read_metadata(path)
    if meta["kind"] != adapter.kind:
        raise InstkitError(f"checkpoint holds a {meta['kind']} model, not {adapter.kind}",
                           Location(file=meta["path"]))
    if Categories.from_coco(meta["categories"]) != adapter.categories:
        raise InstkitError("checkpoint was trained on other categories than this model's",
                           Location(file=meta["path"]))
    file = Path(meta["path"]) / MODEL_FILE
    try:
        load_model(unwrap(adapter.model), str(file), strict=True, device=device)
    except RuntimeError as exc:
        raise InstkitError(f"checkpoint weights do not fit this architecture: {exc}",
                           Location(file=str(file))) from None


def load_training_weights(path: str | os.PathLike[str], model: Any, device: str = "cpu") -> bool:
    """Load the raw training weights that a checkpoint saved beside its EMA weights into
    ``model``; False (nothing loaded) where it has none (a run without EMA)."""
    from safetensors.torch import load_model

    meta = read_metadata(path)
    file = Path(meta["path"]) / RAW_FILE
    if not file.is_file():
        return False
    try:
        load_model(unwrap(model), str(file), strict=True, device=device)
    except RuntimeError as exc:
        raise InstkitError(f"checkpoint training weights do not fit this architecture: {exc}",
                           Location(file=str(file))) from None
    return True


def restore_training(path: str | os.PathLike[str], *, optimizer: Any, scheduler: Any = None,
                     scaler: Any = None) -> dict[str, Any]:
    """Restore optimizer, scheduler, scaler and RNG state; returns the checkpoint's ``state``."""
    from safetensors import safe_open

    meta = read_metadata(path)
    file = Path(meta["path"]) / STATE_FILE
    if not file.is_file():
        raise InstkitError("checkpoint has no training state to resume from",
                           Location(file=str(file)))
    with safe_open(str(file), framework="pt") as handle:
        training = json.loads((handle.metadata() or {})["instkit_training"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in training["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": training["param_groups"]})
    if scheduler is not None and training.get("scheduler") is not None:
        scheduler.load_state_dict(training["scheduler"])
    if scaler is not None and training.get("scaler") is not None:
        scaler.load_state_dict(training["scaler"])
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    return dict(meta["state"])
