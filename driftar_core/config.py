"""Run configuration: pydantic v2 models with ``extra="forbid"``, the one place defaults live.

A run config is built from (lowest to highest priority): these defaults, a recipe TOML file, a
``--config`` file, and ``--set a.b=value`` overrides. Validation happens before any work starts and
errors name the key and the allowed values. The model's own config (widths, head, sampling
defaults) belongs to its backbone plugin; ``model.args`` here holds overrides of it.
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from driftar_core.files import read_json_object

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(ValueError):
    """A bad configuration key or value; the message names the key and what is allowed."""


class Strict(BaseModel):
    # allow_inf_nan=False: NaN / inf in any float field is a validation error, never a silent black image
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# -------------------------------------------------------------------------------------------------
# Sections
# -------------------------------------------------------------------------------------------------


class SamplingConfig(Strict):
    """Sampling defaults of a model; lives inside each backbone's model config (saved with it)."""

    num_iter: int = Field(16, ge=1)             # AR steps (MAR: K; 64 tokens in the tiny config)
    cfg: float = Field(1.0, ge=0)               # classifier-free guidance scale (1 = off, 0 = unconditional)
    cfg_schedule: Literal["linear", "constant"] = "linear"  # MAR's linear ramp by tokens known
    temperature: float = Field(1.0, gt=0)       # MAR: multiplies the per-step noise of the head


def with_defaults(value: object, defaults: BaseModel) -> object:
    """A partial override of a sub-section keeps the model's own defaults of that section.

    ``{"temperature": 1.2}`` for ``sampling`` keeps the model's cfg and num_iter, not SamplingConfig's
    generic ones; nested sections merge the same way. A nested section whose ``kind`` changes (a
    window draft instead of a layer draft) starts from that kind's own defaults. For a
    ``field_validator(mode="before")`` of the model config.
    """
    if isinstance(value, dict):
        return _merge_kinds(defaults.model_dump(), value)
    return value


