"""Tests for the user clusterer, stable week-to-week numbering, profiles, names and model files."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from pydantic import ValidationError
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.impute import SimpleImputer
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import QuantileTransformer, RobustScaler
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from segments.clustering import (
    ClusteringConfig,
    ClusterModelState,
    FeatureSpace,
    UserClusterer,
    align_labels,
    cluster_names,
    cluster_stage,
    fit_stable,
    load_model,
    profile_clusters,
    run_clustering,
    save_model,
    silhouettes,
)
from segments.clustering.stage import assign_clusters, nearest_centres
from segments.errors import DataError
from segments.settings.clustering import ClusteringFeatures

# ---------------------------------------------------------------------------------------------
# scikit-learn's estimator contract

_N_CLUSTERS_1 = "the check sets n_clusters=1, outside the allowed range [2, 64]"
EXPECTED_FAILED = {
    "check_dont_overwrite_parameters": _N_CLUSTERS_1,
    "check_methods_subset_invariance": _N_CLUSTERS_1,
    "check_fit2d_1sample": _N_CLUSTERS_1 + " (the parameter error comes before the sample error)",
    "check_fit2d_1feature": _N_CLUSTERS_1,
    "check_fit2d_predict1d": _N_CLUSTERS_1,
}


@parametrize_with_checks([UserClusterer()], expected_failed_checks=lambda est: EXPECTED_FAILED)
def test_sklearn_estimator_contract(estimator, check):
    check(estimator)


def test_n_clusters_validation_message():
    X = np.random.default_rng(0).normal(size=(20, 3))
    msg = "The 'n_clusters' parameter of UserClusterer must be an int in the range [2, 64]. Got 0 instead."
    with pytest.raises(InvalidParameterError) as err:
        UserClusterer(n_clusters=0).fit(X)
    assert str(err.value) == msg
    with pytest.raises(InvalidParameterError, match="'scaler' parameter of UserClusterer must be"):
        UserClusterer(scaler="minmax").fit(X)
    with pytest.raises(InvalidParameterError, match="'k_range' parameter of UserClusterer"):
        UserClusterer(k_range=(5, 3)).fit(X)


def test_numpy_input_all_columns_numeric_and_float32_predict():
    X, y = make_blobs(300, 4, centers=3, random_state=1)
    est = UserClusterer(n_clusters=3).fit(X)
    assert not hasattr(est, "feature_names_in_")
    assert est.n_features_in_ == 4 and est.preprocessor_.numeric == ("x0", "x1", "x2", "x3")
    assert est.cluster_centers_.dtype == np.float32
    emb = est.embed(X)
    assert emb.dtype == np.float32 and emb.flags["C_CONTIGUOUS"]
    assert adjusted_rand_score(y, est.predict(X.astype(np.float32))) == pytest.approx(1.0)
    np.testing.assert_array_equal(est.labels_, est.predict(X))


def test_k_range_picks_k_by_silhouette():
    X, _ = make_blobs(400, 3, centers=5, cluster_std=0.5, random_state=3)
    est = UserClusterer(k_range=(2, 8)).fit(X)
    assert sorted(est.k_scores_) == list(range(2, 9))
    assert est.n_clusters_ == 5 == max(est.k_scores_, key=est.k_scores_.get)
    assert est.cluster_centers_.shape == (5, 3)


# ---------------------------------------------------------------------------------------------
# Feature space: the hand-applied transform equals scikit-learn's transformers


def _numeric_table(seed: int = 0, n: int = 200) -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = np.column_stack(
        [rng.gamma(2, 300, n), rng.poisson(2, n).astype(float), rng.random(n), rng.normal(0, 1, n)]
    )
    raw[rng.random((n, 4)) < 0.1] = np.nan
    df = pl.DataFrame({"money": raw[:, 0], "count": raw[:, 1], "share": raw[:, 2], "z": raw[:, 3]})
    df = df.with_columns(pl.col("money", "count").fill_nan(None))  # nulls and NaNs both occur
    logged = raw.copy()
    logged[:, :2] = np.log1p(logged[:, :2])
    return df, logged


@pytest.mark.parametrize(
    ("scaler", "oracle"),
    [
        ("robust", RobustScaler()),
        ("quantile", QuantileTransformer(n_quantiles=100, subsample=None)),
    ],
)
def test_feature_space_matches_sklearn(scaler, oracle):
    df, logged = _numeric_table()
    space = FeatureSpace.fit(df, ["money", "count"], ["share", "z"], scaler=scaler)
    want = make_pipeline(SimpleImputer(strategy="median"), oracle).fit_transform(logged)
    got = space.transform(df)
    assert got.dtype == np.float32 and got.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_feature_space_fill_values_categories_and_json():
    df = pl.DataFrame(
        {
            "recency_days": [10, None, 100, 1000],
            "flag": [True, False, None, True],
            "stage": ["new", None, "active", "new"],
        }
    )
    space = FeatureSpace.fit(
        df, ["recency_days"], ["flag"], ["stage"], fill_values={"recency_days": 1095.0}
    )
    assert space.impute[0] == pytest.approx(np.log1p(1095.0))
    assert space.impute[1] == 1.0  # median of 1, 0, 1
    assert space.categories == (("__missing__", "active", "new"),)
    assert space.feature_names_out == (
        "recency_days",
        "flag",
        "stage=__missing__",
        "stage=active",
        "stage=new",
    )
    new = pl.DataFrame({"recency_days": [None], "flag": [None], "stage": ["churned"]})
    row = space.transform(new)[0]
    scaled_fill = (np.log1p(1095.0) - space.center[0]) / space.scale[0]
    assert row[0] == pytest.approx(scaled_fill, rel=1e-6)
    np.testing.assert_array_equal(row[2:], [0, 0, 0])  # an unseen category: all zeros
    assert FeatureSpace.from_dict(space.to_dict()) == space


@pytest.mark.parametrize("scaler", ["robust", "quantile"])
def test_unscaled_columns_pass_through(scaler):
    df = pl.DataFrame({"m": [1.0, 10.0, 100.0, None], "s": [0.1, None, 0.3, 0.5]})
    space = FeatureSpace.fit(df, ["m"], scaler=scaler, passthrough=["s"])
    assert space.feature_names_out == ("m", "s") and space.input_columns == ("m", "s")
    out = space.transform(df)
    np.testing.assert_allclose(out[:, 1], [0.1, 0.3, 0.3, 0.5], rtol=1e-6)  # null -> median
    assert out[0, 0] < out[1, 0] < out[2, 0]  # the scaled column is scaled, order kept
    est = UserClusterer(n_clusters=2, numeric_log=("m",), passthrough=("s",)).fit(df)
    assert est.preprocessor_.passthrough == ("s",)


def test_silhouettes_match_sklearn():
    X, y = make_blobs(300, 4, centers=4, random_state=5)
    rng = np.random.default_rng(0)
    noisy = np.where(rng.random(300) < 0.3, rng.integers(0, 4, 300), y)
    single = y.copy()
    single[0] = 9  # a singleton cluster scores 0 for its member
    got = silhouettes(X, [y, noisy, single, np.zeros(300, int)])
    for lab, value in zip([y, noisy, single], got, strict=False):
        assert value == pytest.approx(silhouette_score(X, lab), abs=1e-4)
    assert got[3] == -1.0


# ---------------------------------------------------------------------------------------------
# Polars input


def test_polars_input_by_name_and_missing_column():
    X, _ = make_blobs(200, 3, centers=3, random_state=2)
    df = pl.DataFrame({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "name": ["x"] * 200})
    est = UserClusterer(n_clusters=3, numeric=("a", "b", "c")).fit(df)
    assert list(est.feature_names_in_) == ["a", "b", "c"] and est.n_features_in_ == 3
    np.testing.assert_array_equal(est.predict(df.select("c", "name", "b", "a")), est.labels_)
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        np.testing.assert_array_equal(est.predict(X.astype(np.float32)), est.labels_)
    with pytest.raises(DataError, match="lacks feature column"):
        est.predict(df.drop("b"))
    with pytest.raises(DataError, match=r"name have the wrong type"):
        UserClusterer(n_clusters=3, numeric=("a", "name")).fit(df)


# ---------------------------------------------------------------------------------------------
# Alignment


@settings(max_examples=30, deadline=None)
@given(perm=st.permutations(list(range(7))), seed=st.integers(0, 10_000))
def test_align_labels_recovers_permutation(perm, seed):
    rng = np.random.default_rng(seed)
    prev = rng.normal(0, 5, size=(7, 6))
    new = prev[np.asarray(perm)] + rng.normal(0, 0.01, size=(7, 6))
    np.testing.assert_array_equal(align_labels(prev, new), perm)


def test_align_labels_more_new_centres():
    prev = np.array([[0.0, 0.0], [10.0, 0.0]])
    new = np.array([[10.1, 0.0], [5.0, 5.0], [0.1, 0.0]])
    np.testing.assert_array_equal(align_labels(prev, new), [1, -1, 0])


# ---------------------------------------------------------------------------------------------
# The stage on blobs


def _blob_cfg(**kw) -> ClusteringConfig:
    # Gaussian blobs in a linear space: robust (linear) scaling keeps their geometry, which
    # the drift and renumbering thresholds below are stated in (each column a group of its own:
    # weight 1).
    feats = ClusteringFeatures(
        money=(),
        counts=(),
        shares=("f0", "f1", "f2", "f3"),
        categorical=(),
        groups={f"f{j}": (f"f{j}",) for j in range(4)},
    )
    return ClusteringConfig(features=feats, fill_values={}, **{"k": 5, "scaler": "robust", **kw})


CENTERS = np.array(
    [[0, 0, 0, 0], [10, 0, 0, 0], [0, 10, 0, 0], [0, 0, 10, 0], [0, 0, 0, 10]], dtype=float
)


def _blob_tags(
    n: int = 2000, seed: int = 0, shift: np.ndarray | float = 0.0, centers=CENTERS
) -> tuple[pl.DataFrame, np.ndarray]:
    X, y = make_blobs(n, centers=centers, cluster_std=1.0, random_state=seed)
    X = X + shift
    df = pl.DataFrame({"one_id": [f"u{i:05d}" for i in range(n)]}).with_columns(
        [pl.Series(f"f{j}", X[:, j]) for j in range(4)]
    )
    return df, y


def test_every_user_in_exactly_one_cluster():
    df, y = _blob_tags()
    assignments, profiles, state = cluster_stage(df, _blob_cfg(), week="2026-W10")
    assert assignments.schema == pl.Schema(
        {"one_id": pl.String, "cluster": pl.Int32, "cluster_name": pl.String}
    )
    assert assignments.height == df.height and assignments["one_id"].n_unique() == df.height
    assert assignments["one_id"].to_list() == df["one_id"].to_list()
    assert assignments["cluster"].null_count() == 0
    assert set(assignments["cluster"]) == set(profiles["cluster"]) == set(range(5))
    assert profiles["size"].sum() == df.height
    assert profiles["cluster_name"].n_unique() == profiles.height
    assert adjusted_rand_score(y, assignments["cluster"].to_numpy()) > 0.98
    # numbers follow decreasing size in a first fit; drift says every cluster is new
    assert profiles.sort("cluster")["size"].is_sorted(descending=True)
    assert set(profiles["drift_status"]) == {"new"}
    assert state.week == "2026-W10" and state.k == 5 and state.next_id == 5
    assert sum(state.sizes) == df.height


def test_deterministic_and_row_order_free():
    df, _ = _blob_tags(seed=4)
    cfg = _blob_cfg(fit_sample=500)  # the sample is picked by one_id hash, not row position
    a1, p1, s1 = cluster_stage(df, cfg)
    a2, p2, s2 = cluster_stage(df, cfg)
    assert_frame_equal(a1, a2)
    assert_frame_equal(p1, p2)
    assert s1 == s2
    shuffled = df.sample(fraction=1.0, shuffle=True, seed=9)
    a3, p3, s3 = cluster_stage(shuffled, cfg)
    assert_frame_equal(a1.sort("one_id"), a3.sort("one_id"))
    assert_frame_equal(p1, p3)
    assert s1 == s3


def test_labels_stable_on_shifted_population():
    df1, _ = _blob_tags(seed=0)
    a1, _, s1 = cluster_stage(df1, _blob_cfg())
    # Next week: everyone moves a little, 5% newcomers are noise, and the fit's seed differs,
    # so an independent fit would number the clusters differently.
    df2, _ = _blob_tags(seed=0, shift=np.array([0.3, -0.2, 0.1, 0.2]))
    rng = np.random.default_rng(1)
    noise = rng.uniform(-3, 13, size=(100, 4))
    df2 = pl.concat(
        [
            df2,
            pl.DataFrame({"one_id": [f"n{i:04d}" for i in range(100)]}).with_columns(
                [pl.Series(f"f{j}", noise[:, j]) for j in range(4)]
            ),
        ]
    )
    cfg2 = _blob_cfg(random_state=7)
    a2, p2, s2 = cluster_stage(df2, cfg2, s1)
    kept = a1.join(a2, on="one_id", suffix="_2")
    assert kept.height == df1.height
    assert (kept["cluster"] == kept["cluster_2"]).mean() >= 0.9
    fresh, _, _ = cluster_stage(df2, cfg2)  # without the previous state: other numbers
    assert (
        a1.join(fresh, on="one_id", suffix="_2")
        .select(pl.col("cluster") == pl.col("cluster_2"))
        .to_series()
        .mean()
        < 0.9
    )
    assert s2.space == s1.space  # the previous week's feature space is reused
    assert set(p2["drift_status"]) <= {"stable", "drifted"}
    assert p2["centroid_shift"].null_count() == 0 and p2["centroid_shift"].max() < 0.5


def test_drift_reported_for_the_cluster_that_moved():
    df1, y = _blob_tags(seed=0)
    a1, _, s1 = cluster_stage(df1, _blob_cfg())
    moved_blob = 2
    shift = np.where(y[:, None] == moved_blob, np.array([0.0, 6.0, 0.0, 0.0]), 0.0)
    df2, _ = _blob_tags(seed=0, shift=shift)
    _, p2, _ = cluster_stage(df2, _blob_cfg(renumber_shift=None), s1)
    moved = a1.filter(pl.Series(y == moved_blob))["cluster"].mode().item()
    status = dict(zip(p2["cluster"], p2["drift_status"], strict=True))
    assert status.pop(moved) == "drifted"
    assert set(status.values()) == {"stable"}
    # moved further than renumber_shift (in scaled units): a different group, a new number
    a3, p3, s3 = cluster_stage(df2, _blob_cfg(renumber_shift=2.0), s1)
    assert a3.filter(pl.Series(y == moved_blob))["cluster"].mode().item() == 5
    assert s3.next_id == 6 and moved not in s3.cluster_ids
    status = dict(zip(p3["cluster"], p3["drift_status"], strict=True))
    assert status.pop(5) == "new" and set(status.values()) == {"stable"}
    kept = a1.join(a3, on="one_id", suffix="_3").filter(pl.Series(y != moved_blob))
    assert (kept["cluster"] == kept["cluster_3"]).all()


def test_new_k_gets_numbers_after_the_old_ones():
    df1, y1 = _blob_tags(2000, seed=0)
    a1, _, s1 = cluster_stage(df1, _blob_cfg(k=5))
    centers6 = np.vstack([CENTERS, [[-10.0, 0, 0, 0]]])
    df2, y2 = _blob_tags(2400, seed=1, centers=centers6)
    a2, p2, s2 = cluster_stage(df2, _blob_cfg(k=6), s1)

    def blob_to_cluster(a: pl.DataFrame, y: np.ndarray, blobs: list[int]) -> list[int]:
        c = a["cluster"].to_numpy()
        return [int(np.bincount(c[y == t]).argmax()) for t in blobs]

    # the five old groups keep their numbers, the new group gets the next one
    assert blob_to_cluster(a2, y2, list(range(6))) == [*blob_to_cluster(a1, y1, list(range(5))), 5]
    assert (a2["cluster"].to_numpy()[y2 == 5] == 5).mean() > 0.95
    assert p2.filter(pl.col("cluster") == 5)["drift_status"].item() == "new"
    assert set(p2.filter(pl.col("cluster") < 5)["drift_status"]) == {"stable"}
    assert s2.next_id == 6 and sorted(s2.cluster_ids) == list(range(6))
    # back to k=5 without blob 2: the others keep their numbers, none is reused
    keep = [0, 1, 3, 4, 5]
    df3, y3 = _blob_tags(2000, seed=2, centers=centers6[keep])
    a3, _, s3 = cluster_stage(df3, _blob_cfg(k=5), s2)
    m2 = blob_to_cluster(a2, y2, list(range(6)))
    assert blob_to_cluster(a3, y3, list(range(5))) == [m2[t] for t in keep]
    assert s3.next_id == 6 and m2[2] not in s3.cluster_ids


def test_incompatible_previous_state_starts_fresh_numbers():
    df, _ = _blob_tags()
    _, _, s1 = cluster_stage(df, _blob_cfg())
    cfg = _blob_cfg(scaler="quantile")
    _, p2, s2 = cluster_stage(df, cfg, s1)
    assert sorted(s2.cluster_ids) == list(range(5, 10))
    assert set(p2["drift_status"]) == {"new"}


def test_stage_rejects_duplicate_ids_and_missing_features():
    df, _ = _blob_tags(50)
    with pytest.raises(DataError, match="one_id must be unique"):
        cluster_stage(pl.concat([df, df.head(1)]), _blob_cfg(k=2))
    with pytest.raises(DataError, match="none of the configured feature columns"):
        cluster_stage(df.select("one_id"), _blob_cfg(k=2))


@pytest.mark.parametrize("scaler", ["robust", "quantile"])
def test_state_json_round_trip(scaler):
    df, _ = _blob_tags(300)
    _, _, state = cluster_stage(df, _blob_cfg(k=3, scaler=scaler))
    back = ClusterModelState.from_json(state.to_json())
    assert back == state
    np.testing.assert_array_equal(back.centers, state.centers)


def test_config_rejects_a_column_in_two_families():
    with pytest.raises(ValidationError, match="'a' in both money and shares"):
        ClusteringFeatures(money=("a",), shares=("a",))
    with pytest.raises(ValidationError, match="k_range"):
        ClusteringConfig(k_range=(6, 4))
    with pytest.raises(ValidationError):
        ClusteringConfig(colour="red")


# ---------------------------------------------------------------------------------------------
# Profiles and names


def test_profile_clusters_hand_computed():
    df = pl.DataFrame(
        {
            "monetary_52w": [100.0, 300.0, 0.0, 0.0],
            "is_high_value": [True, True, False, None],
            "lifecycle_stage": ["active", "active", "lapsed", "churned"],
            "ignored": ["x", "y", "z", "w"],
        }
    )
    prof = profile_clusters(df, [0, 0, 1, 1])
    assert prof["cluster"].to_list() == [0, 1]
    assert prof["size"].to_list() == [2, 2] and prof["share"].to_list() == [0.5, 0.5]
    assert prof["mean_monetary_52w"].to_list() == [200.0, 0.0]
    assert prof["lift_monetary_52w"].to_list() == [2.0, 0.0]  # population mean 100
    assert prof["mean_is_high_value"].to_list() == [1.0, 0.0]  # null ignored
    assert prof["lift_is_high_value"].to_list() == [1.5, 0.0]  # population mean 2/3
    assert prof["top_lifecycle"].to_list() == ["active", "churned"]  # tie -> first by name
    assert prof["top_lifecycle_share"].to_list() == [1.0, 0.5]
    assert prof["cluster_name"].to_list() == ["高价值·活跃", "流失"]
    assert prof["cluster_key"].to_list() == ["high_value-active", "churned"]
    assert "mean_ignored" not in prof.columns


def test_profiles_are_the_same_from_run_to_run():
    # 2M people in 8 clusters: a parallel group-by mean once differed in its last bits from
    # run to run, and with it the profile file and the lifts the names come from.
    rng = np.random.default_rng(3)
    n = 2_000_000
    df = pl.DataFrame(
        {"monetary_52w": rng.random(n) * 4321.5, "p_alive": rng.random(n), "cluster": 0}
    ).with_columns(pl.when(pl.col("p_alive") < 0.1).then(None).otherwise(pl.col("p_alive")))
    labels = rng.integers(0, 8, n)
    runs = [profile_clusters(df, labels) for _ in range(4)]
    for other in runs[1:]:
        assert_frame_equal(other, runs[0], check_exact=True)
    expected = df.with_columns(pl.Series("c", labels)).group_by("c").agg(pl.col("p_alive").mean())
    got = dict(zip(runs[0]["cluster"], runs[0]["mean_p_alive"], strict=True))
    for c, mean in expected.iter_rows():
        assert got[c] == pytest.approx(mean, rel=1e-12)


def test_profiles_do_not_depend_on_how_the_tag_table_is_chunked():
    # The same tags in other memory chunks (a join or concat upstream) once gave another
    # population mean in the last bits, so clusters.parquet differed while tags.parquet did not.
    rng = np.random.default_rng(5)
    n = 1_000_003
    whole = pl.DataFrame({"monetary_52w": rng.random(n) * 1000.0, "p_alive": rng.random(n)})
    labels = rng.integers(0, 4, n)
    base = profile_clusters(whole, labels)
    for cut in (7, 333_333, 999_999):
        split = pl.concat([whole.slice(0, cut), whole.slice(cut)], rechunk=False)
        assert split.n_chunks() == 2
        assert_frame_equal(profile_clusters(split, labels), base, check_exact=True)


def test_shares_and_lifts_are_true_divisions():
    # Oracle: Python's own division. polars divides a chunk of two or more rows by a number as
    # a multiplication by its reciprocal (49 * (1/49) = 0.9999999999999999), and the profile
    # rows came in either layout: 46/416 differed in its last bit from run to run.
    rng = np.random.default_rng(8)
    one = pl.DataFrame({"monetary_52w": rng.random(49) * 977.0, "p_alive": rng.random(49)})
    prof = profile_clusters(one, np.zeros(49, dtype=np.int32))
    assert prof["share"].to_list() == [1.0]
    assert prof["lift_monetary_52w"].to_list() == [1.0]
    assert prof["lift_p_alive"].to_list() == [1.0]
    sizes = [90, 75, 46, 41, 38, 37, 33, 32, 24]
    labels = np.repeat(np.arange(9, dtype=np.int32), sizes)
    df = pl.DataFrame({"monetary_52w": rng.random(416) * 500.0})
    prof = profile_clusters(df, labels)
    pop = df["monetary_52w"].mean()
    assert prof["share"].to_list() == [s / 416 for s in sizes]
    assert prof["lift_monetary_52w"].to_list() == [m / pop for m in prof["mean_monetary_52w"]]


def test_cluster_names_rules_and_uniqueness():
    rows = [
        {  # big spenders into camping, active
            "lift_monetary_52w": 3.0,
            "lift_interest_camping": 2.5,
            "mean_interest_camping": 0.6,
            "lift_interest_hiking": 1.4,
            "mean_interest_hiking": 0.3,
            "top_lifecycle": "active",
            "top_lifecycle_share": 0.8,
        },
        {
            "lift_coupon_hunter_score": 3.0,
            "lift_discount_share": 2.0,
            "mean_is_coupon_hunter": 0.5,
        },
        {"lift_recency_days": 3.0, "lift_frequency_52w": 0.2},
        {
            "top_lifecycle": "new",
            "top_lifecycle_share": 0.9,
            "lift_interest_hiking": 2.0,
            "mean_interest_hiking": 0.4,
        },
        {"lift_recency_days": 3.0, "lift_frequency_52w": 0.1},  # the same words as row 2
        {},
        # a high hunter score lift, but flagged hunters are a minority: no 羊毛党
        {"lift_coupon_hunter_score": 4.0, "mean_is_coupon_hunter": 0.49},
    ]
    zh, en = cluster_names(pl.DataFrame(rows))
    assert zh == [
        "高价值·露营·活跃",
        "羊毛党·高优惠敏感",
        "沉睡·低频",
        "新客·徒步登山",
        "沉睡·低频2",
        "大众",
        "大众2",
    ]
    assert en == [
        "high_value-camping-active",
        "coupon_hunter-promo_sensitive",
        "dormant-low_freq",
        "new-hiking",
        "dormant-low_freq-2",
        "mainstream",
        "mainstream-2",
    ]


def test_names_unique_even_when_a_bare_name_looks_numbered():
    from segments.clustering.profiles import _unique

    assert _unique(["A", "A", "A2"], "") == ["A", "A3", "A2"]


# ---------------------------------------------------------------------------------------------
# Personas: the full tag set beats raw RFM


def _personas(n: int = 250, seed: int = 0) -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    parts = []
    u = rng.uniform

    def persona(label, recency, freq, money, tenure, disc, hunter, stage, camping, hiking, hv):
        freq = np.asarray(freq, dtype=float)
        return {
            "truth": np.full(n, label),
            "recency_days": recency,
            "frequency_52w": freq,
            "monetary_52w": money,
            "frequency_13w": np.minimum(freq, rng.poisson(freq / 4 + 0.1)),
            "monetary_13w": money * u(0.1, 0.4, n),
            "aov_52w": money / np.maximum(freq, 1),
            "tenure_weeks": tenure,
            "discount_share": disc,
            "coupon_hunter_score": hunter,
            "deal_seeking_share": np.clip(hunter + rng.normal(0, 0.05, n), 0, 1),
            "promo_order_share_52w": np.clip(disc * 1.5, 0, 1),
            "p_alive": np.clip(1 - recency / 800, 0, 1),
            "interest_camping": camping,
            "interest_hiking": hiking,
            "is_high_value": hv,
            "is_coupon_hunter": hunter >= 0.35,
            "lifecycle_stage": np.full(n, stage),
        }

    # high spenders, coupon hunters (spend similar to the newcomers), dormant, newcomers
    parts.append(
        persona(
            0,
            u(1, 40, n),
            rng.poisson(8, n) + 2,
            rng.lognormal(8.6, 0.4, n),
            u(60, 250, n),
            u(0, 0.1, n),
            u(0, 0.15, n),
            "active",
            u(0.4, 0.9, n),
            u(0, 0.2, n),
            np.full(n, True),
        )
    )
    parts.append(
        persona(
            1,
            u(1, 60, n),
            rng.poisson(5, n) + 1,
            rng.lognormal(6.3, 0.5, n),
            u(30, 200, n),
            u(0.35, 0.6, n),
            u(0.6, 0.95, n),
            "active",
            u(0, 0.3, n),
            u(0, 0.3, n),
            np.full(n, False),
        )
    )
    parts.append(
        persona(
            2,
            u(250, 700, n),
            rng.poisson(0.3, n),
            rng.lognormal(5.0, 0.8, n) * (rng.random(n) < 0.3),
            u(80, 300, n),
            u(0, 0.2, n),
            u(0, 0.2, n),
            "lapsed",
            u(0, 0.2, n),
            u(0, 0.2, n),
            np.full(n, False),
        )
    )
    parts.append(
        persona(
            3,
            u(1, 30, n),
            np.ones(n),
            rng.lognormal(6.3, 0.5, n),
            u(0, 6, n),
            u(0, 0.15, n),
            u(0, 0.2, n),
            "new",
            u(0, 0.2, n),
            u(0.5, 0.9, n),
            np.full(n, False),
        )
    )
    frames = [pl.DataFrame(p) for p in parts]
    df = (
        pl.concat(frames)
        .with_row_index("i")
        .with_columns(
            pl.format("p{}", pl.col("i")).alias("one_id"),
            pl.col("recency_days").round().cast(pl.Int64),
            pl.col("frequency_52w", "frequency_13w").cast(pl.Int64),
        )
    )
    truth = df["truth"].to_numpy()
    return df.drop("i", "truth"), truth


def test_full_tag_set_beats_raw_rfm_on_personas():
    df, truth = _personas()
    cfg = ClusteringConfig(k=4)
    assignments, profiles, _ = cluster_stage(df, cfg)
    ari_engine = adjusted_rand_score(truth, assignments["cluster"].to_numpy())
    rfm = df.select("recency_days", "frequency_52w", "monetary_52w").to_numpy().astype(float)
    with threadpool_limits(1):  # OpenMP threads spin badly on a busy shared machine
        ari_rfm = adjusted_rand_score(truth, KMeans(4, n_init=10, random_state=0).fit_predict(rfm))
    assert ari_engine >= ari_rfm
    assert ari_engine > 0.9
    # the names say who they are
    name_of = dict(zip(profiles["cluster"], profiles["cluster_name"], strict=True))
    by_truth = {
        t: name_of[int(np.bincount(assignments["cluster"].to_numpy()[truth == t]).argmax())]
        for t in range(4)
    }
    assert by_truth[0].startswith("高价值")
    assert by_truth[1].startswith("羊毛党")
    assert by_truth[2].startswith("沉睡")
    assert by_truth[3].startswith("新客") and "徒步登山" in by_truth[3]


# ---------------------------------------------------------------------------------------------
# Model files


class Foreign:
    """A type no allow-list knows."""

    def __init__(self):
        self.payload = 1


def test_skops_round_trip(tmp_path):
    df, _ = _blob_tags(300)
    est = UserClusterer(n_clusters=3, numeric=("f0", "f1", "f2", "f3"), n_threads=1).fit(df)
    save_model(est, tmp_path / "m.skops")
    back = load_model(tmp_path / "m.skops")
    np.testing.assert_array_equal(back.predict(df), est.predict(df))
    assert back.preprocessor_ == est.preprocessor_


def test_a_model_saved_before_n_jobs_existed_loads_with_its_default(tmp_path):
    """Models of weeks built before `n_jobs` was a parameter hold no such attribute: loaded,
    they predict, show their parameters (n_jobs = 1) and can be cloned."""
    from sklearn.base import clone

    df, _ = _blob_tags(300)
    est = UserClusterer(n_clusters=3, numeric=("f0", "f1", "f2", "f3"), n_threads=1).fit(df)
    del est.n_jobs, est.least  # as an older version saved it
    save_model(est, tmp_path / "old.skops")
    back = load_model(tmp_path / "old.skops")
    assert back.get_params()["n_jobs"] == 1 and "UserClusterer" in repr(back)
    assert back.get_params()["least"] is None
    assert clone(back).n_jobs == 1
    np.testing.assert_array_equal(back.predict(df), est.predict(df))
    np.testing.assert_array_equal(clone(back).fit(df).predict(df), est.predict(df))  # refits


def test_skops_refuses_foreign_types(tmp_path):
    X, _ = make_blobs(60, 2, centers=2, random_state=0)
    est = UserClusterer(n_clusters=2, n_threads=1).fit(X)
    est.extra_ = Foreign()
    save_model(est, tmp_path / "evil.skops")
    with pytest.raises(DataError, match=r"untrusted type\(s\) .*Foreign"):
        load_model(tmp_path / "evil.skops")
    (tmp_path / "junk.skops").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable skops model file"):
        load_model(tmp_path / "junk.skops")


def test_fit_stable_returns_fit_and_state():
    df, _ = _blob_tags(400)
    est, state = fit_stable(df, _blob_cfg(k=3))
    assert isinstance(est, UserClusterer) and est.n_clusters_ == 3
    assert state.k == 3 and state.feature_names == ("f0", "f1", "f2", "f3")
    np.testing.assert_array_equal(state.centers, est.cluster_centers_)


@pytest.mark.parametrize("scaler", ["robust", "quantile", "standard"])
def test_a_live_table_assigns_from_the_state_what_the_fitted_estimator_predicts(scaler):
    # Week 1, then week 2 fitted from week 1's state on a moved population, so that the
    # stable numbers are not the estimator's own order; then a live table of other people
    # (some with missing features) is assigned from week 2's state alone.
    cfg = _blob_cfg(scaler=scaler)
    first = run_clustering(_blob_tags(seed=0)[0], cfg, week="2026-W10")
    moved, _ = _blob_tags(seed=0, shift=np.array([0.3, -0.2, 0.1, 0.2]))
    week = run_clustering(moved, _blob_cfg(scaler=scaler, random_state=7), first.state)
    live, _ = _blob_tags(700, seed=11)
    live = live.with_columns(
        pl.when(pl.col("one_id") < "u00050").then(None).otherwise(pl.col("f2")).alias("f2")
    )
    state = ClusterModelState.from_json(week.state.to_json())  # as a live table reads it
    got = assign_clusters(live, state)
    internal = week.model.predict(live)
    numbers = np.asarray(week.state.cluster_ids)[internal]
    assert got["one_id"].to_list() == live["one_id"].to_list()
    assert got["cluster"].to_list() == numbers.tolist()
    names = dict(zip(week.profiles["cluster"], week.profiles["cluster_name"], strict=True))
    assert got["cluster_name"].to_list() == [names[c] for c in numbers]
    assert assign_clusters(live.head(0), state).height == 0


def test_nearest_centres_against_brute_force_and_ties():
    rng = np.random.default_rng(3)
    Z = rng.normal(size=(300, 6)).astype(np.float32)
    C = rng.normal(size=(7, 6)).astype(np.float32)
    brute = ((Z[:, None, :].astype(np.float64) - C[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
    np.testing.assert_array_equal(nearest_centres(Z, C), brute)
    # a point halfway between two centres goes to the lower index, whichever comes first
    two = np.array([[0.0, 0.0], [2.0, 0.0]], dtype=np.float32)
    mid = np.array([[1.0, 0.0], [1.0, 5.0]], dtype=np.float32)
    assert nearest_centres(mid, two).tolist() == [0, 0]
    assert nearest_centres(mid, two[::-1].copy()).tolist() == [0, 0]


def test_a_live_table_imports_no_scikit_learn(tmp_path):
    # A refresh runs every few minutes: importing the pipeline, assigning clusters from a
    # week's state and the interests' majority rule must not load scikit-learn, skops or
    # scipy.stats (about 1.5 s of start-up; a weekly build, which fits, loads them).
    import subprocess
    import sys

    df, _ = _blob_tags(400)
    run = run_clustering(df, _blob_cfg(k=3))
    (tmp_path / "state.json").write_text(run.state.to_json(), encoding="utf-8")
    df.write_parquet(tmp_path / "tags.parquet")
    code = f"""
