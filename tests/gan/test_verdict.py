"""The "axes found / not found" verdict of `ganforge eval` follows the measurements, and a grid whose
cells the classifier reads as the wrong classes is never "found"."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import RealImages

from ganforge.gan.latent_metrics import category_agreement, continuous_codes
from ganforge.gan.latents import LatentSpec
from ganforge.gan.verdict import format_verdict, latent_verdict


def _confusion(drawn: list[int], right: float = 0.95, n: int = 100) -> list[list[int]]:
    """Code value v draws class drawn[v] on a share `right` of its n images, the rest spread."""
    rows = []
    for d in drawn:
        row = [round(n * (1 - right) / 9)] * 10
        row[d] = n - sum(row) + row[d]
        rows.append(row)
    return rows


def _cont(slant_rho: float, width_rho: float, kept=(1.0, 1.0), changes=([], [])) -> dict:
    codes = {"c1": {"slant": slant_rho, "width": 0.1, "class_kept": kept[0], "class_changes": changes[0]},
             "c2": {"slant": 0.1, "width": width_rho, "class_kept": kept[1], "class_changes": changes[1]}}
    return {"codes": codes, "slant_code": "c1", "width_code": "c2"}


def test_a_run_that_meets_every_goal_is_found():
    record = {"infogan": {"categorical": {"agreement": 0.95, "confusion": _confusion(list(range(10)))},
                          "continuous": _cont(-0.95, 0.85)}}
    verdict = latent_verdict(record)
    assert verdict["found"] and verdict["advice"] is None and len(verdict["checks"]) == 3
    assert format_verdict(verdict)[0] == "latent axes: every one found"


@pytest.mark.parametrize("categorical, continuous, words", [
    # seed 2 of issue 29: two values draw 1, two draw 9, none draws 4 or 7 (agreement 0.838)
    ({"agreement": 0.838, "confusion": _confusion([0, 1, 1, 2, 3, 5, 6, 8, 9, 9])}, _cont(-0.96, 0.41,
     kept=(0.55, 1.0), changes=([[9, 4, 30], [1, 7, 12], [3, 5, 3]], [])),
     ["class 1 is drawn by code values 1, 2", "class 9 is drawn by code values 8, 9",
      "no code value draws classes 4, 7", "it changes the class along 45% of its sweeps", "9→4 (30)",
      "1→7 (12)", "|rho| with width is 0.41 (goal 0.8)"]),
    # agreement above the goal cannot hide a class that no value draws
    ({"agreement": 0.92, "confusion": _confusion([0, 1, 2, 3, 4, 5, 6, 7, 8, 8])}, _cont(-0.95, 0.85),
     ["class 8 is drawn by code values 8, 9", "no code value draws class 9"]),
    # a strong correlation with slant does not count when the code turns one digit into another
    ({"agreement": 0.95, "confusion": _confusion(list(range(10)))}, _cont(0.97, 0.9, kept=(0.8, 1.0),
     changes=([[7, 1, 20]], [])), ["c1: did not find the slant axis", "7→1 (20)"]),
])
def test_a_missed_axis_is_named_with_its_classes_and_what_to_try(categorical, continuous, words):
    verdict = latent_verdict({"infogan": {"categorical": categorical, "continuous": continuous}})
    text = "\n".join(format_verdict(verdict))
    assert not verdict["found"] and "NOT all found" in text and "diffaugment=translation" in text
    for w in words:
        assert w in text, (w, text)


def test_a_conditional_run_below_its_goal_names_the_classes():
    per_class = {str(k): 0.95 for k in range(10)} | {"3": 0.4, "8": 0.55}
    fidelity = {"mean": float(np.mean(list(per_class.values()))), "per_class": per_class, "ceiling_mean": 0.98}
    verdict = latent_verdict({"class_fidelity": fidelity})
    assert not verdict["found"] and "3 (40%), 8 (55%)" in verdict["checks"][0]["text"]
    fidelity = {"mean": 0.95, "per_class": {str(k): 0.95 for k in range(10)}}
    assert latent_verdict({"class_fidelity": fidelity})["found"]


@pytest.mark.usefixtures("shared_metrics_cache")
def test_grids_the_classifier_reads_as_wrong_classes_are_never_found():
    from ganforge.data import load_dataset
    from ganforge.metrics.feature_nets import get_feature_net

    net, test = get_feature_net("digits", quiet=True), load_dataset("digits", split="test", quiet=True)
    spec, n = LatentSpec(4, categorical=10, continuous=2), 10 * int(torch.bincount(test.labels).min())
    # real digits as the "generator": a one-to-one code is found, whatever order it found the classes in
    good = category_agreement(RealImages.by_category(test, [3, 1, 4, 0, 5, 9, 2, 6, 8, 7]), spec, net, n=n, seed=0)
    assert latent_verdict({"infogan": {"categorical": good}})["found"]
    # values 2 and 5 draw 1s, 7 and 8 draw 9s; no value draws 4 or 7
    bad = category_agreement(RealImages.by_category(test, [0, 1, 1, 2, 3, 1, 6, 9, 9, 5]), spec, net, n=n, seed=0)
    verdict = latent_verdict({"infogan": {"categorical": bad}})
    check = verdict["checks"][0]
    assert not verdict["found"] and check["missing"] == [4, 7, 8] and check["twice"] == {"1": [1, 2, 5],
                                                                                        "9": [7, 8]}
    # a run trained without the README's options is told them; one trained with them, to change the seed
    for invariance, axes in (("", ""), ("rotation,thickness", ""), (None, None)):
        advice = latent_verdict({"infogan": {"categorical": bad}}, invariance, axes)["advice"]
        assert "info_invariance=rotation,thickness info_axes=slant,width" in advice
    advice = latent_verdict({"infogan": {"categorical": bad}}, "rotation,thickness", "slant,width")["advice"]
    assert "info_axes" not in advice and "another --seed" in advice
    assert latent_verdict({"infogan": {"categorical": good}}, "")["advice"] is None

    # the first continuous code draws a 9 below 0 and a 4 above: it carries the class, not a style
    nine_to_four = RealImages(test, lambda codes: torch.where(codes[:, 10] < 0, 9, 4))
    cont = continuous_codes(nine_to_four, spec, sweeps=6, seed=0, net=net)
    assert cont["codes"]["c1"]["class_kept"] < 0.5 and cont["codes"]["c1"]["class_changes"][0][:2] == [9, 4]
    verdict = latent_verdict({"infogan": {"continuous": cont}})
    assert not verdict["found"] and "9→4" in "\n".join(format_verdict(verdict))


def test_the_report_shows_the_verdict(tmp_path):
    import json

    from ganforge.report.collect import RunData
    from ganforge.report.tables import eval_json_block

    verdict = latent_verdict({"infogan": {"categorical": {"agreement": 0.838, "confusion": _confusion(
        [0, 1, 1, 2, 3, 5, 6, 8, 9, 9])}}})
    from ganforge.task import tasks

    run = RunData(path=tmp_path, name="r", config={}, recipe="infogan-mnist", recipe_defaults=None,
                  recipe_source="", summary=None, summary_current=False, status="finished", task="gan",
                  spec=tasks().get("gan").report, train=[], evals=[], events=[], warnings=[], pictures=[],
                  explore=[], eval_json=json.loads(json.dumps({"fid": 1.0, "verdict": verdict})), checkpoints=[])
    text = eval_json_block(run)
    assert "Not every latent axis was found." in text and "no code value draws classes 4, 7" in text
    assert "diffaugment=translation" in text
