"""Typed parameters read from params.yaml: every knob of the pipeline, checked once, before any work starts.

Each section of params.yaml is one pydantic model that declares types and bounds but no values: params.yaml
(or a preset, a complete file of the same shape) is the only source of every value, so no default in code can
disagree with it. A bad value fails with one line naming the key (``select.ipc must be an integer, got 1.5``).
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from helio_core.errors import HelioError

Positive = Annotated[int, Field(gt=0)]
Count = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
# the registered architectures (helio_core.models.architectures), named here so that reading params needs no torch
Arch = Literal[
    "convnet3", "efficientnet_b0", "mobilenet_v2", "resnet18", "resnet18_cifar", "shufflenet_v2", "swin_v2_t", "vgg11"
]
# teachers: the projector's target; label_net: the distilled label network (stage fit_label_net);
# teacher_int8/int4: the teacher with its weights quantised (a bytes-against-accuracy yardstick, not a candidate)
LabelMode = Literal["projector", "label_net", "teacher", "hard", "stored", "teachers", "teacher_int8", "teacher_int4"]
OnlineLabelMode = Literal["projector", "label_net", "teacher", "hard"]


class Section(BaseModel):
    """A section of params.yaml: every key required, no unknown key, no silent conversion (1 is not true)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataParams(Section):
    """Which data set to prepare and at what resolution."""

    name: Literal["fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder", "synthetic"]
    root: str | None  # None: auto-detect where the source allows it (Debian's fashion-mnist)
    size: Positive  # working resolution in pixels (square)
    train_per_class: Positive | None  # cap per class (None: all); required for `synthetic`
    test_per_class: Positive | None
    val_images: Positive  # held out of the train split: every choice is made on it, never on test
    synthetic_classes: Positive  # data.name=synthetic only
    synthetic_channels: Literal[1, 3]  # data.name=synthetic only
    decode_workers: Count  # imagefolder: processes decoding the image files as `prepare` writes them (0: its own)
    class_names: str | None  # imagefolder: a file of "<folder> <name>[, synonyms]" lines (ImageNet's
    # LOC_synset_mapping.txt): classes are named by words, not WordNet ids, for CLIP's text head and the tables

    @model_validator(mode="after")
    def _consistent(self) -> DataParams:
        if self.class_names is not None and self.name != "imagefolder":
            raise HelioError(f"data.class_names is for data.name=imagefolder, not {self.name}")
        if self.name == "synthetic" and (self.train_per_class is None or self.test_per_class is None):
            raise HelioError("data.train_per_class and data.test_per_class must be set for data.name=synthetic")
        return self


class TeacherParams(Section):
    """One training trajectory from scratch; the checkpoints of `keep` are the (weak) teachers."""

    arch: Arch
    epochs: Positive
    epoch_images: Positive | None  # images per epoch, drawn without replacement (None: the whole split)
    keep: list[int]
    batch_size: Positive
    optimizer: Literal["sgd", "adamw"]
    lr: PositiveFloat
    momentum: float  # sgd only
    weight_decay: float
    warmup: Annotated[float, Field(ge=0, lt=1)]  # fraction of all steps with a linear warm-up, then cosine to zero
    label_smoothing: float
    crop_padding: Count  # random-crop augmentation: pad then crop back to size
    flip: bool
    eval_images: Positive | None  # val images scored per kept epoch (None: all); the last: all test images

    @model_validator(mode="after")
    def _kept_epochs(self) -> TeacherParams:
        if not self.keep:
            raise HelioError("teachers.keep must list at least one epoch")
        bad = [epoch for epoch in self.keep if not 1 <= epoch <= self.epochs]
        if bad:
            raise HelioError(f"teachers.keep must hold epochs between 1 and teachers.epochs={self.epochs}, got {bad}")
        if len(set(self.keep)) != len(self.keep):
            raise HelioError(f"teachers.keep lists an epoch twice: {self.keep}")
        return self


