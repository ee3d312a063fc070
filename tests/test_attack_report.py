"""The report's attacks x methods section, from records made by hand: the entries are the chosen settings' C-Acc /
ASR / RA, DER against the original of the same seed, attacks named by their trigger and options."""
from __future__ import annotations

import json

import pytest

from corrective_unlearning.report.attacks import attack_label, attack_sections


def _record(variant_params: dict, method: str, rate: float, seed: int, c_acc: float, asr: float, ra: float,
            **flags) -> dict:
    params = json.dumps(variant_params, sort_keys=True, separators=(",", ":"))
    return {"manipulation": "poison", "manipulation_variant": f"poison {params}", "n": 600, "seed": seed,
            "method": method, "rate": rate, "dataset": "fashion-mnist", "model": "small_cnn", "status": "ok",
            "metrics": {"c_acc": c_acc, "asr": asr, "ra": ra}, "selected": True, "guarded": True, **flags}


BLEND = {"trigger": {"name": "blend", "alpha": 0.2}}
SIG = {"trigger": {"name": "sig", "delta": 100}, "clean_label": True}


def test_attack_labels_name_the_trigger_and_its_options():
    assert attack_label({"manipulation_variant": 'poison {"pattern":"checkerboard"}'}) == "patch (checkerboard)"
    assert attack_label({"manipulation_variant": 'poison {"target":"all-to-all"}'}) == "patch all-to-all"
    assert attack_label({"manipulation_variant": "poison " + json.dumps(SIG)}) == "sig clean-label"
    assert attack_label({"manipulation_variant": "poison"}) == "patch"


def test_entries_are_seed_means_with_der_against_each_seeds_original(tmp_path):
    records = [
        _record(BLEND, "original", 0.0, 0, 87.0, 96.0, 3.0), _record(BLEND, "original", 0.0, 1, 86.0, 98.0, 1.0),
        _record(BLEND, "ssd", 0.1, 0, 85.0, 6.0, 80.0), _record(BLEND, "ssd", 0.1, 1, 86.0, 18.0, 70.0),
        _record(BLEND, "ssd", 0.1, 0, 10.0, 0.0, 10.0, selected=False, guarded=False),  # not chosen: left out
        _record(SIG, "original", 0.0, 0, 87.2, 98.4, 1.3), _record(SIG, "ssd", 0.1, 0, 88.0, 99.0, 1.0),
    ]
    lines, figures = attack_sections(records, ["ssd"], tmp_path)
    text = "\n".join(lines)
    # blend: C-Acc (85 + 86) / 2, ASR (6 + 18) / 2, RA (80 + 70) / 2; DER per seed from the formula, then the mean
    der_0 = ((96 - 6) / 100 - (87 - 85) / 100 + 1) / 2
    der_1 = ((98 - 18) / 100 - 0 + 1) / 2
    assert f"| blend | 86.5 / 97.0 / 2.0 | 85.5 / 12.0 / 75.0 / {(der_0 + der_1) / 2:.2f} |" in text
    # sig: ASR rose and C-Acc rose, both count as zero: DER 0.5
    assert "| sig clean-label | 87.2 / 98.4 / 1.3 | 88.0 / 99.0 / 1.0 / 0.50 |" in text
    assert "### Discovery rate 10%: paper rule" in text and "### Discovery rate 10%: guarded rule" in text
    assert [p.name for p in figures] == ["attacks-ra.png", "attacks-ra-guarded.png"]
    assert all(p.stat().st_size > 0 for p in figures)


def test_no_section_without_a_backdoor(tmp_path):
    record = _record(BLEND, "ssd", 0.1, 0, 85.0, 6.0, 80.0)
    record.update(manipulation="interclass", metrics={"test_acc": 80.0})
    assert attack_sections([record], ["ssd"], tmp_path) == ([], [])


@pytest.mark.parametrize("flag", ["selected", "guarded"])
def test_each_rule_reads_its_own_choice(tmp_path, flag):
    other = "guarded" if flag == "selected" else "selected"
    records = [_record(BLEND, "original", 0.0, 0, 87.0, 96.0, 3.0),
               _record(BLEND, "ssd", 0.1, 0, 85.0, 6.0, 80.0, **{flag: True, other: False}),
               _record(BLEND, "ssd", 0.1, 0, 70.0, 50.0, 40.0, **{flag: False, other: True})]
    text = "\n".join(attack_sections(records, ["ssd"], tmp_path)[0])
    rule = "paper rule" if flag == "selected" else "guarded rule"
    section = text.split(f"### Discovery rate 10%: {rule}")[1].split("###")[0]
    assert "85.0 / 6.0 / 80.0" in section and "70.0 / 50.0" not in section
