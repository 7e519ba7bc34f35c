"""Pin the public API so that it cannot drift by accident (httpx's habit)."""

from __future__ import annotations

import qkdtwin
import qkdtwin.errors
import qkdtwin.qkd


def test_qkd_exports():
    assert qkdtwin.qkd.__all__ == sorted(qkdtwin.qkd.__all__, key=lambda s: (not s.isupper(), s))
    for name in qkdtwin.qkd.__all__:
        assert hasattr(qkdtwin.qkd, name), name
    assert set(qkdtwin.qkd.__all__) >= {
        "simulate_link",
        "analytic_key_rate",
        "max_distance",
        "build_link_model",
        "LinkModel",
        "WeakCoherentSource",
        "SinglePhotonSource",
        "EntangledPairSource",
        "FiberChannel",
        "ThresholdDetector",
        "InterceptResend",
        "PhotonNumberSplitting",
        "plob_bound",
    }


def test_error_tree():
    e = qkdtwin.errors
    assert e.__all__ == sorted(e.__all__)
    for name in e.__all__:
        assert issubclass(getattr(e, name), e.QkdTwinError)
    assert issubclass(e.UnknownNameError, e.ConfigError)
    assert issubclass(e.RangeSyntaxError, e.ConfigError)


def test_version_string():
    assert qkdtwin.__version__.count(".") >= 2


def test_postprocess_exports():
    import qkdtwin.qkd.postprocess as pp

    assert pp.__all__ == sorted(pp.__all__, key=lambda s: (not s.isupper(), s))
    for name in pp.__all__:
        assert hasattr(pp, name), name
    assert {
        "postprocess",
        "reconcile",
        "verify_keys",
        "toeplitz_hash",
        "sample_qber",
        "tomamichel_key_length",
        "lim_decoy_key_length",
        "ClassicalChannel",
    } <= set(pp.__all__)


def test_plant_and_interfaces_exports():
    import qkdtwin.interfaces
    import qkdtwin.plant

    for mod in (qkdtwin.plant, qkdtwin.interfaces):
        assert mod.__all__ == sorted(mod.__all__, key=lambda s: (not s.isupper(), s))
        for name in mod.__all__:
            assert hasattr(mod, name), name
    assert {"Plant", "load_plant_scenario", "interval_law", "draw_interval"} <= set(
        qkdtwin.plant.__all__
    )
    assert {"LinkTelemetry", "parse_link_telemetry", "json_schema"} <= set(
        qkdtwin.interfaces.__all__
    )
