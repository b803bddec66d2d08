"""The docs' result tables are generated from tracked files, and the committed docs match what they generate."""

import json

import pytest
from typer.testing import CliRunner

from helio_app.cli import app
from helio_app.report import refined_row, refresh, render, spearman
from helio_core.errors import HelioError
from tests.conftest import REPO

ROW = {"acc": 0.7544, "acc_std": 0.0035, "val_acc": 0.7611, "seeds": 2, "extra_storage_bytes": 311500,
       "seconds_per_student": 39.5, "accs": [0.751, 0.758]}  # fmt: skip
STUDENTS = {"ipc": 10, "epochs": 120, "test_images": 10000, "archs": ["resnet18"],
            "resnet18": {"projector": ROW, "hard": {**ROW, "acc": 0.6, "extra_storage_bytes": 0}},
            "images_bytes": 72935, "wall_seconds": 400.0}  # fmt: skip


def test_a_students_table_has_a_row_per_mode_with_mean_std_and_bytes(tmp_path):
    (tmp_path / "students.json").write_text(json.dumps(STUDENTS))
    table = render("students students.json", tmp_path).splitlines()
    assert table[2] == "| resnet18 | projector (helio) | 75.44 ± 0.35 | 76.11 | 311,500 | 40 |"
    assert table[3].startswith("| resnet18 | hard labels | 60.00 ± 0.35 |") and len(table) == 4


def test_a_students_table_puts_another_students_record_below_and_refuses_another_recipe(tmp_path):
    (tmp_path / "students.json").write_text(json.dumps(STUDENTS))
    convnet = {**STUDENTS, "archs": ["convnet3"], "convnet3": {"teacher": {**ROW, "acc": 0.8}}}
    (tmp_path / "convnet3.json").write_text(json.dumps({"name": "convnet3", "metrics": {"students": convnet}}))
    table = render("students students.json convnet3.json", tmp_path).splitlines()
    assert table[4] == "| convnet3 | full teacher (RDED) | 80.00 ± 0.35 | 76.11 | 311,500 | 40 |" and len(table) == 5
    (tmp_path / "longer.json").write_text(json.dumps({**STUDENTS, "epochs": 300}))
    with pytest.raises(HelioError, match="longer.json: IPC/epochs 10/300"):
        render("students students.json longer.json", tmp_path)


def test_a_label_sources_table_puts_every_source_against_the_full_teacher_on_val(tmp_path):
    teacher = {**ROW, "acc": 0.8, "val_acc": 0.8011, "extra_storage_bytes": 44_800_000}
    record = {"name": "label-net-300", "metrics": {"students": {**STUDENTS, "epochs": 300,
              "resnet18": {"projector": ROW, "teacher": teacher}}}}  # fmt: skip
    (tmp_path / "record.json").write_text(json.dumps(record))
    (tmp_path / "students.json").write_text(json.dumps(STUDENTS))  # no teacher row: no difference to show
    variant = {"name": "wider", "metrics": {"students": {**STUDENTS, "epochs": 300, "resnet18": {"label_net": ROW}}}}
    (tmp_path / "variant.json").write_text(json.dumps(variant))  # the same images: against label-net-300's teacher
    table = render("label_sources record.json students.json variant.json", tmp_path).splitlines()
    assert table[2] == (
        "| label-net-300 | resnet18 | 300 | 10 | projector (helio) | 2 | 75.44 ± 0.35 | 76.11 | -4.00 | 311,500 |"
    )
    assert table[3].startswith("| label-net-300 | resnet18 | 300 | 10 | full teacher (RDED) |")
    assert table[3].endswith("| 80.11 | +0.00 | 44,800,000 |")
    assert table[4].startswith(f"| {tmp_path / 'students.json'} | resnet18 | 120 | 10 | projector (helio) |")
    assert table[4].endswith("| – | 311,500 |") and len(table) == 7
    assert table[6].startswith("| wider | resnet18 | 300 | 10 | label network (distilled) | 2 |")
    assert table[6].endswith("| 76.11 | -4.00 (vs label-net-300) | 311,500 |")


