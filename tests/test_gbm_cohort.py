"""`bilo gbm cohort`: the table from summary.json files, resume, failures, folder discovery
(mocked runners: instant), and one slow run of two real patients under --np 2."""

import argparse
import json
import shutil
import time

import pytest

from apps.gbm import cohort
from apps.gbm.cohort import (
    Outcome,
    add_cohort_arguments,
    discover,
    exit_status,
    read_table,
    row_from_summary,
    run_cohort,
    write_table,
)
from apps.gbm.pipeline import EXIT_NOT_A_SOLUTION


def _summary(passed=True, method="bilo", params=None, physical=None, posterior=None,
             coverage=None, dice=None, wall_s=12.5) -> dict:
    """A summary.json of `bilo gbm run` with the fields the table reads."""
    blob = {"method": method, "problem": "gbm",
            "params": params or {"D": 1.25, "rho": 0.75, "th_wt": 0.3, "th_tc": 0.6},
            "physical": physical or {"D_mm2_per_age": 5.0, "rho_per_age": 3.75},
            "dice": dice or {"WT_NN": 0.9, "TC_NN": 0.8, "WT_FEM": 0.91, "TC_FEM": 0.79},
            "check": {"u_rel_l2_vs_fem": 0.03 if passed else 0.25, "u_tolerance": 0.05,
                      "dice_gap": 0.01, "dice_tolerance": 0.02, "passed": passed},
            "warnings": [] if passed else ["u_NN is not the PDE's solution at the answer"],
            "plans": {"margin_mm": 15.0, "area_mm2": 1000.0},
            "wall_s": wall_s}
    if coverage is not None:
        blob["plans"]["coverage"] = coverage
    if posterior is not None:
        blob["posterior"] = posterior
    return blob


def _write_summary(out, name, blob):
    (out / name).mkdir(parents=True, exist_ok=True)
    (out / name / "summary.json").write_text(json.dumps(blob))


def _make_patients(root, names):
    """Folders holding seg/wm/gm files (empty: discovery reads names only)."""
    for name in names:
        (root / name).mkdir(parents=True)
        for role in ("seg", "wm", "gm"):
            (root / name / f"{role}.nii.gz").write_bytes(b"")


def _args(cohort_dir, out, *extra):
    parser = add_cohort_arguments(argparse.ArgumentParser())
    return parser.parse_args([str(cohort_dir), "--out", str(out), *extra])


def _quiet(line):
    pass


def test_rows_from_summaries(tmp_path):
    """Four hand-written summaries: ok (bilo), check failed, hmc with intervals, a follow-up
    with τ, days and coverage. Each row holds exactly its summary's values; the union of the
    columns is grouped (parameters before physical values before intervals ...), and a column
    a row lacks is empty."""
    hmc = _summary(method="hmc", posterior={"intervals": {
        "D": {"mean": 1.3, "sd": 0.2, "q05": 0.9, "q50": 1.25, "q95": 1.7},
        "D*rho": {"mean": 1.0, "sd": 0.1, "q05": 0.8, "q50": 1.0, "q95": 1.2}}})
    followup = _summary(
        params={"D": 1.5, "rho": 0.5, "th_wt": 0.25, "th_tc": 0.65, "tau": 0.4},
        physical={"D_mm2_per_age": 6.0, "rho_per_age": 2.5, "T_days": 250.0,
                  "D_mm2_per_day": 0.024, "rho_per_day": 0.01},
        dice={"WT_NN": 0.9, "TC_NN": 0.8, "WT_FEM": 0.91, "TC_FEM": 0.79,
              "WT_NN_followup": 0.85, "TC_NN_followup": 0.7, "WT_FEM_followup": 0.86,
              "TC_FEM_followup": 0.72},
        coverage={"standard": 0.81, "model": 0.9375})
    rows = [row_from_summary("p_ok", _summary()),
            row_from_summary("p_failed", _summary(passed=False)),
            row_from_summary("p_hmc", hmc), row_from_summary("p_followup", followup)]
    write_table(tmp_path / "cohort.csv", rows)
    table = read_table(tmp_path / "cohort.csv")
    header = list(table[0])
    assert header == [
        "name", "status", "message", "method", "D", "rho", "th_wt", "th_tc", "tau",
        "D_mm2_per_age", "rho_per_age", "T_days", "D_mm2_per_day", "rho_per_day",
        "D_q05", "D_q95", "D*rho_q05", "D*rho_q95",
        "dice_WT_NN", "dice_TC_NN", "dice_WT_FEM", "dice_TC_FEM", "dice_WT_NN_followup",
        "dice_TC_NN_followup", "dice_WT_FEM_followup", "dice_TC_FEM_followup",
        "u_rel_l2_vs_fem", "coverage_standard", "coverage_model", "wall_s"]
    ok, failed, hmc_row, follow = table
    assert (ok["name"], ok["status"], ok["message"], ok["method"]) == ("p_ok", "ok", "", "bilo")
    assert float(ok["D"]) == 1.25 and float(ok["th_tc"]) == 0.6 and ok["tau"] == ""
    assert float(ok["rho_per_age"]) == 3.75 and ok["D_q05"] == "" and ok["coverage_model"] == ""
    assert float(ok["u_rel_l2_vs_fem"]) == 0.03 and float(ok["wall_s"]) == 12.5
    assert failed["status"] == "check failed"
    assert failed["message"] == "u_NN is not the PDE's solution at the answer"
    assert float(failed["u_rel_l2_vs_fem"]) == 0.25
    assert hmc_row["method"] == "hmc"
    assert [float(hmc_row[k]) for k in ("D_q05", "D_q95", "D*rho_q05", "D*rho_q95")] == [
        0.9, 1.7, 0.8, 1.2]
    assert float(follow["tau"]) == 0.4 and float(follow["T_days"]) == 250.0
    assert float(follow["D_mm2_per_day"]) == 0.024
    assert float(follow["dice_TC_FEM_followup"]) == 0.72
    assert (float(follow["coverage_standard"]), float(follow["coverage_model"])) == (0.81, 0.9375)
    assert follow["D_q05"] == ""


