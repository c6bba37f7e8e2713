"""Named LoRA adapters (peft) on the language model of a Qwen2.5-VL, each with its own optimizer state.

The base weights are frozen and never written. Each adapter is a separate set of `lora_A` / `lora_B`
matrices (scale alpha / r) on the language model's projections only; the vision tower is untouched.
Adapters are saved and loaded in peft's own format (adapter_config.json + adapter_model.safetensors), plus
the adapter's AdamW state in optimizer.safetensors, so that online learning resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import pickle
import re
import shutil
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError

from jaxmodels.io import atomic_directory

LM_PREFIX = "model.language_model."
OPTIMIZER_FILE = "optimizer.safetensors"  # next to peft's files; peft ignores it
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


@contextlib.contextmanager
def _quiet_peft():
    """peft 0.21 reads a transformers 5 property that is being renamed; the warning is not the user's business."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


class AdapterFileError(ValueError):
    """Adapter weights that cannot be read: a damaged safetensors file, or a pickle torch refuses to unpickle."""


class UnknownAdapterError(KeyError):
    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def check_name(name) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"adapter name {name!r}: expected letters, digits, '_' or '-', not starting with a digit")
    if hasattr(torch.nn.ModuleDict(), name):  # peft keys a ModuleDict by adapter name
        raise ValueError(f"adapter name {name!r} clashes with an attribute of torch.nn.Module "
                         f"(e.g. half, float, train, forward); choose another name")


def target_regex(targets: tuple[str, ...]) -> str:
    """peft full-matches this against module names: the decoder layers' projections, nothing in model.visual."""
    return rf"model\.language_model\.layers\.\d+\.(self_attn|mlp)\.({'|'.join(map(re.escape, targets))})"