def _merge_kinds(base: Any, update: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(base, dict) or ("kind" in update and base.get("kind", update["kind"]) != update["kind"]):
        return copy.deepcopy(update)
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = _merge_kinds(out.get(key), value) if isinstance(value, dict) else copy.deepcopy(value)
    return out


class ModelConfig(Strict):
    """Base of a backbone's model config (the one place its defaults live).

    A partial dict for a sub-section keeps that section's defaults as this model declares them
    (``sampling={"temperature": 1.2}`` keeps the model's cfg; ``drift_ar={"speculative": ...}`` keeps its
    decoder width), not the sub-model class's generic ones: every field whose default is a factory of a
    pydantic model merges that way (``with_defaults``). ``migrate`` reads configs saved by earlier
    releases; it runs first.
    """

    @classmethod
    def migrate(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Override to move or rename keys of configs saved by earlier releases; the default keeps data."""
        return data

    @model_validator(mode="before")
    @classmethod
    def _keep_section_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = cls.migrate(dict(data))
        for name, field in cls.model_fields.items():
            if isinstance(data.get(name), dict) and field.default_factory is not None:
                default = field.default_factory()
                if isinstance(default, BaseModel):
                    data[name] = with_defaults(data[name], default)
        return data


class ModelSection(Strict):
    arch: str = "mar_tiny"                      # registry name (``driftar_core.list_models()``)
    args: dict[str, Any] = Field(default_factory=dict)  # overrides of the backbone's config model
    init_from: str | None = None                # run dir / bundle dir / zoo name to start from


class DataSection(Strict):
    dataset: str = "digits"                     # registry name (``driftar plugins`` lists them)
    root: str | None = None                     # ImageFolder root for user data
    image_size: int = Field(16, ge=1)           # digits are 8x8, upsampled bilinearly (driftar_core/data/digits.py)
    batch_size: int = Field(64, ge=1)           # per process
    num_workers: int = Field(0, ge=0)           # the digits fit in memory; workers only cost start-up


class OptimSection(Strict):
    lr: float = Field(1e-3, gt=0)               # tiny models on CPU; MAR's blr 1e-4 x bs/256 is for ImageNet
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.95)  # AdamW (MAR)
    weight_decay: float = Field(0.02, ge=0)     # MAR; not applied to 1-D params or the head (MAR)
    warmup_steps: int = Field(100, ge=0)        # linear warmup, then constant (MAR's default schedule)
    grad_clip: float = Field(3.0, ge=0)         # MAR's clip; 0 = no clipping
    ema_decay: float = Field(0.999, ge=0, le=1) # MAR uses 0.9999 over ~10^6 steps; short runs need less
    ema_warmup: bool = False                    # decay min(ema_decay, (1+t)/(10+t)) (timm-style warmup)


class TrainSection(Strict):
    steps: int = Field(3000, ge=1)              # total optimizer updates (a resumed run continues up to it)
    seed: int = Field(0, ge=0, lt=2**63)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_every: int = Field(50, ge=1)            # plain log line / metrics.csv row interval
    sample_every: int = Field(1000, ge=0)       # sample grid interval (and at the end); 0 = only at the end
    ckpt_every: int = Field(1000, ge=0)         # checkpoint interval (and at the end); 0 = only at the end
    keep_checkpoints: int = Field(3, ge=0)      # newest step directories kept (the final one always); 0 = all
    runs_dir: str = "runs"
    name: str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # run directory suffix (a file name)
    grid_classes: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: list(range(10)))  # grid rows
    grid_per_class: int = Field(8, ge=0)
    threads: int | None = Field(None, ge=1)     # torch.set_num_threads; None keeps torch's default


class RunConfig(Strict):
    """Everything a ``driftar train`` run needs; saved as ``config.json`` in the run directory."""

    backbone: str = "mar"
    recipe: str = "baseline"
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    train: TrainSection = Field(default_factory=TrainSection)
    method: dict[str, Any] = Field(default_factory=dict)  # recipe-specific (e.g. Drift-AR phases), validated by the recipe


# -------------------------------------------------------------------------------------------------
# Helpers
# -------------------------------------------------------------------------------------------------


def deep_update(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_update(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _describe(err: dict[str, Any], where: str) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    key = f"{where}.{loc}" if where else loc
    if err["type"] == "extra_forbidden":
        return f"unknown key {key!r}"
    ctx = err.get("ctx") or {}
    allowed = f" (allowed: {ctx['expected']})" if "expected" in ctx else ""
    if not loc:                                   # a check across fields (model_validator): its message says it
        return f"invalid {where or 'configuration'}: {err['msg'].removeprefix('Value error, ')}"
    got = repr(err.get("input"))
    return f"bad value for {key!r}: {err['msg']}{allowed}; got {got if len(got) <= 80 else got[:77] + '...'}"


def validate(model_cls: type[BaseModel], data: dict[str, Any], where: str = "") -> Any:
    """``model_cls.model_validate(data)`` with errors that name the key (and list valid keys)."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as e:
        lines = [_describe(err, where) for err in e.errors()]
        if any(err["type"] == "extra_forbidden" for err in e.errors()):
            lines.append(f"valid keys of {where or model_cls.__name__}: {', '.join(model_cls.model_fields)}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def parse_value(text: str) -> Any:
    """``--set`` values: JSON when it parses (numbers, bools, lists), else the raw string."""
    for candidate in (text, text.lower()):
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            pass
    return text


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["optim.lr=1e-3", "model.args.depth=2"]`` -> nested dict."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE (e.g. optim.lr=3e-4), got {item!r}")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: the key must be dotted names, e.g. optim.lr=3e-4")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r} conflicts with an earlier --set of {p!r} to a value")
        node[parts[-1]] = parse_value(value.strip())
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A ``--config`` file: TOML (``.toml``) or JSON (``.json``), a table at the top level."""
    path = Path(path)
    if path.suffix not in (".toml", ".json"):
        raise ConfigError(f"--config {path}: unsupported format {path.suffix or '(no suffix)'!r}; "
                          "use a .toml or .json file")
    if path.suffix == ".toml":
        data = load_toml(path)
    elif not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    else:
        data = read_json_object(path, ConfigError, "a config file holds a table of settings")
    return data


def build_run_config(recipe_path: Path | None = None, config_file: str | None = None,
                     overrides: list[str] | tuple[str, ...] = (), **top: Any) -> RunConfig:
    data: dict[str, Any] = {}
    if recipe_path is not None:
        data = deep_update(data, load_toml(recipe_path))
    if config_file is not None:
        data = deep_update(data, load_config_file(config_file))
        validate(RunConfig, data)     # the file on its own: a bad value must not hide under a --set of its table
    data = deep_update(data, {k: v for k, v in top.items() if v is not None})
    data = deep_update(data, parse_overrides(overrides))
    return validate(RunConfig, data)