def test_a_paired_seeds_table_pools_per_seed_differences_to_the_teacher_over_runs(tmp_path):
    teacher = {**ROW, "accs": [0.79, 0.81], "val_accs": [0.80, 0.82], "extra_storage_bytes": 44_800_000}
    light = {**ROW, "accs": [0.78, 0.80], "val_accs": [0.79, 0.83], "extra_storage_bytes": 2_300_000}
    one = {**light, "seeds": 1, "accs": [0.80], "val_accs": [0.80]}
    runs = {"teacher-run": ({"teacher": teacher}, {}), "light-run": ({"label_net": light}, {}),  # seeds 0, 1 (legacy)
            "both": ({"teacher": teacher, "label_net": {**light, "val_accs": [0.80, 0.82]}}, {}),
            "seed-1": ({"label_net": one}, {"student_seeds": [1]}),  # paired with seed 1 of the last teacher run
            "seed-7": ({"label_net": one}, {"student_seeds": [7]})}  # fmt: skip
    for name, (rows, seeds) in runs.items():
        students = {**STUDENTS, "resnet18": rows, **seeds}
        (tmp_path / f"{name}.json").write_text(json.dumps({"name": name, "metrics": {"students": students}}))
    table = render("paired_seeds teacher-run.json light-run.json both.json seed-1.json", tmp_path).splitlines()
    # val differences -1, +1, 0, 0, -2 points: mean -0.4, s.e. sqrt(5.2/4/5); test: -1, -1, -1, -1, -1
    assert table[2] == (
        "| resnet18 | 120 | 10 | label network (distilled) | 2,300,000 | light-run, both, seed-1 | 5 "
        "| 0: -1.00, 1: +1.00, 0: +0.00, 1: +0.00, 1: -2.00 | -0.40 ± 0.51 | -1.00 ± 0.00 |"
    )
    assert len(table) == 3
    with pytest.raises(HelioError, match="light-run.json: resnet18 label_net has no earlier teacher-labelled"):
        render("paired_seeds light-run.json teacher-run.json", tmp_path)
    with pytest.raises(HelioError, match=r"seed-7.json: resnet18 label_net .* for its seeds \[7\]"):
        render("paired_seeds teacher-run.json seed-7.json", tmp_path)


def test_paired_seeds_tells_two_label_files_of_one_size_apart_by_their_recorded_sha256(tmp_path):
    teacher = {**ROW, "accs": [0.79, 0.81], "val_accs": [0.80, 0.82], "extra_storage_bytes": 44_800_000}
    light = {**ROW, "accs": [0.78, 0.80], "val_accs": [0.79, 0.83], "extra_storage_bytes": 2_300_000}
    runs = {"a": ({"teacher": teacher, "label_net": light}, "aa"), "b": ({"label_net": light}, "bb"),
            "a-again": ({"label_net": light}, "aa")}  # fmt: skip
    for name, (rows, sha) in runs.items():
        students = {**STUDENTS, "resnet18": rows, "label_files_sha256": {"label_net": sha}}
        (tmp_path / f"{name}.json").write_text(json.dumps({"name": name, "metrics": {"students": students}}))
    table = render("paired_seeds a.json b.json a-again.json", tmp_path).splitlines()
    assert [row.split(" | ")[5] for row in table[2:]] == ["a, a-again", "b"]
    assert [row.split(" | ")[6] for row in table[2:]] == ["4", "2"]


def test_a_cross_arch_table_has_a_row_per_arch_of_stage_metrics_and_of_records(tmp_path):
    teacher = {**ROW, "acc": 0.7644, "val_acc": 0.7511, "seconds_per_student": 41.0}
    stage = {**STUDENTS, "resnet18": {"projector": ROW, "teacher": teacher}}
    (tmp_path / "resnet18.json").write_text(json.dumps(stage))
    swin = {"projector": {**ROW, "acc": 0.7, "acc_std": 0.01}, "teacher": teacher}
    both = {**stage, "archs": ["resnet18", "swin_v2_t"], "swin_v2_t": swin}
    record = {"name": "xarch", "metrics": {"students": both}}
    (tmp_path / "xarch.json").write_text(json.dumps(record))
    table = render("cross_arch resnet18.json xarch.json", tmp_path).splitlines()
    assert table[2] == "| resnet18 | 75.44 ± 0.35 | 76.11 | 76.44 ± 0.35 | 75.11 | -1.00 (+1.00) | 40 / 41 |"
    assert table[3] == table[2] and len(table) == 5
    assert table[4] == "| swin_v2_t | 70.00 ± 1.00 | 76.11 | 76.44 ± 0.35 | 75.11 | -6.44 (+1.00) | 40 / 41 |"
    (tmp_path / "longer.json").write_text(json.dumps({**stage, "epochs": 300}))
    with pytest.raises(HelioError, match="longer.json: IPC/epochs 10/300"):
        render("cross_arch resnet18.json longer.json", tmp_path)