class SelectParams(Section):
    """RDED patch selection (paper Eq. 6), or random train images as its baseline."""

    method: Literal["rded", "random"]  # random: ipc * factor^2 random train images per class, whole (a baseline)
    ipc: Positive  # distilled images per class
    factor: Positive  # each image tiles factor x factor patches
    candidates: Positive  # random train images per class (RDED: 300)
    crops: Positive  # RandomResizedCrop crops per candidate (RDED: 5)
    crop_scale: list[float]  # area fraction of each crop
    observer_epoch: int | None  # teacher epoch that scores the crops (None: the last kept)
    batch_size: Positive

    @model_validator(mode="after")
    def _enough_candidates(self) -> SelectParams:
        _check_crop_scale("select.crop_scale", self.crop_scale)
        if self.method == "rded" and self.candidates < self.patches_per_class:
            raise HelioError(
                f"select.candidates={self.candidates} must be at least ipc*factor^2={self.patches_per_class}"
            )
        return self

    @property
    def patches_per_class(self) -> int:
        return self.ipc * self.factor**2


class ProjectorParams(Section):
    """The projector and how it is fitted (paper Eq. 5)."""

    backbone: str  # efficientnet_lite0 | open_clip:<model>/<pretrained> | torchvision:<name>[/<weights>]
    resolution: Positive | None  # encoder input size (None: the backbone's native size)
    features: Literal["multi", "final"]  # efficientnet_lite0: pooled mid-level stages or the head
    head_init: Literal["text", "prototypes", "random"]
    teachers: list[int] | None  # kept teacher epochs whose combined logits are the target (None: all kept)
    target: Literal["mean_logits", "mean_probs"]  # how the weak teachers are combined;
    # mean_probs: T * log of the mean softmax at projector.temperature (an ensemble's averaged belief)
    teacher_batchnorm: Literal["running", "batch"]  # how the weak teachers normalise what they label:
    # their checkpoints' BN statistics, or each batch's own
    distilled_repeats: Count  # the distilled images join the fit pool this many times (0: train images only)
    train_images: Positive | None  # train-split images the projector is fitted on (None: all but val)
    val_images: Positive  # held out from the train split for early stopping
    test_images: Positive | None  # test images for the metrics (None: all)
    epochs: Positive
    batch_size: Positive
    lr: PositiveFloat
    weight_decay: float
    loss: Literal["mse", "kl", "ce"]  # mse: Eq. 5 on logits; kl: temperature-scaled KL to the target;
    # ce: hard labels only, no teacher guidance (the first step of the paper's ablation, Table 3)
    temperature: PositiveFloat  # kl and target=mean_probs
    lambda_ce: Annotated[float, Field(ge=0)]  # weight of the hard-label cross-entropy (Eq. 5's lambda)
    flip: bool  # views=plain: also fit on mirrored images (their targets are the teachers' on the mirror)
    views: Literal["plain", "student"]  # student: fresh RandomResizedCrop + flip + CutMix views each epoch, as
    # the students will see, the teachers run on every view; plain: the images, targets computed once
    cache_prefix: bool  # views=plain: run the encoder's unadapted leading blocks once per image and view
    logit_scale: PositiveFloat  # initial s
    dtype: Literal["fp16", "fp32"]  # storage precision of the LoRA tensors


class LoraParams(Section):
    """Low-rank adaptation of the encoder (rank) and of the head (head_rank); 0 disables either."""

    rank: Count
    alpha: float  # the update is scaled by alpha / rank
    targets: str | list[str]  # "all" or module-name patterns (fnmatch), e.g. ["blocks.5.*"]
    head_rank: Count

    @model_validator(mode="after")
    def _targets(self) -> LoraParams:
        if isinstance(self.targets, str) and self.targets != "all":
            raise HelioError(f"lora.targets must be 'all' or a list of module-name patterns, got {self.targets!r}")
        return self