import sys
import polars as pl
import segments.pipeline, segments.live
from segments.clustering import ClusterModelState, assign_clusters
state = ClusterModelState.from_json(open({str(tmp_path / "state.json")!r}).read())
got = assign_clusters(pl.read_parquet({str(tmp_path / "tags.parquet")!r}), state)
from segments.stages.interests import _majority_table
assert _majority_table(0.65)[3] == 2  # 2 of 3 signals are a sure enough lead
loaded = {{m.split(".")[0] for m in sys.modules}} | {{m for m in sys.modules if m == "scipy.stats"}}
heavy = sorted(loaded & {{"sklearn", "skops", "pandas", "scipy.stats"}})
print(",".join(heavy) or "none", got["cluster"].to_list() == {run.assignments["cluster"].to_list()!r})
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["none", "True"], out.stdout + out.stderr


# ---------------------------------------------------------------------------------------------
# Choosing k by stability and separation; feature groups


def test_choose_k_takes_the_smallest_stable_k_near_the_best_silhouette():
    from segments.clustering.estimator import choose_k

    sil = {4: 0.37, 5: 0.40, 6: 0.39, 8: 0.43, 9: 0.44}
    stab = {4: 0.99, 5: 0.89, 6: 0.95, 8: 0.89, 9: 0.93}
    # best stable silhouette 0.44; within 10 %: >= 0.396 -> 5, 8, 9 -> the smallest, 5
    assert choose_k(sil, stab, 0.8, 0.1) == 5
    # 5 unstable: 6 is below 0.396, so 8
    assert choose_k(sil, {**stab, 5: 0.5}, 0.8, 0.1) == 8
    # no tolerance: the best stable silhouette
    assert choose_k(sil, stab, 0.8, 0.0) == 9
    # nothing stable, or no stability measured: the best silhouette
    assert choose_k(sil, dict.fromkeys(sil, 0.1), 0.8, 0.1) == 9
    assert choose_k({3: 0.5, 4: 0.5}, {}, 0.8, 0.1) == 3


