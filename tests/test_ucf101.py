import pytest

from actionrec.ucf101 import parse_clip_name, read_class_index, read_split_list, scan_dataset


def test_parse_clip_name():
    assert parse_clip_name("v_ApplyEyeMakeup_g08_c01.avi") == ("ApplyEyeMakeup", 8, 1)
    assert parse_clip_name("v_HandStandPushups_g25_c04.avi") == ("HandStandPushups", 25, 4)
    for bad in ("ApplyEyeMakeup_g08_c01.avi", "v_ApplyEyeMakeup_g08.avi", "v_A_g01_c01.mp4"):
        with pytest.raises(ValueError):
            parse_clip_name(bad)


def test_official_lists_keep_crlf_and_the_handstand_quirk():
    classes = read_class_index()
    assert len(classes) == 101 and classes[0] == "ApplyEyeMakeup" and "HandstandPushups" in classes
    test = read_split_list("test", 1)
    assert len(test) == 3783 and not any(line.endswith("\r") for line in test)
    assert "HandstandPushups/v_HandStandPushups_g01_c01.avi" in test
    train = read_split_list("train", 1)
    assert len(train) == 9537 and not set(train) & set(test)


def test_scan_uses_folder_class_and_reports_odd_files(tmp_path):
    for rel in ("HandstandPushups/v_HandStandPushups_g01_c01.avi", "Archery/v_Archery_g02_c03.avi",
                "Archery/notes.txt", "Archery/v_Bowling_g01_c01.avi", "loose.avi"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    clips, rejected = scan_dataset(tmp_path)
    assert clips.to_dict("records") == [
        {"video": "Archery/v_Archery_g02_c03.avi", "class_name": "Archery", "group": 2, "clip": 3},
        {"video": "HandstandPushups/v_HandStandPushups_g01_c01.avi", "class_name": "HandstandPushups",
         "group": 1, "clip": 1}]
    assert sorted(path for path, _ in rejected) == ["Archery/notes.txt", "Archery/v_Bowling_g01_c01.avi",
                                                    "loose.avi"]