class LabelNetParams(Section):
    """A small network (a narrow ConvNet, or the teacher's ResNet-18 layout narrowed) trained from scratch to reproduce
    the teacher's soft labels on student-style views of the train split and the refined images (label mode
    `label_net`), shipped whole: the "just compress the teacher" light label source."""

    arch: Literal["convnet", "resnet18"]  # VGG-style blocks, or the teacher's ResNet-18 layout made narrow
    widths: list[Positive]  # convnet: channels of each block; resnet18: of its four stages
    teachers: Literal["last"] | list[int]  # last: the full teacher (the `teacher` mode's); or kept epochs
    target: Literal["mean_logits", "mean_probs"]  # how listed teachers are combined (as projector.target)
    train_images: Positive | None  # train-split images its views are drawn from (None: all)
    stream_share: Annotated[float, Field(ge=0, lt=1)]  # of each batch: views of the refined images it will label
    eval_images: Positive  # val-split images its fidelity is reported on
    epochs: Positive  # passes over the train images, fresh views each
    batch_size: Positive
    lr: PositiveFloat  # AdamW, 5 % warm-up, cosine to zero
    weight_decay: float
    temperature: PositiveFloat  # of the distillation KL
    lambda_ce: Annotated[float, Field(ge=0)]  # weight of the cross-entropy to the views' (CutMix-mixed) true labels
    dtype: Literal["fp32", "fp16", "int8"]  # storage: int8 is per-output-channel symmetric on conv/linear weights

    @model_validator(mode="after")
    def _widths(self) -> LabelNetParams:
        if not self.widths:
            raise HelioError("label_net.widths must list at least one block width")
        if self.arch == "resnet18" and len(self.widths) != 4:
            raise HelioError(f"label_net.widths must list 4 stage widths for arch resnet18, got {self.widths}")
        if self.stream_share and not 0 < self.stream_batch_size < self.batch_size:
            raise HelioError(
                f"label_net.stream_share={self.stream_share} of batch_size={self.batch_size} must leave at least one "
                "refined view and one train view in each batch"
            )
        return self

    @property
    def stream_batch_size(self) -> int:
        """Views of the refined images in each batch; the rest are train views."""
        return round(self.batch_size * self.stream_share)


class RefineParams(Section):
    """Image refinement through the adapted encoder (paper Eq. 7): make each image's features survive
    down- and up-sampling by `scale`."""

    enabled: bool  # false: the distilled images pass through unchanged
    steps: Positive
    lr: PositiveFloat  # Adam on the pixels (in [0, 1])
    scale: Positive  # down-sampling factor of the low-resolution view
    batch_size: Positive


class StudentParams(Section):
    """Students trained from scratch on the refined images, one per (arch, label mode, seed)."""

    archs: list[Arch]
    label_modes: list[LabelMode]
    seeds: list[int]
    epochs: Positive
    batch_size: Positive
    lr: PositiveFloat  # AdamW, cosine to zero (RDED's student recipe)
    weight_decay: float
    crop: bool  # false: whole images (DD-Ranking's no-augmentation student, with flip and cutmix false)
    crop_scale: list[float] | None  # RandomResizedCrop area range; None: (1/select.factor, 1)
    flip: bool  # false for data whose classes change when mirrored
    cutmix: bool
    projector_loss: Literal["mse", "kl", "mse_probs"]  # mse: Algorithm 1, MSE(f(A(X)), projector(A(X)));
    # kl: KL at temperature; mse_probs: MSE between the softmaxes at temperature
    standardise: bool  # projector mode: z-score both logit vectors first (Sun et al., CVPR 2024)
    beta: Annotated[float, Field(ge=0)]  # weight of the hard-label CE beside the projector loss (Algorithm 1)
    temperature: PositiveFloat  # KL temperature of the teacher and stored modes (and projector_loss=kl)
    teacher_batchnorm: Literal["running", "batch"]  # how the teacher and weak teachers normalise the views
    # they label: running = their checkpoints' statistics (eval mode, as RDED); batch = each augmented batch's own
    eval_every: Positive  # epochs between points of the validation curve
    curve_images: Positive  # validation images scored at each curve point (the final score uses all)

    @model_validator(mode="after")
    def _runs(self) -> StudentParams:
        _distinct_entries("student", self, ("archs", "label_modes", "seeds"))
        if self.crop_scale is not None:
            _check_crop_scale("student.crop_scale", self.crop_scale)
            if not self.crop:
                raise HelioError("student.crop_scale is set but student.crop is false: set crop_scale to null")
        return self