def test_numbers_are_written_in_full_precision(tmp_path):
    value = 0.1 + 0.2  # 0.30000000000000004: lost by a %g-style format
    write_table(tmp_path / "t.csv", [row_from_summary("p", _summary(params={"D": value}))])
    assert float(read_table(tmp_path / "t.csv")[0]["D"]) == value


def test_discovery_lists_patients_and_skipped_folders(tmp_path):
    """Patients are the folders with seg/wm/gm (any accepted names), by name; a folder missing
    a role or holding two files for one is skipped with the reason; files, hidden folders and
    OUT are ignored."""
    root = tmp_path / "cohort"
    _make_patients(root, ["b_patient", "a_patient"])
    brats = root / "BraTS2021_00001"
    brats.mkdir()
    for role in ("seg", "wm", "gm", "t1"):
        (brats / f"BraTS2021_00001_{role}.nii.gz").write_bytes(b"")
    (root / "no_wm").mkdir()
    (root / "no_wm" / "seg.nii.gz").write_bytes(b"")
    (root / "no_wm" / "gm.nii.gz").write_bytes(b"")
    _make_patients(root, ["two_segs"])
    (root / "two_segs" / "X_seg.nii.gz").write_bytes(b"")
    (root / ".hidden").mkdir()
    (root / "notes.txt").write_text("not a folder")
    out = root / "results"
    _make_patients(root, ["results"])  # OUT inside DIR, even holding patient-like names
    patients, skipped = discover(root, out)
    assert [name for name, _ in patients] == ["BraTS2021_00001", "a_patient", "b_patient"]
    assert patients[1][1] == root / "a_patient"
    assert [name for name, _ in skipped] == ["no_wm", "two_segs"]
    assert skipped[0][1].startswith("missing the wm role")
    assert "2 files for the seg role" in skipped[1][1]


def test_discovery_errors(tmp_path):
    with pytest.raises(cohort.InputError, match="does not exist"):
        discover(tmp_path / "nowhere")
    (tmp_path / "empty" / "junk").mkdir(parents=True)
    with pytest.raises(cohort.InputError, match="no patient folder.*junk: missing the seg"):
        run_cohort(_args(tmp_path / "empty", tmp_path / "out"), log=_quiet)
    with pytest.raises(cohort.InputError, match="is DIR itself"):
        run_cohort(_args(tmp_path / "empty", tmp_path / "empty"), log=_quiet)


class FakeRunner:
    """Stands in for `bilo gbm run`: writes a summary.json (or fails) per patient and records
    the calls. `fail`: name -> "input" (exit 2 with a message), "crash" (an exception in the
    worker), "check" (a summary whose check failed, exit 4)."""

    def __init__(self, fail=None):
        self.calls, self.fail = [], fail or {}

    def __call__(self, name, patient_dir, out_dir, options):
        self.calls.append((name, patient_dir, out_dir, options))
        kind = self.fail.get(name)
        if kind == "crash":
            raise RuntimeError(f"worker lost {name}\nsecond line")
        if kind == "input":
            return Outcome(name, 2, f"{patient_dir}/seg.nii.gz: unreadable NIfTI file", 0.5)
        from pathlib import Path

        _write_summary(Path(out_dir).parent, name,
                       _summary(passed=kind != "check", params={"D": float(len(name))}))
        return Outcome(name, EXIT_NOT_A_SOLUTION if kind == "check" else 0, "", 1.0)