def test_k_range_records_stability_and_prefers_the_reproducible_k():
    centers = [[0, 0, 0], [8, 0, 0], [0, 8, 0], [0, 0, 8]]
    X, _ = make_blobs(600, 3, centers=centers, cluster_std=1.0, random_state=5)
    est = UserClusterer(k_range=(2, 7), algorithm="kmeans", stability_rounds=4).fit(X)
    assert sorted(est.k_stability_) == list(range(2, 8))
    assert est.k_stability_[4] > 0.95
    assert est.n_clusters_ == 4
    # more clusters than blobs split a blob at random: less stable than the true k
    assert est.k_stability_[7] < est.k_stability_[4]
    none = UserClusterer(k_range=(2, 7), stability_rounds=0).fit(X)
    assert none.k_stability_ == {}


def test_choosing_k_side_by_side_gives_the_sequential_result_to_the_bit():
    """The fits of choosing k run `n_jobs` at a time: the silhouettes, the stabilities (each
    resample drawn as the sequential loop draws it: generator `seed + k`, round r's fit seeded
    `seed + 7919 (r + 1)`), the k chosen and the centres are those of one job."""
    from sklearn.utils import check_random_state

    from segments.clustering.estimator import silhouettes

    centers = [[0, 0, 0], [6, 0, 0], [0, 6, 0], [0, 0, 6], [6, 6, 6]]
    X, _ = make_blobs(900, 3, centers=centers, cluster_std=1.5, random_state=11)
    args = dict(k_range=(3, 7), algorithm="kmeans", stability_rounds=3, sample_size=500)
    one = UserClusterer(**args, n_jobs=1, n_threads=1).fit(X)
    three = UserClusterer(**args, n_jobs=3, n_threads=1).fit(X)
    assert three.k_scores_ == one.k_scores_
    assert three.k_stability_ == one.k_stability_
    assert three.n_clusters_ == one.n_clusters_
    assert np.array_equal(three.cluster_centers_, one.cluster_centers_)
    assert np.array_equal(three.labels_, one.labels_)
    # the stability of k = 6, as the sequential loop computes it (k is chosen on the sample:
    # each k is fitted on it, not on every row)
    Z = one.preprocessor_.transform(pl.from_numpy(X, schema=["x0", "x1", "x2"]))
    seed = int(check_random_state(0).randint(np.iinfo(np.int32).max))
    sample = Z[np.sort(np.random.default_rng(seed).choice(len(Z), 500, replace=False))]
    full = KMeans(n_clusters=6, n_init=3, random_state=seed).fit(sample).predict(sample)
    rng = np.random.default_rng(seed + 6)
    agree = []
    for r in range(3):
        rows = rng.integers(0, 500, 500)
        fit = KMeans(n_clusters=6, n_init=3, random_state=seed + 7919 * (r + 1)).fit(sample[rows])
        agree.append(adjusted_rand_score(full, fit.predict(sample)))
    assert three.k_stability_[6] == pytest.approx(float(np.mean(agree)), abs=1e-12)
    labs = [np.arange(len(sample)) % k for k in (2, 3, 5)]
    assert silhouettes(sample, labs, chunk=64, n_jobs=3) == silhouettes(sample, labs, chunk=64)