class AdapterBank:
    """Owns the peft wrapping of `model` (created with the first adapter) and one AdamW per adapter."""

    def __init__(self, model: torch.nn.Module, *, rank: int, alpha: float, targets=DEFAULT_TARGETS):
        self.model = model
        self.rank, self.alpha, self.targets = int(rank), float(alpha), tuple(targets)
        self.peft = None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    @property
    def names(self) -> list[str]:
        return sorted(self.peft.peft_config) if self.peft is not None else []

    def check(self, name: str) -> None:
        if name not in self.names:
            raise UnknownAdapterError(f"unknown LoRA adapter {name!r}; known adapters: {self.names or 'none'} "
                                      "(create one with learn(..., lora_adapter=name) or load_adapter(path, name))")

    def _config(self):
        from peft import LoraConfig

        if self.rank <= 0:
            raise ValueError(f"lora_rank={self.rank}: LoRA is disabled, so there is nothing to learn; construct the "
                             "runner with lora_rank > 0 (the base weights are never trained)")
        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=0.0, bias="none",
                          target_modules=target_regex(self.targets))

    def create(self, name: str) -> None:
        check_name(name)
        if self.peft is None:
            from peft import get_peft_model

            with _quiet_peft():
                self.peft = get_peft_model(self.model, self._config(), adapter_name=name)
        else:
            self.peft.add_adapter(name, self._config())
        self._check_placement(name)

    def delete(self, name: str) -> None:
        self.check(name)
        self.optimizers.pop(name, None)
        if len(self.names) == 1:
            # peft cannot delete its last adapter: unwrap instead, restoring the plain modules.
            self.peft.unload()
            self.peft = None
        else:
            if self.peft.active_adapter == name:
                self.peft.set_adapter(next(n for n in self.names if n != name))
            self.peft.delete_adapter(name)

    def params(self, name: str) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if f".{name}." in n and ".lora_" in n}

    def _check_placement(self, name: str) -> None:
        params = self.params(name)
        outside = sorted(n for n in params if not n.startswith(LM_PREFIX))
        if not params or outside:
            problem = f"it adds parameters outside the language model, e.g. {outside[:2]}" if outside else \
                "it matches no module of the language model"
            self.delete(name)
            raise ValueError(f"LoRA adapter {name!r} refused: {problem}; adapters must target "
                             f"{LM_PREFIX}layers.*.(self_attn|mlp).* projections only")

    @contextlib.contextmanager
    def active(self, name: str | None):
        """Runs the block with exactly this adapter active, or with every adapter disabled (name None)."""
        if name is None:
            with self.peft.disable_adapter() if self.peft is not None else contextlib.nullcontext():
                yield
            return
        self.check(name)
        self.peft.set_adapter(name, inference_mode=True)
        yield

    def optimizer(self, name: str, lr: float) -> torch.optim.Optimizer:
        params = self.params(name)
        for p in self.model.parameters():
            p.requires_grad_(False)
        for p in params.values():
            p.requires_grad_(True)
        if name not in self.optimizers:
            self.optimizers[name] = torch.optim.AdamW(list(params.values()), lr=lr, weight_decay=0.0)
        opt = self.optimizers[name]
        for group in opt.param_groups:
            group["lr"] = lr
        return opt

    def snapshot(self, name: str) -> tuple[dict[str, torch.Tensor], dict | None]:
        weights = {n: p.detach().clone() for n, p in self.params(name).items()}
        opt = self.optimizers.get(name)
        return weights, copy.deepcopy(opt.state_dict()) if opt is not None else None

    @torch.no_grad()
    def restore(self, name: str, snap: tuple[dict[str, torch.Tensor], dict | None]) -> None:
        weights, opt_state = snap
        for n, p in self.params(name).items():
            p.copy_(weights[n])
            p.grad = None
        if opt_state is None:
            self.optimizers.pop(name, None)
        else:
            self.optimizers[name].load_state_dict(opt_state)

    def save(self, name: str, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Writes the adapter in peft's format (adapter_config.json, adapter_model.safetensors), atomically;
        an existing `path` needs overwrite=True and is replaced only once the new adapter is complete."""
        self.check(name)
        path = Path(path)
        with atomic_directory(path, overwrite=overwrite) as out:
            staging = out / ".peft"
            self.peft.save_pretrained(str(staging), selected_adapters=[name])
            # peft nests a non-default adapter in a folder of its name, beside a model card: keep only the adapter
            written = staging if name == "default" else staging / name
            for item in list(written.iterdir()):
                item.rename(out / item.name)
            shutil.rmtree(staging)
            self._save_optimizer(name, out / OPTIMIZER_FILE)
        return path

    def load(self, path: str | os.PathLike, name: str) -> None:
        path = Path(path)
        config_file = path / "adapter_config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{path} has no adapter_config.json; expected a directory written by "
                                    "save_adapter / peft's save_pretrained")
        kind = json.loads(config_file.read_text()).get("peft_type")
        if kind != "LORA":
            raise ValueError(f"{config_file}: peft_type is {kind!r}, expected 'LORA'")
        if name in self.names:
            raise ValueError(f"adapter {name!r} already exists; delete it first or load under another name")
        check_name(name)
        try:
            self._load_weights(path, name)
        except (SafetensorError, pickle.UnpicklingError, EOFError) as e:  # from safetensors, or torch.load
            first = " ".join(str(e).split())[:240]  # torch's weights_only refusal runs to a page
            raise AdapterFileError(f"{path}: the adapter's weights cannot be read ({type(e).__name__}: {first}); "
                                   f"expected adapter_model.safetensors as save_adapter / peft write it") from None
        self._check_placement(name)
        if (path / OPTIMIZER_FILE).is_file():
            try:
                self._load_optimizer(name, path / OPTIMIZER_FILE)
            except BaseException:
                self.delete(name)
                raise

    def _load_weights(self, path: Path, name: str) -> None:
        if self.peft is None:
            from peft import PeftModel

            with _quiet_peft():
                self.peft = PeftModel.from_pretrained(self.model, str(path), adapter_name=name, is_trainable=False)
        else:
            self.peft.load_adapter(str(path), adapter_name=name, is_trainable=False)

    def _state_key(self, name: str, param_name: str) -> str:
        return param_name.replace(f".{name}.", ".")  # adapter-name free, so it loads under any name

    def _save_optimizer(self, name: str, file: Path) -> None:
        from safetensors.torch import save_file

        opt = self.optimizers.get(name)
        if opt is None:
            return
        names = list(self.params(name))  # the optimizer was built over these, in this order
        state = opt.state_dict()
        tensors = {f"{self._state_key(name, names[i])}::{k}": torch.as_tensor(v).detach().cpu().contiguous()
                   for i, entry in state["state"].items() for k, v in entry.items()}
        groups = [{k: v for k, v in g.items() if k != "params"} for g in state["param_groups"]]
        save_file(tensors, str(file), metadata={"param_groups": json.dumps(groups), "optimizer": "AdamW"})

    def _load_optimizer(self, name: str, file: Path) -> None:
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as f:
            groups = json.loads(f.metadata()["param_groups"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        names = list(self.params(name))
        keys = [self._state_key(name, n) for n in names]
        saved = {k.split("::")[0] for k in tensors}
        if not saved <= set(keys):
            raise ValueError(f"{file}: optimizer state for {sorted(saved - set(keys))[:2]}, which adapter {name!r} "
                             f"does not have (it has e.g. {keys[:2]})")
        state = {i: {k.split("::")[1]: v for k, v in tensors.items() if k.split("::")[0] == key}
                 for i, key in enumerate(keys) if key in saved}
        opt = self.optimizer(name, lr=groups[0]["lr"])
        for p in self.model.parameters():
            p.requires_grad_(False)
        opt.load_state_dict({"state": state, "param_groups": [dict(g, params=list(range(len(names))))
                                                              for g in groups]})