def test_resume_skips_done_patients(tmp_path):
    """A first run does all three patients and passes the run options on; after one patient's
    summary.json is removed, a second run runs only that one, and rebuilds the others' rows
    from their files: the table is the same."""
    root, out = tmp_path / "cohort", tmp_path / "out"
    _make_patients(root, ["p1", "p22", "p333"])
    lines = []
    runner = FakeRunner()
    args = _args(root, out, "--pretrain-steps", "20", "--steps", "20", "--first-scan-only",
                 "--u-tolerance", "0.1")
    assert run_cohort(args, runner=runner, log=lines.append) == 0
    assert sorted(call[0] for call in runner.calls) == ["p1", "p22", "p333"]
    assert runner.calls[0][2] == str(out / runner.calls[0][0])
    assert runner.calls[0][3] == ["--pretrain-steps", "20", "--steps", "20",
                                  "--first-scan-only", "--u-tolerance", "0.1"]
    first = (out / "cohort.csv").read_text()
    assert [float(row["D"]) for row in read_table(out / "cohort.csv")] == [2.0, 3.0, 4.0]
    assert sum("started" in line for line in lines) == 3
    assert any("finished p333: ok" in line and "[3/3 done]" in line for line in lines)
    (out / "p22" / "summary.json").unlink()
    again, lines = FakeRunner(), []
    assert run_cohort(args, runner=again, log=lines.append) == 0
    assert [call[0] for call in again.calls] == ["p22"]
    assert any(line.startswith("cohort: p1 already done (ok") for line in lines)
    assert (out / "cohort.csv").read_text() == first
    assert run_cohort(args, runner=FakeRunner(), log=_quiet) == 0  # nothing left to run


def test_a_failing_patient_does_not_stop_the_others(tmp_path):
    """An input error, a crashed worker and a failed check among five patients: every patient
    gets its row, the errors with their one-line message, the exit status is 1; when only a
    check failed it is EXIT_NOT_A_SOLUTION; the errored patients run again on a re-run."""
    root, out = tmp_path / "cohort", tmp_path / "out"
    _make_patients(root, ["a", "b", "c", "d", "e"])
    runner = FakeRunner(fail={"b": "input", "c": "crash", "d": "check"})
    assert run_cohort(_args(root, out), runner=runner, log=_quiet) == 1
    table = {row["name"]: row for row in read_table(out / "cohort.csv")}
    assert [table[n]["status"] for n in "abcde"] == ["ok", "error", "error", "check failed", "ok"]
    assert table["b"]["message"] == f"{root / 'b'}/seg.nii.gz: unreadable NIfTI file"
    assert table["c"]["message"] == "RuntimeError: worker lost c"
    assert table["b"]["D"] == "" and float(table["e"]["D"]) == 1.0
    retry = FakeRunner(fail={"b": "check"})
    assert run_cohort(_args(root, out), runner=retry, log=_quiet) == EXIT_NOT_A_SOLUTION
    assert sorted(call[0] for call in retry.calls) == ["b", "c"]


def test_missing_or_unreadable_summaries(tmp_path):
    """A run that exits 0 but leaves no summary.json is an error; a truncated summary.json
    found on resuming is no finished patient: it runs again."""
    root, out = tmp_path / "cohort", tmp_path / "out"
    _make_patients(root, ["quiet", "truncated"])
    (out / "truncated").mkdir(parents=True)
    (out / "truncated" / "summary.json").write_text('{"method": ')
    runner = FakeRunner()

    def without_summary(name, *rest):
        return Outcome(name, 0, "", 1.0) if name == "quiet" else runner(name, *rest)

    lines = []
    assert run_cohort(_args(root, out), runner=without_summary, log=lines.append) == 1
    assert any("truncated" in line and "unreadable" in line and "running it again" in line
               for line in lines)
    table = {row["name"]: row for row in read_table(out / "cohort.csv")}
    assert table["quiet"]["status"] == "error"
    assert table["quiet"]["message"] == ("bilo gbm run exited with status 0 but wrote no "
                                         "summary.json")
    assert table["truncated"]["status"] == "ok"


def test_the_table_is_rewritten_after_every_patient(tmp_path):
    """While the second patient runs, the first one's row is already in cohort.csv."""
    root, out = tmp_path / "cohort", tmp_path / "out"
    _make_patients(root, ["first", "second"])
    seen = []
    runner = FakeRunner()

    def watching(name, *rest):
        if name == "second":
            seen.append([row["name"] for row in read_table(out / "cohort.csv")])
        return runner(name, *rest)

    run_cohort(_args(root, out), runner=watching, log=_quiet)
    assert seen == [["first"]]
    assert not [p for p in out.iterdir() if p.name.startswith(".cohort.csv")]  # no temp left