def test_k_is_chosen_on_a_fixed_size_sample_then_fitted_on_every_row():
    """Hand-computed: with more rows than `sample_size`, every k is fitted on the sample only;
    the silhouette and the agreement of each resample's fit are scored on `silhouette_rows` of
    the sample; each stability resample draws `stability_rows` rows; the chosen k's centres
    then start one Lloyd run over every row."""
    from sklearn.utils import check_random_state
    from threadpoolctl import threadpool_limits

    from segments.clustering.estimator import choose_k, silhouettes

    centers = [[0, 0, 0], [6, 0, 0], [0, 6, 0], [0, 0, 6], [6, 6, 6]]
    X, _ = make_blobs(3000, 3, centers=centers, cluster_std=1.5, random_state=3)
    est = UserClusterer(
        k_range=(3, 6),
        algorithm="kmeans",
        stability_rounds=2,
        sample_size=800,
        silhouette_rows=300,
        stability_rows=400,
        n_threads=1,
    ).fit(X)
    Z = est.preprocessor_.transform(pl.from_numpy(X, schema=["x0", "x1", "x2"]))
    seed = int(check_random_state(0).randint(np.iinfo(np.int32).max))
    sample = Z[np.sort(np.random.default_rng(seed).choice(3000, 800, replace=False))]
    sil = np.sort(np.random.default_rng(seed + 1).choice(800, 300, replace=False))
    ks = [3, 4, 5, 6]
    # one thread (OpenMP and BLAS), as the estimator ran: sums in another order (two threads,
    # as a machine under load may give) differ in their last bits, and so would the
    # silhouettes compared exactly below
    with threadpool_limits(limits=1):
        models = [KMeans(n_clusters=k, n_init=3, random_state=seed).fit(sample) for k in ks]
        labels = [m.predict(sample) for m in models]
        scores = silhouettes(sample[sil], [lab[sil] for lab in labels])
        stability = {}
        for k, lab in zip(ks, labels, strict=True):
            rng = np.random.default_rng(seed + k)
            agree = []
            for r in range(2):
                rows = rng.integers(0, 800, 400)
                fit = KMeans(n_clusters=k, n_init=3, random_state=seed + 7919 * (r + 1))
                fit.fit(sample[rows])
                agree.append(adjusted_rand_score(lab[sil], fit.predict(sample[sil])))
            stability[k] = float(np.mean(agree))
    assert est.k_scores_ == dict(zip(ks, scores, strict=True))
    assert est.k_stability_ == pytest.approx(stability, abs=1e-12)
    k = choose_k(est.k_scores_, stability)
    assert est.n_clusters_ == k
    start = models[ks.index(k)].cluster_centers_
    final = KMeans(n_clusters=k, init=start, n_init=1, random_state=seed).fit(Z)
    # (the estimator ran with one OpenMP thread: sums in another order, the last bits differ)
    assert np.allclose(est.cluster_centers_, final.cluster_centers_, rtol=0, atol=1e-5)
    assert np.array_equal(est.labels_, final.predict(Z))
    assert not np.allclose(est.cluster_centers_, start, rtol=0, atol=1e-3)  # Lloyd moved them


