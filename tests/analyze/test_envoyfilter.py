"""EnvoyFilter patch analyzers (IST0151-IST0155), from Istio's testdata (tests/data/analyze/istio/)."""

from tests.analyze.grid import analyze_istio_files

ANALYZER = ("envoyfilter.EnvoyPatchAnalyzer",)


def found(*files):
    return sorted((f.code, f.origin) for f in analyze_istio_files(*files, analyzers=ANALYZER))


def test_relative_insert_without_priority_warns_that_the_anchor_may_be_missing():
    assert ("IST0151", "EnvoyFilter bookinfo/test-relative-1") in found("relative-envoy-filter-operation.yaml")


def test_relative_patch_on_a_filter_an_earlier_versioned_patch_added_warns_about_upgrades():
    # test-relative-3 patches a filter that an earlier patch limited to proxyVersion ^1.11 also names.
    assert ("IST0155", "EnvoyFilter bookinfo/test-relative-3") in found("relative-envoy-filter-operation.yaml")


def test_insert_first_or_a_priority_is_quiet():
    assert found("absolute-envoy-filter-operation.yaml") == []


def test_replace_outside_filters_is_an_error_and_with_a_priority_is_quiet():
    codes = found("envoy-filter-replace-operation.yaml")
    assert ("IST0152", "EnvoyFilter bookinfo/test-replace-1") in codes
    assert not any(origin == "EnvoyFilter bookinfo/test-replace-2" for _, origin in codes)


def test_add_to_a_route_configuration_is_ignored_by_istio():
    assert found("envoy-filter-add-operation.yaml") == [("IST0153", "EnvoyFilter bookinfo/test-auth-2"),
                                                         ("IST0153", "EnvoyFilter bookinfo/test-auth-3")]


def test_remove_on_http_route_is_ignored_by_istio_and_a_patchless_filter_is_quiet():
    codes = found("envoy-filter-remove-operation.yaml")
    assert ("IST0154", "EnvoyFilter bookinfo/test-remove-2") in codes
    assert ("IST0154", "EnvoyFilter bookinfo/test-remove-3") in codes
    assert not any(origin == "EnvoyFilter bookinfo/test-remove-4" for _, origin in codes)


def test_filter_chain_match_with_merge_is_quiet():
    assert found("envoy-filter-filterchain.yaml") == []