def test_a_selection_table_puts_each_label_mode_against_random_images_with_the_same_labels(tmp_path):
    (tmp_path / "students.json").write_text(json.dumps(STUDENTS))
    weaker = {**ROW, "acc": 0.7, "acc_std": 0.01, "val_acc": 0.7811}
    record = {"name": "random-ipc10", "metrics": {"students": {**STUDENTS, "resnet18": {"projector": weaker}}}}
    (tmp_path / "random.json").write_text(json.dumps(record))
    table = render("selection students.json random.json", tmp_path).splitlines()
    row = "| resnet18 | 10 | 120 | projector (helio) | 75.44 ± 0.35 | 76.11 | 70.00 ± 1.00 | 78.11 | -2.00 / +5.44 |"
    assert table[2] == row
    assert len(table) == 3  # hard labels: no random-selection students to put them against
    other_epochs = {**record, "metrics": {"students": {**record["metrics"]["students"], "epochs": 300}}}
    (tmp_path / "random.json").write_text(json.dumps(other_epochs))
    with pytest.raises(HelioError, match="random.json: IPC/epochs 10/300, .*10/120: compare like with like"):
        render("selection students.json random.json", tmp_path)
    fewer_seeds = {**record["metrics"]["students"], "resnet18": {"projector": {**weaker, "seeds": 1}}}
    (tmp_path / "random.json").write_text(json.dumps(fewer_seeds))
    with pytest.raises(HelioError, match="resnet18 projector has 1 seeds, .* 2: train the same student seeds"):
        render("selection students.json random.json", tmp_path)


def test_a_parts_table_says_what_the_selection_the_refinement_and_the_labels_each_add(tmp_path):
    (tmp_path / "students.json").write_text(json.dumps(STUDENTS))
    hard = STUDENTS["resnet18"]["hard"]
    unrefined = {**STUDENTS, "resnet18": {"projector": {**ROW, "acc": 0.7444, "val_acc": 0.7711}, "hard": hard}}
    random = {**STUDENTS, "resnet18": {"projector": {**ROW, "acc": 0.7344, "val_acc": 0.7311}, "hard": hard}}
    (tmp_path / "unrefined.json").write_text(json.dumps({"name": "unrefined", "metrics": {"students": unrefined}}))
    (tmp_path / "random.json").write_text(json.dumps(random))
    table = render("parts students.json unrefined.json random.json", tmp_path).splitlines()
    projector = "| resnet18 | 10 | 120 | projector (helio) | 75.44 ± 0.35 (76.11) "
    assert table[2] == projector + "| +3.00 / +2.00 | -1.00 / +1.00 | +0.00 / +15.44 |"
    assert table[3].endswith("| +0.00 / +0.00 | +0.00 / +0.00 | +0.00 / +0.00 |") and len(table) == 4
    (tmp_path / "random.json").write_text(json.dumps({**random, "ipc": 1}))
    with pytest.raises(HelioError, match="random.json: IPC/epochs 1/120, .*10/120: compare like with like"):
        render("parts students.json unrefined.json random.json", tmp_path)
    (tmp_path / "random.json").write_text(json.dumps(random))
    no_hard = {**STUDENTS, "resnet18": {"projector": ROW}}
    (tmp_path / "students.json").write_text(json.dumps(no_hard))
    with pytest.raises(HelioError, match="students.json: resnet18 has no hard-label students; .*train label mode hard"):
        render("parts students.json unrefined.json random.json", tmp_path)


def test_a_versus_table_names_the_two_runs_and_the_first_ones_lead(tmp_path):
    (tmp_path / "students.json").write_text(json.dumps(STUDENTS))
    unrefined = {**STUDENTS, "resnet18": {"projector": {**ROW, "acc": 0.7444, "val_acc": 0.7711}}}
    (tmp_path / "u.json").write_text(json.dumps({"name": "unrefined-300", "metrics": {"students": unrefined}}))
    table = render("versus students.json u.json", tmp_path).splitlines()
    assert table[0].endswith(
        "| students: test % (val) | unrefined-300: test % (val) | students − unrefined-300: val / test |"
    )
    assert (
        table[2]
        == "| resnet18 | 10 | 120 | projector (helio) | 75.44 ± 0.35 (76.11) | 74.44 ± 0.35 (77.11) | -1.00 / +1.00 |"
    )
    assert len(table) == 3  # hard labels: only in the first run
    fewer = {**unrefined, "resnet18": {"projector": {**ROW, "seeds": 1}}}
    (tmp_path / "u.json").write_text(json.dumps(fewer))
    with pytest.raises(HelioError, match=r"u.json: resnet18 projector has 1 seeds, .*students.json 2: train the same"):
        render("versus students.json u.json", tmp_path)


