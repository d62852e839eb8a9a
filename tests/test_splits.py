import pandas as pd
import pytest

from actionrec.errors import UserError
from actionrec.splits import choose_subset, group_split, official_split, random_split, shared_groups
from actionrec.ucf101 import parse_clip_name, read_class_index, read_split_list

FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


@pytest.fixture(scope="module")
def ucf_clips() -> pd.DataFrame:
    """All 13,320 clips of UCF-101 as the official lists name them (no video files needed)."""
    videos = read_split_list("train", 1) + read_split_list("test", 1)
    rows = []
    for video in videos:
        _, group, clip = parse_clip_name(video.split("/")[1])
        rows.append({"video": video, "class_name": video.split("/")[0], "group": group, "clip": clip})
    return pd.DataFrame(rows).sort_values("video").reset_index(drop=True)


def test_clip_table_matches_ucf101(ucf_clips):
    assert len(ucf_clips) == 13320 and ucf_clips["class_name"].nunique() == 101
    assert set(ucf_clips["class_name"]) == set(read_class_index())


def test_subset_is_deterministic_and_spreads_over_groups(ucf_clips):
    subset = choose_subset(ucf_clips, [], 25, 60, seed=0)
    assert subset.equals(choose_subset(ucf_clips, [], 25, 60, seed=0))
    assert sorted(subset["class_name"].unique()) == read_class_index()[:25]
    assert list(subset.columns) == ["video", "label", "class_name", "group", "clip"]
    per_class = subset.groupby("class_name")
    assert (per_class.size() <= 60).all()
    # 25 groups per class and 60 clips: round-robin keeps every group
    assert (per_class["group"].nunique() == 25).all()
    assert sorted(subset["label"].unique()) == list(range(25))


def test_explicit_classes_win_and_unknown_ones_fail(ucf_clips):
    subset = choose_subset(ucf_clips, ["Typing", "Archery"], 25, 200, seed=0)
    assert sorted(subset["class_name"].unique()) == ["Archery", "Typing"]
    with pytest.raises(UserError, match="NoSuchClass"):
        choose_subset(ucf_clips, ["NoSuchClass"], 25, 200, seed=0)


def test_group_split_is_disjoint_stratified_and_near_target(ucf_clips):
    subset = choose_subset(ucf_clips, [], 25, 200, seed=0)
    split = group_split(subset, FRACTIONS, seed=0)
    assert shared_groups(subset, split) == 0
    for name, fraction in FRACTIONS.items():
        part = subset[split == name]
        assert part["class_name"].nunique() == 25, name
        assert abs(len(part) / len(subset) - fraction) <= 0.05, name
    assert split.equals(group_split(subset, FRACTIONS, seed=0))
    assert not split.equals(group_split(subset, FRACTIONS, seed=1))


def test_official_split_test_is_the_official_list_exactly(ucf_clips):
    subset = choose_subset(ucf_clips, [], 25, 200, seed=0)
    classes = set(subset["class_name"])
    for fold in (1, 2, 3):
        test_list = read_split_list("test", fold)
        split = official_split(subset, test_list, FRACTIONS, seed=0)
        expected = {v for v in test_list if v.split("/")[0] in classes}
        assert set(subset["video"][split == "test"]) == expected
        assert shared_groups(subset, split) == 0
        assert (split == "val").sum() > 0


def test_official_split_on_the_handstand_quirk(ucf_clips):
    subset = choose_subset(ucf_clips, ["HandstandPushups"], 1, 200, seed=0)
    split = official_split(subset, read_split_list("test", 1), FRACTIONS, seed=0)
    assert set(subset["group"][split == "test"]) == set(range(1, 8))  # fold 1 holds out g01-g07


def test_random_split_leaks_groups(ucf_clips):
    subset = choose_subset(ucf_clips, [], 5, 200, seed=0)
    assert shared_groups(subset, random_split(subset, FRACTIONS, seed=0)) > 0


def test_group_split_refuses_classes_with_too_few_groups(ucf_clips):
    subset = choose_subset(ucf_clips, [], 2, 200, seed=0)
    subset = subset[subset["group"] <= 2]
    with pytest.raises(UserError, match="groups"):
        group_split(subset, FRACTIONS, seed=0)


def test_the_split_stage_refuses_an_empty_train_or_val_split_in_one_line(tmp_path):
    """split.method official with one group per class, all in the official test list: train
    and val would be empty. The stage stops before writing anything, instead of leaving train
    to crash on an empty set."""
    import subprocess

    import yaml

    from tests.conftest import committed_params, stage_argv

    (tmp_path / "data").mkdir()
    classes = ["ApplyEyeMakeup", "ApplyLipstick"]
    pd.DataFrame({"video": [f"{c}/v_{c}_g01_c0{i}.avi" for c in classes for i in (1, 2)], "label": [0, 0, 1, 1],
                  "class_name": [c for c in classes for _ in (1, 2)], "group": 1, "clip": [1, 2, 1, 2]}).to_csv(
        tmp_path / "data/metadata.csv", index=False)
    params = committed_params()
    params["data"].update(source="ucf101", root="UCF-101", allow_random_weights=True)
    params["split"]["method"] = "official"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(stage_argv("split"), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: split.method official left the train and val split empty")
    assert not (tmp_path / "data/splits").exists()


@pytest.mark.parametrize("method", ["group", "random"])
def test_adding_or_removing_a_class_leaves_the_other_classes_unchanged(ucf_clips, method):
    """Each class draws from its own seeded generator: the shared classes keep the same
    videos and the same split, so experiments on 24 or 26 classes compare on the same test."""
    split = group_split if method == "group" else random_split

    def assignment(classes: list[str]) -> pd.Series:
        subset = choose_subset(ucf_clips, classes, 0, 40, seed=3)
        return pd.Series(split(subset, FRACTIONS, 3).to_numpy(), index=subset["video"]).sort_index()

    classes = read_class_index()[:6]
    base = assignment(classes)
    fewer = assignment(classes[1:])       # remove the first class
    more = assignment(classes + ["Typing"])  # add a class that sorts after the others
    shared = fewer.index
    assert set(shared) == {v for v in base.index if not v.startswith(classes[0] + "/")}
    assert fewer.equals(base.loc[shared])
    assert more.loc[base.index].equals(base)
    assert (base == "test").sum() > 0