def test_the_work_of_choosing_k_does_not_grow_with_the_rows(monkeypatch):
    """Every fit of choosing k sees at most `sample_size` rows (the k-choice costs the same at
    any population); one fit, the chosen k's, sees every row. At or under `sample_size` rows
    nothing is refitted: the chosen k's fit is the model."""
    seen: list[int] = []
    fit_one = UserClusterer._fit_one

    def spy(self, Z, k, init, seed):
        seen.append(Z.shape[0])
        return fit_one(self, Z, k, init, seed)

    monkeypatch.setattr(UserClusterer, "_fit_one", spy)
    centers = [[0, 0], [6, 0], [0, 6]]
    for n in (4000, 12000):
        X, _ = make_blobs(n, 2, centers=centers, random_state=1)
        seen.clear()
        UserClusterer(k_range=(2, 5), algorithm="kmeans", sample_size=1000, n_threads=1).fit(X)
        assert seen.count(n) == 1 and max(s for s in seen if s != n) <= 1000
        assert len(seen) == 4 + 4 * 5 + 1  # one per k, one per k and round, the final fit
    X, _ = make_blobs(900, 2, centers=centers, random_state=1)
    seen.clear()
    UserClusterer(k_range=(2, 5), algorithm="kmeans", sample_size=1000, n_threads=1).fit(X)
    assert len(seen) == 4 + 4 * 5 and max(seen) == 900