def test_a_label_net_fits_table_shows_each_records_curve(tmp_path):
    fit = {
        "history": [{"epoch": 1, "kl": 0.5013}, {"epoch": 2, "kl": 0.20406}],
        "label_net_bytes": 582540,
        "shipped": {"kl": 0.2041, "acc": 0.858, "teacher_acc": 0.862, "agreement": 0.944},
        "fit_seconds": 746.2,
    }
    (tmp_path / "r.json").write_text(json.dumps({"name": "longer", "metrics": {"label_net": fit}}))
    table = render("label_net_fits r.json", tmp_path).splitlines()
    assert table[2] == "| longer | 2 | 0.501 → 0.204 | 94.4 | 85.8 (86.2) | 582,540 | 746 |" and len(table) == 3


def test_a_fidelity_table_averages_each_sources_streams_and_students_over_seeds(tmp_path):
    def pooled(kl, agreement):
        return {"epoch": "all", "views": 3072, "kl": kl, "agreement": agreement, "dark_rank_corr": 0.8651,
                "entropy_reference": 0.91, "entropy_labeller": 1.2}  # fmt: skip

    for seed, kl, val in ((0, 0.8, 0.7624), (1, 0.9, 0.7824)):  # each stream joined to its seed's students
        run = {"seed": seed, "every": 10, "student_epochs": 300, "ipc": 50, "reference": "teacher",
               "sources": {"projector": {"bytes": 311500, "all": pooled(kl, 0.8 + seed / 10),
                                         "students_test_acc": 0.7648, "students_val_acc": val},
                           "teachers": {"bytes": 90000000, "all": pooled(0.1, 1.0), "students_test_acc": None,
                                        "students_val_acc": None}}}  # fmt: skip
        (tmp_path / f"fidelity-default-seed{seed}.json").write_text(json.dumps(run))
    weak = {**run, "reference": "teachers", "sources": {"projector": run["sources"]["projector"]}}
    # the same run against another reference: a row of its own
    (tmp_path / "fidelity-default-seed1-weak.json").write_text(json.dumps(weak))
    table = render("fidelity fidelity-*.json", tmp_path).splitlines()
    assert table[2] == (
        "| default | 50 | projector (helio) | full teacher | seeds 0, 1 × 300 epochs | 311,500 | 0.850 | 0.850 "
        "| 0.865 | 0.910 / 1.200 | 76.48 | 77.24 |"
    )
    assert table[3].startswith("| default | 50 | weak teachers") and table[3].endswith("| – | – |")
    assert table[4].startswith("| default | 50 | projector (helio) | weak teachers | seeds 1 × 300 epochs |")
    assert len(table) == 5


def test_spearman_on_hand_computed_ranks_with_ties():
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(1.5 / 3**0.5)  # ranks (0.5, 0.5, 2) against (0, 1, 2)


def test_the_predictors_table_correlates_each_measure_with_the_students_within_each_ipc(tmp_path):
    def source(kl, agreement, val):
        pooled = {"kl": kl, "agreement": agreement, "dark_rank_corr": 1 - kl, "entropy_labeller": kl}
        return {"bytes": 1, "all": pooled, "students_test_acc": val, "students_val_acc": val}

    runs = {"a": (10, 0.1, 0.9, 0.8), "b": (10, 0.5, 0.95, 0.7), "c": (10, 0.9, 0.5, 0.6),
            "d": (50, 0.2, 0.5, 0.85), "e": (50, 0.1, 0.6, 0.9), "f": (50, 0.3, 0.7, 0.95),
            "g": (1, 0.1, 0.9, 0.5), "h": (1, 0.5, 0.9, 0.4)}  # fmt: skip
    for name, (ipc, kl, agreement, val) in runs.items():
        run = {"ipc": ipc, "reference": "teacher", "sources": {"projector": source(kl, agreement, val)}}
        (tmp_path / f"fidelity-{name}-seed0.json").write_text(json.dumps(run))
    against_weak = {
        "ipc": 10,
        "reference": "teachers",
        "sources": {"projector": source(0.0, 1.0, 0.1)},
    }  # left out: not vs teacher
    (tmp_path / "fidelity-a-seed0-weak.json").write_text(json.dumps(against_weak))
    table = render("fidelity_predictors fidelity-*.json", tmp_path).splitlines()
    # IPC 1 has two sources, too few to rank; within IPC 50 the KL runs the other way from IPC 10's
    assert table[0] == ("| measure on the students' views | IPC 10: Spearman with students' val % (3 label sources) "
                        "| IPC 50: Spearman with students' val % (3 label sources) |")  # fmt: skip
    assert (
        table[2] == "| KL·T² (lower is better) | -1.00 | +0.50 |" and table[3] == "| top-1 agreement | +0.50 | +1.00 |"
    )