class ContinualParams(Section):
    """GDumb-style class-incremental evaluation (paper Fig. 2): at each step a student is trained from scratch on
    the distilled images of the classes seen so far, with the `student` section's recipe, and tested on them."""

    steps: list[Positive]  # how many steps the classes arrive in
    label_modes: list[OnlineLabelMode]
    seeds: list[int]
    class_order_seed: int | None  # None: the classes in their natural order
    memory: Positive | None  # GDumb's memory in images (None: every distilled image of the seen classes)

    @model_validator(mode="after")
    def _runs(self) -> ContinualParams:
        _distinct_entries("continual", self, ("steps", "label_modes", "seeds"))
        return self


class CrossArchParams(Section):
    """Cross-architecture students (paper Table 2), one DVC matrix stage per arch in
    experiments/cross_arch/dvc.yaml, each with the `student` section's recipe but for its `lr` entry, if any."""

    archs: list[Arch]
    label_modes: list[OnlineLabelMode]
    seeds: list[int]
    lr: dict[str, PositiveFloat]  # per-arch student.lr, for those that diverge at it

    @model_validator(mode="after")
    def _runs(self) -> CrossArchParams:
        _distinct_entries("cross_arch", self, ("archs", "label_modes", "seeds"))
        for arch in self.lr:
            if arch not in self.archs:
                raise HelioError(f"cross_arch.lr names {arch!r}, which is not one of cross_arch.archs {self.archs}")
        return self


class FullDataParams(Section):
    """The full-data reference (experiments/fair/dvc.yaml): the `student` recipe trained on the whole train
    split instead of the refined images, with hard labels and the teacher's, for DD-Ranking's hard-label recovery
    and as the ceiling of every table."""

    archs: list[Arch]
    label_modes: list[Literal["hard", "teacher"]]
    seeds: list[int]
    epochs: Positive  # passes over the whole train split
    batch_size: Positive

    @model_validator(mode="after")
    def _runs(self) -> FullDataParams:
        _distinct_entries("full_data", self, ("archs", "label_modes", "seeds"))
        return self


class FairParams(Section):
    """The fair evaluation (experiments/fair/dvc.yaml, DD-Ranking's): the `student` recipe's students on random real
    train images (select.method random, refined as the distilled set is) under `random_label_modes`, paired seed by
    seed with the distilled set's, and DD-Ranking's weight w of its scores."""

    random_label_modes: list[LabelMode]  # the same labellers as the distilled set's (`stored`: of the arm's views)
    weight: Annotated[float, Field(ge=0, le=1)]  # LRS = norm(w * IOR - (1 - w) * HLR)

    @model_validator(mode="after")
    def _modes(self) -> FairParams:
        _distinct_entries("fair", self, ("random_label_modes",))
        return self


class RuntimeParams(Section):
    """Where the stages run. Not a DVC dependency of any stage: moving a run to a GPU does not invalidate
    its outputs, but every artifact's provenance records the device and precision that made it."""

    device: Literal["auto", "cpu", "cuda"]  # auto: CUDA when available, else the CPU
    precision: Literal["auto", "fp32", "bf16", "fp16"]  # autocast; auto: bf16 (fp16) on CUDA, fp32 on the CPU
    threads: Positive | None  # CPU threads per process (None: the cores, shared among torchrun processes)
    ranks_per_gpu: Positive  # torchrun processes per GPU: > 1 runs a stage's independent students side by side

    @model_validator(mode="after")
    def _precision_fits_device(self) -> RuntimeParams:
        if self.device == "cpu" and self.precision == "fp16":
            raise HelioError("runtime.precision=fp16 needs runtime.device=cuda (use bf16 or fp32 on the CPU)")
        return self


