"""Where every stage of a pipeline run reads and writes: one object that knows each path, relative to the
checkout DVC runs in (dvc.yaml's `deps` and `outs` name the same paths)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from helio_core.errors import HelioError


def teacher_file_name(epoch: int) -> str:
    """The checkpoint of a kept epoch, in the teachers' folder (sorted by name = by epoch)."""
    return f"epoch_{epoch:03d}.safetensors"


@dataclass(frozen=True)
class StudentOutputs:
    """What one students' table writes: the table, its curves and plot, and optionally the storage report and
    the stored labels (the cross-architecture stages have neither)."""

    metrics: Path
    curves: Path
    accuracy_plot: Path
    storage: Path | None
    stored_labels: Path | None

    def stored_file(self, seed: int, folder: Path | None = None) -> Path:
        return (folder or self.stored_labels) / f"seed_{seed}.safetensors"


RANDOM_ARM = "random"  # DD-Ranking's random real images, the arm experiments/fair/dvc.yaml evaluates


@dataclass(frozen=True)
class Workspace:
    """`arm` names a baseline's images beside the distilled set (`random`: DD-Ranking's random real images): its
    own selected and refined sets and students' table under artifacts/<arm>, plots/<arm> and metrics/<arm>, labelled
    by the same teachers, projector and label network."""

    root: Path = Path(".")
    arm: str | None = None

    def _at(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def _arm_at(self, kind: str, *parts: str) -> Path:
        """A path of this arm's images or students: `kind` (artifacts, plots, metrics) / arm / parts."""
        return self._at(kind, *([self.arm] if self.arm else []), *parts)

    # prepare
    @property
    def data(self) -> Path:
        return self._at("artifacts", "data")

    def split(self, name: str) -> Path:
        """A prepared split's folder of shards: train, val or test."""
        return self.data / name

    def split_index(self, name: str) -> Path:
        """A split's index: it lists the sha256 of every shard, which readers check, so its hash stands for the
        split in provenance records (hashing the shards themselves would read the whole split)."""
        return self.split(name) / "index.json"

    @property
    def classes(self) -> Path:
        return self.data / "classes.json"

    # train_teachers
    @property
    def teachers(self) -> Path:
        return self._at("artifacts", "teachers")

    def teacher(self, epoch: int) -> Path:
        return self.teachers / teacher_file_name(epoch)

    def teacher_checkpoints(self, epochs: list[int] | None = None, key: str = "projector.teachers") -> list[Path]:
        """The checkpoints of the kept `epochs` (every kept one when None), in epoch order; `key` is the
        parameter that asked for them, named when one is missing."""
        if epochs is None:
            files = sorted(self.teachers.glob("epoch_*.safetensors"))
            if not files:
                raise HelioError(f"{self.teachers}: no teacher checkpoints (run `dvc repro train_teachers`)")
            return files
        files = [self.teacher(epoch) for epoch in sorted(epochs)]
        for file in files:
            if not file.is_file():
                raise HelioError(f"{key}: {file} not found (is its epoch in teachers.keep?)")
        return files

    def last_teacher(self) -> Path:
        """The latest kept checkpoint: the full teacher of RDED's label mode and the default observer."""
        return self.teacher_checkpoints()[-1]

    @property
    def teachers_metrics(self) -> Path:
        return self._at("metrics", "teachers.json")

    # select_patches and refine_images: a distilled set each (images/*.png + labels.json) and its picture
    @property
    def distilled(self) -> Path:
        return self._arm_at("artifacts", "distilled")

    @property
    def distilled_grid(self) -> Path:
        return self._arm_at("plots", "distilled_grid.png")

    @property
    def refined(self) -> Path:
        return self._arm_at("artifacts", "refined")

    @property
    def refined_grid(self) -> Path:
        return self._arm_at("plots", "refined_grid.png")

    @property
    def refine_metrics(self) -> Path:
        return self._arm_at("metrics", "refine.json")

    # fit_projector
    @property
    def projector_images(self) -> Path:
        """The distilled set the projector was fit with, whatever the arm: a prototype head is rebuilt from it."""
        return self._at("artifacts", "distilled")

    @property
    def projector(self) -> Path:
        return self._at("artifacts", "projector", "projector.safetensors")

    @property
    def projector_metrics(self) -> Path:
        return self._at("metrics", "projector.json")

    # fit_label_net
    @property
    def label_net(self) -> Path:
        return self._at("artifacts", "label_net", "label_net.safetensors")

    @property
    def label_net_metrics(self) -> Path:
        return self._at("metrics", "label_net.json")

    # evaluate_students, evaluate_arch, evaluate_full_data, evaluate_continual
    def students(self) -> StudentOutputs:
        """The students' table of this arm's images and its stored labels; only the distilled set's has a storage
        report."""
        return StudentOutputs(
            metrics=self._arm_at("metrics", "students.json"),
            curves=self._arm_at("plots", "student_curves.csv"),
            accuracy_plot=self._arm_at("plots", "accuracy_vs_storage.png"),
            storage=None if self.arm else self._at("metrics", "storage.json"),
            stored_labels=self._arm_at("artifacts", "stored_labels"),
        )

    def plain_students(self) -> StudentOutputs:
        """DD-Ranking's no-augmentation students of this arm's images (for ARS), beside the augmented ones."""
        return StudentOutputs(
            metrics=self._arm_at("metrics", "plain_students.json"),
            curves=self._arm_at("plots", "plain_student_curves.csv"),
            accuracy_plot=self._arm_at("plots", "plain_accuracy_vs_storage.png"),
            storage=None,
            stored_labels=self._arm_at("artifacts", "plain_stored_labels"),
        )

    def cross_arch(self, arch: str) -> StudentOutputs:
        return StudentOutputs(
            metrics=self._at("metrics", "cross_arch", f"{arch}.json"),
            curves=self._at("plots", "cross_arch", f"{arch}_curves.csv"),
            accuracy_plot=self._at("plots", "cross_arch", f"{arch}.png"),
            storage=None,
            stored_labels=None,
        )

    def full_data(self) -> StudentOutputs:
        return StudentOutputs(
            metrics=self._at("metrics", "full_data.json"),
            curves=self._at("plots", "full_data_curves.csv"),
            accuracy_plot=self._at("plots", "full_data.png"),
            storage=None,
            stored_labels=None,
        )

    @property
    def dd_ranking_metrics(self) -> Path:
        return self._at("metrics", "dd_ranking.json")

    @property
    def continual_metrics(self) -> Path:
        return self._at("metrics", "continual.json")

    @property
    def continual_plot(self) -> Path:
        return self._at("plots", "continual.png")