def test_exit_status_and_options():
    assert exit_status(["ok", "ok"]) == 0
    assert exit_status(["ok", "check failed"]) == EXIT_NOT_A_SOLUTION
    assert exit_status(["check failed", "error", "ok"]) == 1
    args = _args("d", "o", "--method", "hmc", "--chains", "1", "--detection-level", "0.1")
    assert cohort.forwarded_arguments(args) == ["--method", "hmc", "--detection-level", "0.1",
                                                "--chains", "1"]
    with pytest.raises(cohort.InputError, match="--np must be"):
        run_cohort(_args("d", "o", "--np", "0"), log=_quiet)


def test_error_line_of_a_run(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("== stage\nbilo gbm: error: bad.nii.gz: PET map has 1 NaN value(s)\n")
    assert cohort._error_line(log, 2) == "bad.nii.gz: PET map has 1 NaN value(s)"
    log.write_text("Traceback (most recent call last):\n  ...\nMemoryError: out of memory\n\n")
    assert cohort._error_line(log, 1) == "MemoryError: out of memory"
    log.write_text("== stage\n")
    assert cohort._error_line(log, -9) == "killed by SIGKILL after: == stage"


def test_children_are_standalone_mpi_processes(monkeypatch):
    """Under mpirun the patients' processes get none of the job's variables (mpirun's own
    OMPI_MCA_ess, ..._uri make a child look for its job and abort), only the OMPI_MCA_*
    settings the relaunching process recorded; outside mpirun the user's settings stay."""
    monkeypatch.setenv("OMPI_MCA_btl", "self,vader")
    env = cohort.standalone_env()
    assert env["OMPI_MCA_btl"] == "self,vader" and env["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "3")
    monkeypatch.setenv("PMIX_RANK", "1")
    monkeypatch.setenv("OMPI_MCA_ess", "^singleton")
    monkeypatch.setenv("BILO_COHORT_MCA", json.dumps({"OMPI_MCA_btl": "self,vader"}))
    env = cohort.standalone_env()
    assert not {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "OMPI_MCA_ess"} & set(env)
    assert env["OMPI_MCA_btl"] == "self,vader"


@pytest.mark.slow
@pytest.mark.mpi
def test_two_patients_under_two_ranks(tmp_path, report):
    """data/patient_default twice (the second a copy), 20 + 20 steps, `bilo gbm cohort --np 2`
    (mpirun, two worker ranks, each patient an MPI singleton running its FEM in-process): both
    rows come back with the same numbers (same data, same seed, one thread each: the table does
    not depend on which rank ran a patient), 40 steps leave u_NN far from FEM (check failed,
    EXIT_NOT_A_SOLUTION); a re-run runs nothing and leaves the table as it was; --np 1 gives
    the same table (to 1e-10 in every number but the wall time)."""
    from bilo.cli import main

    root, out = tmp_path / "cohort", tmp_path / "out"
    root.mkdir()
    for name in ("p1", "p2"):
        shutil.copytree("data/patient_default", root / name)
    argv = ["gbm", "cohort", str(root), "--out", str(out), "--np", "2", "--pretrain-steps",
            "20", "--steps", "20"]
    started = time.perf_counter()
    status = main(argv)
    wall = time.perf_counter() - started
    report(f"two patients, 20 + 20 steps, --np 2: {wall:.0f} s")
    assert status == EXIT_NOT_A_SOLUTION
    rows = read_table(out / "cohort.csv")
    assert [row["name"] for row in rows] == ["p1", "p2"]
    assert [row["status"] for row in rows] == ["check failed", "check failed"]
    skip = {"name", "wall_s"}
    assert {k: v for k, v in rows[0].items() if k not in skip} == {
        k: v for k, v in rows[1].items() if k not in skip}
    for name in ("p1", "p2"):
        assert (out / name / "summary.json").exists() and (out / name / "report.png").exists()
    table = (out / "cohort.csv").read_text()
    started = time.perf_counter()
    assert main(argv) == EXIT_NOT_A_SOLUTION
    report(f"re-run with both done: {time.perf_counter() - started:.0f} s")
    assert (out / "cohort.csv").read_text() == table
    # --np 1 (the patients one after another in this process's pool): the same table
    argv[argv.index("--out") + 1], argv[argv.index("--np") + 1] = str(tmp_path / "one"), "1"
    started = time.perf_counter()
    assert main(argv) == EXIT_NOT_A_SOLUTION
    report(f"the same with --np 1: {time.perf_counter() - started:.0f} s")
    serial = read_table(tmp_path / "one" / "cohort.csv")
    assert [list(row) for row in serial] == [list(row) for row in rows]
    for one, two in zip(serial, rows, strict=True):
        for column in set(one) - skip:
            try:
                assert float(one[column]) == pytest.approx(float(two[column]), abs=1e-10,
                                                           rel=0), column
            except ValueError:  # text
                assert one[column] == two[column], column