def test_a_group_weighs_the_same_whatever_its_column_count():
    feats = ClusteringFeatures(
        money=(),
        counts=(),
        shares=("a1", "a2", "a3", "a4", "b", "c", "d"),
        groups={"a": ("a1", "a2", "a3", "a4"), "b": ("b",)},
        group_weights={"b": 2.0},
    )
    w = feats.column_weights(("a1", "a2", "a3", "a4", "b", "c", "d"))
    # c and d belong to no group: together they are one group, "other"
    assert w == {
        "a1": 0.5,
        "a2": 0.5,
        "a3": 0.5,
        "a4": 0.5,
        "b": 2.0,
        "c": pytest.approx(0.5**0.5),
        "d": pytest.approx(0.5**0.5),
    }
    # a group's share of the squared distance: 4 identical standardised columns at 0.5 each
    # weigh as much as one column at 1
    rng = np.random.default_rng(0)
    base = rng.normal(size=400)
    df = pl.DataFrame({"a1": base, "a2": base, "a3": base, "a4": base, "b": rng.normal(size=400)})
    space = FeatureSpace.fit(df, numeric=df.columns, scaler="standard", weights=w)
    Z = space.transform(df)
    var_a = float(Z[:, :4].var(axis=0).sum())
    assert var_a == pytest.approx(float(Z[:, 4].var()) / 4, rel=1e-4)
    assert var_a == pytest.approx(1.0, rel=1e-4)
    with pytest.raises(ValueError, match="one group only"):
        ClusteringFeatures(groups={"x": ("a",), "y": ("a",)})
    with pytest.raises(ValueError, match="unknown group"):
        ClusteringFeatures(group_weights={"nope": 1.0})