def test_a_stale_block_is_regenerated_and_text_around_it_kept(tmp_path):
    (tmp_path / "students.json").write_text(json.dumps(STUDENTS))
    document = tmp_path / "doc.md"
    document.write_text("before\n<!-- table: students students.json -->\n| old |\n<!-- end table -->\nafter\n")
    text, changed = refresh(document, tmp_path)
    assert changed == ["students students.json"] and text.startswith("before\n") and text.endswith("after\n")
    assert "75.44 ± 0.35" in text and "| old |" not in text
    document.write_text(text)
    assert refresh(document, tmp_path) == (text, [])


def test_unknown_table_or_unreadable_source_is_one_line(tmp_path):
    with pytest.raises(HelioError, match="unknown table 'chart'"):
        render("chart x.json", tmp_path)
    with pytest.raises(HelioError, match="nothing.json: cannot read it as JSON"):
        render("students nothing.json", tmp_path)


def test_the_committed_docs_tables_are_generated_from_the_committed_files(monkeypatch):
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(app, ["report", "--check"])
    assert result.exit_code == 0, result.output


def test_a_dd_ranking_table_scores_the_distilled_students_against_random_images_and_the_full_data(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())  # fair.weight 0.5
    accs = {"syn": {"hard": [0.60, 0.62], "teacher": [0.80, 0.82], "projector": [0.7, 0.7]},
            "random": {"hard": [0.55, 0.56], "teacher": [0.78, 0.79]}, "full": {"hard": [0.93, 0.91]}}  # fmt: skip
    for name, modes in accs.items():
        rows = {mode: {"acc": sum(a) / len(a), "accs": a} for mode, a in modes.items()}
        students = {"ipc": 10, "epochs": 120, "archs": ["resnet18"], "resnet18": rows}
        (tmp_path / f"{name}.json").write_text(json.dumps({"name": name, "metrics": {"students": students}}))
    table = render("dd_ranking params.yaml syn.json random.json full.json", tmp_path).splitlines()
    # per seed: IOR 0.02, 0.03; HLR 0.92 - 0.60, 0.92 - 0.62; LRS as in tests/test_dd_ranking.py
    assert table[2] == ("| resnet18 | 10 | 120 | full teacher (RDED) | 92.00 | +2.50 ± 0.50 | 31.00 ± 1.00 "
                        "| 0.2124 ± 0.0028 | – |")  # fmt: skip
    assert table[3].startswith("| resnet18 | 10 | 120 | hard labels | 92.00 | +5.50 ± 0.50 |") and len(table) == 4


def test_a_scale_table_puts_each_stage_at_every_size_and_its_peak_growth(tmp_path):
    rows = [{"images": n, "revision": "after", "stage": "prepare", "seconds": n / 100, "mib": mib}
            for n, mib in ((2000, 1000.0), (8000, 1100.0), (32000, 1250.0))]  # fmt: skip
    old = [{"images": 2000, "revision": "before", "stage": "prepare", "seconds": 20.4, "mib": 5000.0},
           {"images": 8000, "revision": "before", "stage": "prepare", "seconds": 84.0, "mib": 20000.0}]  # fmt: skip
    (tmp_path / "new.json").write_text(json.dumps({"after": "abc1234", "date": "2026-12-02", "rows": rows}))
    (tmp_path / "old.json").write_text(json.dumps({"before": "dbe55c3", "date": "2026-11-30", "rows": old}))
    table = render("scale old.json new.json", tmp_path).splitlines()
    assert table[0] == ("| run | stage | 2,000 images: s / MiB | 8,000 images: s / MiB | 32,000 images: s / MiB "
                        "| peak MiB, largest / smallest |")  # fmt: skip
    assert table[2] == "| before (dbe55c3, 2026-11-30) | prepare | 20 / 5,000 | 84 / 20,000 | – | 4.00x |"
    assert table[3] == "| after (abc1234, 2026-12-02) | prepare | 20 / 1,000 | 80 / 1,100 | 320 / 1,250 | 1.25x |"


def test_the_run_tables_refinement_row_says_when_the_images_were_left_as_they_are():
    refine = {"before": {"agreement": 0.94}, "after": {"agreement": 0.93}}
    assert refined_row({**refine, "enabled": True}) == "projector/teacher agreement on the images 94.0 % → 93.0 %"
    assert refined_row({**refine, "enabled": False}).startswith("off: the selected images as they are")
