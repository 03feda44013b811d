"""The pairs export's choice of aspect or weights for rating forms (app/exports/feedback_pairs.py):
what each form accepts, and refusals naming the parameter. The scores they select are
feedback_read's (tests/labeling/test_forms_submit.py); the rows are in test_forms_exports.py."""

import pytest

from app.exports.feedback_pairs import ExportParamError, Scoring, parse_weights, resolve_scoring
from tests.admin.forms_data import ASPECTS, LIKERT

SCALES = {"helpfulness": "likert", "honesty": "likert", "style": "ranking"}


def test_parse_weights_normalises_and_names_the_parameter():
    assert parse_weights("helpfulness:2, style:2", SCALES) == {"helpfulness": 0.5, "style": 0.5}
    bad = {
        "helpfulness": "is not name:weight",
        "helpfulness:x": "not a number",
        "helpfulness:-1": ">= 0",
        "helpfulness:inf": "finite",
        "helpfulness:1,helpfulness:2": "given twice",
        "speed:1": "no aspect 'speed'",
        "helpfulness:0,honesty:0": "above 0",
        "Helpfulness:1": "is not name:weight",
    }
    for text, why in bad.items():
        with pytest.raises(ExportParamError) as caught:
            parse_weights(text, SCALES)
        assert (
            caught.value.param == "weights" and why in str(caught.value) and str(caught.value).startswith("weights: ")
        )


def test_resolve_scoring_per_form():
    assert resolve_scoring("ranking", {}, aspect=None, weights=None) is None
    assert resolve_scoring("pairwise", {}, aspect=None, weights=None) is None
    assert resolve_scoring("likert", LIKERT, aspect=None, weights=None) == Scoring()
    assert resolve_scoring("multi_aspect", ASPECTS, aspect=None, weights=None) == Scoring(target="", name="overall")
    assert resolve_scoring("multi_aspect", ASPECTS, aspect="style", weights=None) == Scoring(
        target="style", name="style"
    )
    weighted = resolve_scoring("multi_aspect", ASPECTS, aspect=None, weights="honesty:1, style:3")
    assert weighted.target == {"honesty": 0.25, "style": 0.75} and weighted.name == "honesty:1,style:3"
    refused = [
        (("ranking", {}, "helpfulness", None), "aspect", "ranking form"),
        (("likert", LIKERT, None, "a:1"), "weights", "rates each completion once"),
        (("multi_aspect", ASPECTS, "speed", None), "aspect", "no aspect 'speed'"),
        (("multi_aspect", ASPECTS, "style", "style:1"), "weights", "not both"),
        (("multi_aspect", {**ASPECTS, "overall_ranking": False}, None, None), "aspect", "choose aspect="),
        (("multi_aspect", {**ASPECTS, "overall_ranking": False}, "overall", None), "aspect", "no aspect 'overall'"),
    ]
    for (form, settings, aspect, weights), param, why in refused:
        with pytest.raises(ExportParamError) as caught:
            resolve_scoring(form, settings, aspect=aspect, weights=weights)
        assert caught.value.param == param and why in str(caught.value), str(caught.value)
