"""Typed, validated parameters read from params.yaml: every knob of the pipeline, checked once, early.

Each section of params.yaml is one frozen dataclass. Types are checked field by field so that a wrong
value fails with the key's name (``select.ipc must be an integer, got 1.5``) before any work starts.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from helio_core import models
from helio_core.errors import HelioError


@dataclass(frozen=True)
class DataParams:
    """Which data set to prepare and at what resolution."""

    name: Literal["fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder", "synthetic"] = "fashion-mnist"
    root: str | None = None  # None: auto-detect where the source allows it (Debian's fashion-mnist)
    size: int = 32  # working resolution in pixels (square)
    train_per_class: int | None = None  # cap per class (None: all); required for `synthetic`
    test_per_class: int | None = None
    val_images: int = 5000  # held out of the train split: every choice is made on it, never on test
    synthetic_classes: int = 10
    synthetic_channels: int = 3
    class_names: str | None = None  # imagefolder: a file of "<folder> <name>[, synonyms]" lines (ImageNet's
    # LOC_synset_mapping.txt): classes are named by words, not WordNet ids, for CLIP's text head and the tables

    def validate(self) -> None:
        _positive("data.size", self.size)
        if self.class_names is not None and self.name != "imagefolder":
            raise HelioError(f"data.class_names is for data.name=imagefolder, not {self.name}")
        _positive("data.val_images", self.val_images)
        for key in ("train_per_class", "test_per_class"):
            value = getattr(self, key)
            if value is not None:
                _positive(f"data.{key}", value)
        if self.name == "synthetic":
            if self.train_per_class is None or self.test_per_class is None:
                raise HelioError("data.train_per_class and data.test_per_class must be set for data.name=synthetic")
            _positive("data.synthetic_classes", self.synthetic_classes)
            if self.synthetic_channels not in (1, 3):
                raise HelioError(f"data.synthetic_channels must be 1 or 3, got {self.synthetic_channels}")


@dataclass(frozen=True)
class TeacherParams:
    """One training trajectory from scratch; the checkpoints of `keep` are the (weak) teachers."""

    arch: str = "resnet18"
    epochs: int = 9
    epoch_images: int | None = None  # images per epoch, drawn without replacement (None: the whole split)
    keep: list[int] = field(default_factory=lambda: list(range(1, 10)))
    batch_size: int = 128
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup: float = 0.1  # fraction of all steps with a linear warm-up, then cosine decay to zero
    label_smoothing: float = 0.1
    crop_padding: int = 2  # random-crop augmentation: pad then crop back to size
    flip: bool = True
    eval_images: int | None = 2000  # val images scored per kept epoch (None: all); the last: all test images

    def validate(self) -> None:
        _known_arch("teachers.arch", self.arch)
        for key in ("epochs", "batch_size"):
            _positive(f"teachers.{key}", getattr(self, key))
        if self.epoch_images is not None:
            _positive("teachers.epoch_images", self.epoch_images)
        if self.eval_images is not None:
            _positive("teachers.eval_images", self.eval_images)
        if not self.keep:
            raise HelioError("teachers.keep must list at least one epoch")
        bad = [epoch for epoch in self.keep if not 1 <= epoch <= self.epochs]
        if bad:
            raise HelioError(f"teachers.keep must hold epochs between 1 and teachers.epochs={self.epochs}, got {bad}")
        if len(set(self.keep)) != len(self.keep):
            raise HelioError(f"teachers.keep lists an epoch twice: {self.keep}")
        if self.lr <= 0:
            raise HelioError(f"teachers.lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise HelioError(f"teachers.warmup must be in [0, 1), got {self.warmup}")
        if self.crop_padding < 0:
            raise HelioError(f"teachers.crop_padding must be >= 0, got {self.crop_padding}")


@dataclass(frozen=True)
class SelectParams:
    """RDED patch selection (paper Eq. 6)."""

    ipc: int = 10  # distilled images per class
    factor: int = 1  # each image tiles factor x factor patches
    candidates: int = 300  # random train images per class (RDED: 300)
    crops: int = 5  # RandomResizedCrop crops per candidate (RDED: 5)
    crop_scale: list[float] = field(default_factory=lambda: [0.5, 1.0])  # area fraction of each crop
    observer_epoch: int | None = None  # teacher epoch that scores the crops (None: the last kept)
    batch_size: int = 256

    def validate(self) -> None:
        for key in ("ipc", "factor", "candidates", "crops", "batch_size"):
            _positive(f"select.{key}", getattr(self, key))
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise HelioError(f"select.crop_scale must be [low, high] with 0 < low <= high <= 1, got {self.crop_scale}")
        if self.candidates < self.patches_per_class:
            raise HelioError(
                f"select.candidates={self.candidates} must be at least ipc*factor^2={self.patches_per_class}"
            )

    @property
    def patches_per_class(self) -> int:
        return self.ipc * self.factor**2


@dataclass(frozen=True)
class ProjectorParams:
    """The projector and how it is fitted (paper Eq. 5)."""

    backbone: str = "efficientnet_lite0"  # efficientnet_lite0 | open_clip:<model>/<pretrained> | torchvision:<name>
    resolution: int | None = 64  # encoder input size (None: the backbone's native size)
    features: Literal["multi", "final"] = "multi"  # efficientnet_lite0: pooled mid-level stages or the head
    head_init: Literal["text", "prototypes", "random"] = "prototypes"
    teachers: list[int] | None = None  # kept teacher epochs whose mean logits are the target (None: all kept)
    target: Literal["mean_logits", "mean_probs"] = "mean_logits"  # how the weak teachers are combined;
    # mean_probs: T * log of the mean softmax at projector.temperature (an ensemble's averaged belief)
    teacher_batchnorm: Literal["running", "batch"] = "running"  # how the weak teachers normalise what they label:
    # their checkpoints' BN statistics, or each batch's own (mid-trajectory running statistics lag the weights)
    distilled_repeats: int = 0  # the distilled images join the fit pool this many times (0: train images only)
    train_images: int | None = 6000  # train-split images the projector is fitted on (None: all but val)
    val_images: int = 1000  # held out from the train split: early stopping and reporting
    test_images: int | None = 2000  # test images for the metrics (None: all)
    epochs: int = 4
    batch_size: int = 128
    lr: float = 0.002
    weight_decay: float = 0.0
    loss: Literal["mse", "kl", "ce"] = "mse"  # mse: Eq. 5 on logits; kl: temperature-scaled KL to the target;
    # ce: hard labels only, no teacher guidance (the first step of the paper's ablation, Table 3)
    temperature: float = 4.0  # kl only
    lambda_ce: float = 0.1  # weight of the hard-label cross-entropy (Eq. 5's lambda)
    flip: bool = True  # views=plain: also fit on mirrored images (their targets are the teachers' on the mirror)
    views: Literal["plain", "student"] = "plain"  # student: fresh RandomResizedCrop + flip + CutMix views each
    # epoch, as the students will see, with the teachers run on every view (cost: one pass per teacher per view)
    cache_prefix: bool = True  # views=plain: run the encoder's unadapted leading blocks once per image and view
    # (lora.targets must leave some, e.g. ["blocks.4.*", "blocks.5.*"]); the same loss, less compute
    logit_scale: float = 10.0  # initial s
    dtype: Literal["fp16", "fp32"] = "fp16"  # storage precision of the LoRA tensors

    def validate(self) -> None:
        for key in ("val_images", "epochs", "batch_size"):
            _positive(f"projector.{key}", getattr(self, key))
        for key in ("resolution", "train_images", "test_images"):
            if getattr(self, key) is not None:
                _positive(f"projector.{key}", getattr(self, key))
        if self.distilled_repeats < 0:
            raise HelioError(f"projector.distilled_repeats must be >= 0, got {self.distilled_repeats}")
        for key in ("lr", "temperature", "logit_scale"):
            if getattr(self, key) <= 0:
                raise HelioError(f"projector.{key} must be > 0, got {getattr(self, key)}")
        if self.lambda_ce < 0:
            raise HelioError(f"projector.lambda_ce must be >= 0, got {self.lambda_ce}")


@dataclass(frozen=True)
class LoraParams:
    """Low-rank adaptation of the encoder (rank) and of the head (head_rank); 0 disables either."""

    rank: int = 8
    alpha: float = 8.0  # the update is scaled by alpha / rank
    targets: str | list[str] = "all"  # "all" or module-name patterns (fnmatch), e.g. ["blocks.5.*"]
    head_rank: int = 16

    def validate(self) -> None:
        for key in ("rank", "head_rank"):
            if getattr(self, key) < 0:
                raise HelioError(f"lora.{key} must be >= 0, got {getattr(self, key)}")
        if isinstance(self.targets, str) and self.targets != "all":
            raise HelioError(f"lora.targets must be 'all' or a list of module-name patterns, got {self.targets!r}")


@dataclass(frozen=True)
class RefineParams:
    """Image refinement through the adapted encoder (paper Eq. 7): make each image's features survive
    down- and up-sampling by `scale`."""

    enabled: bool = True  # false: the distilled images pass through unchanged
    steps: int = 50
    lr: float = 0.01  # Adam on the pixels (in [0, 1])
    scale: int = 2  # down-sampling factor of the low-resolution view
    batch_size: int = 100

    def validate(self) -> None:
        for key in ("steps", "scale", "batch_size"):
            _positive(f"refine.{key}", getattr(self, key))
        if self.lr <= 0:
            raise HelioError(f"refine.lr must be > 0, got {self.lr}")


LabelMode = Literal["projector", "teacher", "hard", "stored", "teachers"]  # teachers: the projector's target


@dataclass(frozen=True)
class StudentParams:
    """Students trained from scratch on the refined images, one per (arch, label mode, seed)."""

    archs: list[str] = field(default_factory=lambda: ["resnet18"])
    label_modes: list[LabelMode] = field(default_factory=lambda: ["projector", "teacher", "hard", "stored"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    epochs: int = 300
    batch_size: int = 50
    lr: float = 0.001  # AdamW, cosine to zero (RDED's student recipe)
    weight_decay: float = 0.01
    crop_scale: list[float] | None = None  # RandomResizedCrop area range; None: (1/select.factor, 1)
    flip: bool = True  # false for data whose classes change when mirrored
    cutmix: bool = True
    projector_loss: Literal["mse", "kl", "mse_probs"] = "mse"  # mse: Algorithm 1, MSE(f(A(X)), projector(A(X)));
    # kl: KL at temperature; mse_probs: MSE between the softmaxes at temperature
    standardise: bool = False  # projector mode: z-score both logit vectors first (Sun et al., CVPR 2024)
    beta: float = 0.1  # weight of the hard-label CE beside the projector loss (Algorithm 1's beta)
    temperature: float = 4.0  # KL temperature of the teacher and stored modes (and projector_loss=kl)
    teacher_batchnorm: Literal["running", "batch"] = "running"  # how the teacher and weak teachers normalise the
    # views they label: running = their checkpoints' statistics (eval mode, as RDED); batch = each augmented batch's own
    eval_every: int = 25  # epochs between points of the validation curve
    curve_images: int = 1000  # validation images scored at each curve point (the final score uses all)

    def validate(self) -> None:
        for key in ("epochs", "batch_size", "eval_every", "curve_images"):
            _positive(f"student.{key}", getattr(self, key))
        _distinct_entries("student", self, ("archs", "label_modes", "seeds"))
        for index, arch in enumerate(self.archs):
            _known_arch(f"student.archs[{index}]", arch)
        for key in ("lr", "temperature"):
            if getattr(self, key) <= 0:
                raise HelioError(f"student.{key} must be > 0, got {getattr(self, key)}")
        if self.beta < 0:
            raise HelioError(f"student.beta must be >= 0, got {self.beta}")
        if self.crop_scale is not None and (
            len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1
        ):
            raise HelioError(f"student.crop_scale must be [low, high] with 0 < low <= high <= 1, got {self.crop_scale}")


@dataclass(frozen=True)
class ContinualParams:
    """GDumb-style class-incremental evaluation (paper Fig. 2): at each step a student is trained from scratch on
    the distilled images of the classes seen so far, with the `student` section's recipe, and tested on them."""

    steps: list[int] = field(default_factory=lambda: [5, 10])  # how many steps the classes arrive in
    label_modes: list[Literal["projector", "teacher", "hard"]] = field(default_factory=lambda: ["projector", "teacher"])
    seeds: list[int] = field(default_factory=lambda: [0])
    class_order_seed: int | None = 0  # None: the classes in their natural order
    memory: int | None = None  # GDumb's memory in images (None: every distilled image of the seen classes)

    def validate(self) -> None:
        _distinct_entries("continual", self, ("steps", "label_modes", "seeds"))
        for steps in self.steps:
            _positive("continual.steps[]", steps)
        if self.memory is not None:
            _positive("continual.memory", self.memory)


