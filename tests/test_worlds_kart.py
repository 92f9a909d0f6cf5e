"""The kart world: schema, determinism, geometry, rosters, gallery, bad input."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from worlds import kart


def test_same_seed_same_bytes_other_seed_other_bytes():
    info_a, jpegs_a = kart.make_frame(seed=11, frame=3, num_views=3)
    info_b, jpegs_b = kart.make_frame(seed=11, frame=3, num_views=3)
    info_c, jpegs_c = kart.make_frame(seed=12, frame=3, num_views=3)
    assert json.dumps(info_a) == json.dumps(info_b) and jpegs_a == jpegs_b
    assert jpegs_a != jpegs_c


def test_files_do_not_depend_on_worker_count(tmp_path):
    kart.generate(split="a", num_frames=3, seed=5, data_dir=str(tmp_path), num_views=2, workers=1)
    kart.generate(split="b", num_frames=3, seed=5, data_dir=str(tmp_path), num_views=2, workers=2)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert len(names) == 3 * 3  # 3 info files + 6 pictures
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_schema_matches_the_real_recordings(kart_data):
    infos = sorted((kart_data / "tiny").glob("*_info.json"))
    assert [p.name for p in infos] == [f"{i:05x}_info.json" for i in range(6)]
    for path in infos:
        info = json.loads(path.read_text())
        assert {"track", "karts", "detections", "distance_down_track", "velocity"} <= set(info)
        assert info["track"] in kart.TRACKS
        assert all(name in kart.KARTS for name in info["karts"])
        assert len(set(info["karts"])) == len(info["karts"])
        assert len(info["distance_down_track"]) == len(info["velocity"]) == len(info["karts"])
        assert len(info["detections"]) == 4
        for v, rows in enumerate(info["detections"]):
            img = Image.open(path.parent / path.name.replace("_info.json", f"_{v:02d}_im.jpg"))
            assert img.format == "JPEG" and img.size == (150, 100)
            for row in rows:
                class_id, kart_id, x1, y1, x2, y2 = row
                assert class_id == 1 and 0 <= kart_id < len(info["karts"])
                assert 0 <= x1 < x2 <= 600 and 0 <= y1 < y2 <= 400


def test_boxes_in_bounds_and_ego_found_from_boxes():
    for frame in range(25):
        info, _ = kart.make_frame(seed=99, frame=frame, num_views=10)
        for v, rows in enumerate(info["detections"]):
            assert all(0 <= r[2] < r[4] <= 600 and 0 <= r[3] < r[5] <= 400 for r in rows)
            assert kart.find_ego(rows) == info["ego"][v] == v


def test_perspective_ahead_is_higher_and_smaller():
    """Karts farther down the track than the ego sit higher in the picture and are smaller."""
    seen = 0
    for frame in range(10):
        info, _ = kart.make_frame(seed=3, frame=frame, num_views=10)
        s = info["distance_down_track"]
        for v, rows in enumerate(info["detections"]):
            ego = next(r for r in rows if r[1] == v)
            for r in rows:
                if r[1] != v and s[r[1]] > s[v] + 1 and r[3] > 0 and r[5] < 400:
                    assert r[5] < ego[5] and (r[5] - r[3]) < (ego[5] - ego[3])
                    seen += 1
    assert seen > 20


def test_rosters_are_large_and_looks_distinct():
    assert len(kart.KARTS) >= 15 and len(kart.TRACKS) >= 12
    assert len(set(kart.KARTS.values())) == len(kart.KARTS)
    assert len({(t.sky_top, t.ground, t.road, t.props) for t in kart.TRACKS.values()}) == len(kart.TRACKS)


def test_gallery_writes_png(kart_data, tmp_path):
    out = tmp_path / "sheet.png"
    kart.gallery(split="tiny", data_dir=str(kart_data), num_frames=2, num_views=3, output=str(out))
    img = Image.open(out)
    assert img.format == "PNG" and img.size == (3 * 450, 2 * 314)


def test_existing_split_is_not_overwritten_without_asking(kart_data):
    before = (kart_data / "tiny" / "00000_00_im.jpg").read_bytes()
    with pytest.raises(SystemExit, match="--overwrite"):
        kart.generate(split="tiny", num_frames=2, seed=1, data_dir=str(kart_data), num_views=2, workers=1)
    assert (kart_data / "tiny" / "00000_00_im.jpg").read_bytes() == before


@pytest.mark.parametrize("kwargs, message", [
    ({"num_frames": 0}, "--num_frames"),
    ({"num_views": 40}, "--num_views"),
    ({"seed": -1}, "--seed"),
])
def test_bad_options_get_one_line_errors(tmp_path, kwargs, message):
    with pytest.raises(SystemExit, match=message):
        kart.generate(split="x", data_dir=str(tmp_path), workers=1, **kwargs)


def test_unwritable_data_dir(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(SystemExit, match="writable --data_dir"):
        kart.generate(split="x", num_frames=1, data_dir=str(not_a_dir), workers=1)


def test_cli(run_cli, tmp_path):
    assert "num_frames" in run_cli("-m", "worlds", "kart", "--help").output
    assert "num_frames" in run_cli("-m", "worlds", "kart", "gallery", "--help").output
    r = run_cli("-m", "worlds", "kart", "--split", "c", "--num_frames", "2", "--num_views", "2",
                "--seed", "4", "--data_dir", str(tmp_path), "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "c").glob("*_im.jpg"))) == 4
    bad = run_cli("-m", "worlds", "nowhere")
    assert bad.returncode != 0 and "unknown world" in bad.stderr
