"""report.claim (claims in prose are checked by a cell) and mmcourse.results (full-profile records)."""
from __future__ import annotations

import json

import pytest

from mmcourse import report, results


def test_claim_prints_records_and_raises_only_in_strict_mode(tmp_path, monkeypatch, capsys):
    record = tmp_path / "r.jsonl"
    monkeypatch.setenv(report.RECORD_ENV, str(record))
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "0")
    report.claim("two is more than one", 2 > 1, "2 vs 1")  # returns nothing: no stray "True" in a cell
    report.claim("one is more than two", 1 > 2)
    out = capsys.readouterr().out
    assert "✓ claim (this run): two is more than one [2 vs 1]" in out
    assert "✗ claim (this run): one is more than two — does NOT hold" in out
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    with pytest.raises(report.ClaimFailed, match="one is more than two"):
        report.claim("one is more than two", False)
    claims = report.read_record(record)["claims"]
    assert [c["holds"] for c in claims] == [True, False, False]


def test_results_record_has_provenance_and_is_shown_beside_this_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    row = {"notebook": "99_demo", "status": "ok", "profile": "full", "seconds": 120.0,
           "metrics": {"acc_full": 0.9}, "claims": [{"text": "x", "holds": True}], "data_sources": {}}
    path = results.write(row, "python -m mmcourse run --profile full --record 99_demo")
    record = json.loads(path.read_text())
    assert all(record[k] for k in results.PROVENANCE) and record["hardware"]["cores"]
    assert results.metric("99_demo", "acc_full") == 0.9 and results.metric("99_demo", "nope") is None
    results.show("99_demo", {"acc_smoke": 0.5})
    out = capsys.readouterr().out
    assert "acc_full" in out and "0.5" in out and "0.9" in out and "full-profile record: profile full" in out
    with pytest.raises(ValueError, match="only a successful full-profile run"):
        results.write(dict(row, profile="smoke"), "cmd")


def test_missing_record_shows_this_run_and_says_how_to_make_it(capsys):
    assert results.load("no_such_notebook") is None
    results.show("no_such_notebook", {"acc_smoke": 0.61})
    out = capsys.readouterr().out
    assert "acc_smoke" in out and "0.61" in out and "--profile full --record no_such_notebook" in out


def test_every_committed_record_has_provenance_and_no_broken_claim():
    paths = sorted(results.RESULTS_DIR.glob("*.json"))
    for path in paths:
        record = json.loads(path.read_text())
        assert record["profile"] == "full" and record["metrics"], path
        missing = [k for k in results.PROVENANCE if not record.get(k)]
        assert not missing, f"{path.name} lacks provenance: {missing}"
        broken = [c["text"] for c in record.get("claims", []) if c["holds"] is False]
        assert not broken, f"{path.name} records broken claims: {broken}"


def test_full_profile_claims_are_checked_against_the_record(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    report.claim_full("99_demo", "acc above 0.8", lambda m: m["acc_full"] > 0.8)
    assert "no record yet" in capsys.readouterr().out  # unchecked, said so, not raised
    row = {"notebook": "99_demo", "status": "ok", "profile": "full", "seconds": 60.0,
           "metrics": {"acc_full": 0.9}, "data_sources": {}}
    results.write(row, "python -m mmcourse run --profile full --record 99_demo")
    report.claim_full("99_demo", "acc above 0.8", lambda m: m["acc_full"] > 0.8, lambda m: f"acc {m['acc_full']}")
    assert "✓ claim (full-profile record of" in capsys.readouterr().out
    with pytest.raises(report.ClaimFailed, match="acc above 0.95"):
        report.claim_full("99_demo", "acc above 0.95", lambda m: m["acc_full"] > 0.95)
    with pytest.raises(report.ClaimFailed, match="has no metric"):
        report.claim_full("99_demo", "recall is high", lambda m: m["recall_full"] > 0.5)


def test_a_full_run_checks_its_full_claims_on_its_own_metrics(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)  # no committed record
    monkeypatch.setattr(report, "_LOGGED", {})
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    report.log_metric("acc_full", 0.9)
    report.claim_full("99_demo", "acc above 0.8", lambda m: m["acc_full"] > 0.8)
    assert "✓ claim (this full-profile run): acc above 0.8" in capsys.readouterr().out
    with pytest.raises(report.ClaimFailed):
        report.claim_full("99_demo", "acc above 0.95", lambda m: m["acc_full"] > 0.95)


def test_a_quiet_metric_is_recorded_without_printing(monkeypatch, capsys):
    monkeypatch.setattr(report, "_LOGGED", {})
    report.log_metric("bleu4_full", 21.0, quiet=True)
    assert capsys.readouterr().out == "" and report._LOGGED["bleu4_full"] == 21.0