@dataclass(frozen=True)
class CrossArchParams:
    """Cross-architecture students (paper Table 2), one DVC matrix stage per arch in
    experiments/cross_arch/dvc.yaml, each with the `student` section's recipe but for its `lr` entry, if any."""

    archs: list[str] = field(
        default_factory=lambda: ["resnet18", "shufflenet_v2", "mobilenet_v2", "efficientnet_b0", "swin_v2_t", "vgg11"]
    )
    label_modes: list[Literal["projector", "teacher", "hard"]] = field(default_factory=lambda: ["projector", "teacher"])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    lr: dict[str, float] = field(default_factory=dict)  # per-arch student.lr, for those that diverge at it

    def validate(self) -> None:
        _distinct_entries("cross_arch", self, ("archs", "label_modes", "seeds"))
        for index, arch in enumerate(self.archs):
            _known_arch(f"cross_arch.archs[{index}]", arch)
        for arch, lr in self.lr.items():
            if arch not in self.archs:
                raise HelioError(f"cross_arch.lr names {arch!r}, which is not one of cross_arch.archs {self.archs}")
            if lr <= 0:
                raise HelioError(f"cross_arch.lr.{arch} must be > 0, got {lr}")


@dataclass(frozen=True)
class RuntimeParams:
    """Where the stages run. Not a DVC dependency of any stage: moving a run to a GPU does not invalidate
    its outputs, but every artifact's provenance records the device and precision that made it."""

    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when available, else the CPU
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # autocast; auto: bf16 (fp16) on CUDA, fp32 on CPU
    threads: int | None = None  # CPU threads per process (None: the cores, shared among torchrun processes)

    def validate(self) -> None:
        if self.threads is not None:
            _positive("runtime.threads", self.threads)
        if self.device == "cpu" and self.precision == "fp16":
            raise HelioError("runtime.precision=fp16 needs runtime.device=cuda (use bf16 or fp32 on the CPU)")