class Params(Section):
    """The whole params.yaml."""

    seed: int
    data: DataParams
    teachers: TeacherParams
    select: SelectParams
    projector: ProjectorParams
    lora: LoraParams
    label_net: LabelNetParams
    refine: RefineParams
    student: StudentParams
    continual: ContinualParams
    cross_arch: CrossArchParams
    full_data: FullDataParams
    fair: FairParams
    runtime: RuntimeParams

    @model_validator(mode="after")
    def _sections_agree(self) -> Params:
        for key, listed in (("projector", self.projector.teachers), ("label_net", self.label_net.teachers)):
            missing = sorted(set(listed if isinstance(listed, list) else []) - set(self.teachers.keep))
            if missing:
                raise HelioError(f"{key}.teachers lists epochs {missing} that teachers.keep does not keep")
        if self.data.size % self.select.factor:
            raise HelioError(f"select.factor={self.select.factor} must divide data.size={self.data.size}")
        if self.data.size % self.refine.scale:
            raise HelioError(f"refine.scale={self.refine.scale} must divide data.size={self.data.size}")
        return self

    @property
    def student_crop_scale(self) -> list[float] | None:
        """The students' RandomResizedCrop area range: as set, or RDED's (1/factor, 1); None: no crop."""
        if not self.student.crop:
            return None
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
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise HelioError(_one_line(error)) from None


def with_overrides(params: Params, overrides: list[str]) -> Params:
    """`params` with `key.sub=value` overrides applied and everything validated again."""
    raw = params.model_dump()
    for override in overrides:
        _apply_override(raw, override)
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise HelioError(_one_line(error)) from None


def as_dict(section: BaseModel) -> dict[str, Any]:
    """A section as plain data, for provenance records."""
    return section.model_dump()


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


_BOUNDS = {
    "greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"), "less_than": ("<", "lt"),
    "less_than_equal": ("<=", "le"),
}  # fmt: skip


def _one_line(error: ValidationError) -> str:
    """pydantic's first error (an unknown key first) as helio's one line: the key, what it must be, what it got."""
    first = sorted(error.errors(), key=lambda item: item["type"] != "extra_forbidden")[0]
    key, hint, parent = _locate(first["loc"])
    kind, value = first["type"], first.get("input")
    if kind == "extra_forbidden":
        return f"unknown parameter {key} (known: {', '.join(sorted(parent.model_fields))})"
    if kind == "missing":
        return f"{key} is missing: a params file sets every key (see the shipped params.yaml)"
    if kind == "literal_error" and typing.get_origin(_strip(hint)) is Literal:
        return f"{key} must be one of {', '.join(map(str, typing.get_args(hint)))}; got {value!r}"
    if kind in _BOUNDS:
        symbol, bound = _BOUNDS[kind]
        return f"{key} must be {symbol} {first['ctx'][bound]}, got {value}"
    return f"{key} must be {_describe(hint)}, got {value!r}"


def _locate(loc: tuple[Any, ...]) -> tuple[str, Any, type[BaseModel]]:
    """The dotted key of an error location, the type declared there, and the section holding it. Steps that name
    a member of a union (pydantic's tags) end the walk: the error is about the union as a whole."""
    key, hint, parent = "", Params, Params
    for step in loc:
        base = _strip(hint)
        if isinstance(base, type) and issubclass(base, BaseModel) and step in base.model_fields:
            parent, hint = base, base.model_fields[step].annotation
            key = f"{key}.{step}" if key else str(step)
        elif typing.get_origin(base) is list and isinstance(step, int):
            hint, key = typing.get_args(base)[0], f"{key}[{step}]"
        elif typing.get_origin(base) is dict and isinstance(step, str) and step != "[key]":
            hint, key = typing.get_args(base)[1], f"{key}.{step}"
        elif isinstance(base, type) and issubclass(base, BaseModel):
            return f"{key}.{step}" if key else str(step), None, base
        else:
            break
    return key or "params", hint, parent


def _strip(hint: Any) -> Any:
    """The type inside Annotated[...] (bounds are reported by their own error kinds)."""
    return typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint


def _describe(hint: Any) -> str:
    hint = _strip(hint)
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
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return "a mapping"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}
    return names.get(hint, str(hint))


def _check_crop_scale(key: str, scale: list[float]) -> None:
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise HelioError(f"{key} must be [low, high] with 0 < low <= high <= 1, got {scale}")


def _distinct_entries(section: str, config: BaseModel, keys: tuple[str, ...]) -> None:
    """Lists of runs to make (architectures, modes, seeds, schedules): none empty, no entry twice."""
    for key in keys:
        values = getattr(config, key)
        if not values:
            raise HelioError(f"{section}.{key} must list at least one entry")
        if len(set(values)) != len(values):
            raise HelioError(f"{section}.{key} lists an entry twice: {values}")