def test_standard_scaler_matches_sklearn():
    from sklearn.preprocessing import StandardScaler

    df, _ = _numeric_table()
    df = df.with_columns(pl.all().fill_null(0.0).fill_nan(0.0))
    space = FeatureSpace.fit(df, numeric=df.columns, scaler="standard")
    want = StandardScaler().fit_transform(df.to_numpy())
    np.testing.assert_allclose(space.transform(df), want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# A derived feature: recency of any activity


def test_a_derived_feature_is_the_least_of_its_columns_not_null():
    df = pl.DataFrame(
        {
            "recency_days": [10, None, 100, None, 400],
            "days_since_last_event": [3, 20, None, None, 900],
        }
    )
    space = FeatureSpace.fit(
        df,
        ["active"],
        scaler="standard",
        fill_values={"active": 1095.0},
        least={"active": ("recency_days", "days_since_last_event")},
    )
    assert space.input_columns == ("recency_days", "days_since_last_event")
    assert space.feature_names_out == ("active",)
    # by hand: the least present value of each row, a row with neither gets the fill
    logged = np.log1p([3.0, 20.0, 100.0, 1095.0, 400.0])
    want = (logged - logged.mean()) / logged.std()
    np.testing.assert_allclose(space.transform(df)[:, 0], want, rtol=1e-5)
    assert FeatureSpace.from_dict(space.to_dict()) == space
    with pytest.raises(DataError, match=r"lacks feature column.*days_since_last_event"):
        space.transform(df.drop("days_since_last_event"))
    with pytest.raises(ValidationError, match="least: 'x' must name one or more other"):
        ClusteringFeatures(least={"x": ("x", "y")})
    with pytest.raises(ValidationError, match="least: 'active_recency_days' must name"):
        ClusteringFeatures(least={"active_recency_days": ()})


def _newcomers_and_lapsed(n: int = 300) -> tuple[pl.DataFrame, np.ndarray]:
    """Regulars, the lapsed, and newcomers of whom half have browsed but never bought."""
    rng = np.random.default_rng(11)
    u = rng.uniform

    def group(recency, seen, freq, aov, tenure, events):
        freq = np.asarray(freq, dtype=float)
        bought = freq > 0
        return pl.DataFrame(
            {
                "recency_days": np.where(bought, recency, np.nan),
                "days_since_last_event": seen,
                "frequency_52w": freq,
                "frequency_13w": np.minimum(freq, 1.0),
                "monetary_52w": freq * aov,
                "aov_52w": np.where(bought, aov, np.nan),
                "tenure_weeks": np.where(bought, tenure, np.nan),
                "events_13w": np.asarray(events, dtype=float),
                "discount_share": np.where(bought, u(0, 0.1, len(freq)), np.nan),
            }
        ).with_columns(pl.all().fill_nan(None))

    regulars = group(
        u(1, 30, n),
        u(1, 10, n),
        rng.poisson(6, n) + 2,
        u(300, 900, n),
        u(60, 200, n),
        rng.poisson(8, n),
    )
    lapsed = group(
        u(300, 700, n), np.full(n, np.nan), np.zeros(n), u(300, 900, n), u(60, 200, n), np.zeros(n)
    )
    lapsed = lapsed.with_columns(pl.lit(None, pl.Float64).alias("days_since_last_event"))
    newcomers = group(
        u(1, 30, n),
        u(1, 20, n),
        (rng.random(n) < 0.5).astype(float),
        u(300, 900, n),
        u(1, 4, n),
        rng.poisson(4, n) + 1,
    )
    df = pl.concat([regulars, lapsed, newcomers]).with_row_index("i")
    df = df.with_columns(pl.format("p{}", pl.col("i")).alias("one_id")).drop("i")
    truth = np.repeat([0, 1, 2], n)
    return df, truth


def test_newcomers_who_browse_but_never_bought_are_recent_not_lapsed():
    df, truth = _newcomers_and_lapsed()
    never = (truth == 2) & df["recency_days"].is_null().to_numpy()
    bought = (truth == 2) & ~never

    def majority(labels: np.ndarray, rows: np.ndarray) -> int:
        return int(np.bincount(labels[rows]).argmax())

    assignments, _, state = cluster_stage(df, ClusteringConfig(k=3))
    got = assignments["cluster"].to_numpy()
    assert majority(got, never) == majority(got, bought) != majority(got, truth == 1)
    assert adjusted_rand_score(truth, got) > 0.9
    # the derivation is part of the saved state: a live table's nearest centroid, from the
    # state read back, gives everyone the same cluster
    back = ClusterModelState.from_json(state.to_json())
    assert dict(back.space.least) == {
        "active_recency_days": ("recency_days", "days_since_last_event")
    }
    assert_frame_equal(
        assign_clusters(df, back).select("one_id", "cluster"),
        assignments.select("one_id", "cluster"),
    )
    # measured on purchase recency alone, with order value and discount share zero for a
    # non-buyer (the settings before), the never-bought newcomers sat with the lapsed
    defaults = ClusteringFeatures()
    before = ClusteringConfig(
        k=3,
        features=ClusteringFeatures(
            counts=tuple(
                "recency_days" if c == "active_recency_days" else c for c in defaults.counts
            ),
            least={},
            groups={**defaults.groups, "recency": ("recency_days",)},
        ),
        fill_values={**ClusteringConfig().fill_values, "aov_52w": 0.0, "discount_share": 0.0},
    )
    old, _, _ = cluster_stage(df, before)
    old_labels = old["cluster"].to_numpy()
    assert majority(old_labels, never) == majority(old_labels, truth == 1)
    assert majority(old_labels, never) != majority(old_labels, bought)


def test_a_previous_state_of_another_derivation_is_not_reused_and_sources_are_typed():
    df, _ = _newcomers_and_lapsed(120)
    cfg = ClusteringConfig(k=3)
    _, first = fit_stable(df, cfg)
    _, again = fit_stable(df, cfg, first)  # the same space: numbers kept
    assert again.cluster_ids == first.cluster_ids
    # the same columns, but recency from orders alone: another space, new numbers
    other = cfg.model_copy(
        update={
            "features": cfg.features.model_copy(
                update={"least": {"active_recency_days": ("recency_days",)}}
            )
        }
    )
    _, moved = fit_stable(df, other, first)
    assert dict(moved.space.least) == {"active_recency_days": ("recency_days",)}
    assert min(moved.cluster_ids) >= first.next_id
    with pytest.raises(DataError, match="days_since_last_event have the wrong type"):
        fit_stable(df.with_columns(pl.col("days_since_last_event").cast(pl.String)), cfg)
    with pytest.raises(DataError, match="days_since_last_event have the wrong type"):
        first.space.transform(df.with_columns(pl.col("days_since_last_event").cast(pl.String)))