@dataclass(frozen=True)
class Params:
    """The whole params.yaml."""

    seed: int = 0
    data: DataParams = field(default_factory=DataParams)
    teachers: TeacherParams = field(default_factory=TeacherParams)
    select: SelectParams = field(default_factory=SelectParams)
    projector: ProjectorParams = field(default_factory=ProjectorParams)
    lora: LoraParams = field(default_factory=LoraParams)
    refine: RefineParams = field(default_factory=RefineParams)
    student: StudentParams = field(default_factory=StudentParams)
    continual: ContinualParams = field(default_factory=ContinualParams)
    cross_arch: CrossArchParams = field(default_factory=CrossArchParams)
    runtime: RuntimeParams = field(default_factory=RuntimeParams)

    def validate(self) -> None:
        self.data.validate()
        self.teachers.validate()
        self.select.validate()
        self.projector.validate()
        self.lora.validate()
        self.refine.validate()
        self.student.validate()
        self.continual.validate()
        self.cross_arch.validate()
        self.runtime.validate()
        missing = sorted(set(self.projector.teachers or []) - set(self.teachers.keep))
        if missing:
            raise HelioError(f"projector.teachers lists epochs {missing} that teachers.keep does not keep")
        if self.data.size % self.select.factor:
            raise HelioError(f"select.factor={self.select.factor} must divide data.size={self.data.size}")
        if self.data.size % self.refine.scale:
            raise HelioError(f"refine.scale={self.refine.scale} must divide data.size={self.data.size}")

    @property
    def student_crop_scale(self) -> list[float]:
        """The students' RandomResizedCrop area range: as set, or RDED's (1/factor, 1)."""
        return self.student.crop_scale or [1 / self.select.factor, 1.0]


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Read, override (``key.sub=value`` in YAML syntax, as `dvc exp run -S`) and validate params."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise HelioError(f"{path}: params file not found") from None
    except yaml.YAMLError as error:
        raise HelioError(f"{path}: not valid YAML ({error})".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise HelioError(f"{path}: expected a mapping of sections at the top level")
    for override in overrides or []:
        _apply_override(raw, override)
    params = _build(Params, raw, prefix="")
    params.validate()
    return params


def as_dict(section: Any) -> dict[str, Any]:
    """A section as plain data, for provenance records."""
    return dataclasses.asdict(section)


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise HelioError(f"override {override!r} must look like section.key=value")
    *parents, leaf = key.split(".")
    node = raw
    for parent in parents:
        node = node.setdefault(parent, {})
        if not isinstance(node, dict):
            raise HelioError(f"override {override!r}: {parent} is not a section")
    node[leaf] = yaml.safe_load(text)


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise HelioError(f"{prefix.rstrip('.') or 'params'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise HelioError(f"unknown parameter {prefix}{unknown[0]} (known: {', '.join(sorted(names))})")
    values = {}
    for name in names & set(raw):
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, raw[name], f"{prefix}{name}.")
        else:
            values[name] = _check(f"{prefix}{name}", raw[name], hint)
    return cls(**values)


def _check(key: str, value: Any, hint: Any) -> Any:
    """Return value if it has the type `hint` (ints accepted for floats), else raise naming the key."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _check(key, value, option)
            except HelioError:
                continue
        raise HelioError(f"{key} must be {_describe(hint)}, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise HelioError(f"{key} must be one of {', '.join(map(str, args))}; got {value!r}")
    if origin is dict:
        if not isinstance(value, dict):
            raise HelioError(f"{key} must be {_describe(hint)}, got {value!r}")
        return {
            _check(f"{key} key", name, args[0]): _check(f"{key}.{name}", item, args[1]) for name, item in value.items()
        }
    if origin is list:
        if not isinstance(value, list):
            raise HelioError(f"{key} must be a list of {_describe(args[0])}, got {value!r}")
        return [_check(f"{key}[{i}]", item, args[0]) for i, item in enumerate(value)]
    if hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    raise HelioError(f"{key} must be {_describe(hint)}, got {value!r}")


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if origin is list:
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    if origin is dict:
        key, value = typing.get_args(hint)
        return f"a mapping of {_describe(key)} to {_describe(value)}"
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}
    return names.get(hint, str(hint))


def _positive(key: str, value: int) -> None:
    if value <= 0:
        raise HelioError(f"{key} must be > 0, got {value}")


def _distinct_entries(section: str, config: object, keys: tuple[str, ...]) -> None:
    """Lists of runs to make (architectures, modes, seeds, schedules): none empty, no entry twice."""
    for key in keys:
        values = getattr(config, key)
        if not values:
            raise HelioError(f"{section}.{key} must list at least one entry")
        if len(set(values)) != len(values):
            raise HelioError(f"{section}.{key} lists an entry twice: {values}")


def _known_arch(key: str, name: str) -> None:
    """Architectures are checked here, before any stage runs, not when the first model is built."""
    if name not in models.list_models():
        raise HelioError(f"{key} must be one of {', '.join(models.list_models())}; got {name!r}")
