"""CVAT for images 1.1 XML: a file written by hand from CVAT's XML format page (docs.cvat.ai,
"XML annotation format") and its exporter (``<mask rle left top width height>``: row-major runs
over the crop, background first), read, checked pixel by pixel, written back and read again."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instkit.errors import FormatError
from instkit.io.cvat import decode_cvat_rle, encode_cvat_rle, read_cvat, write_cvat
from instkit.masks import BitmapMask, Masks, PolygonMask, RLEMask

XML = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <id>7</id>
      <name>street</name>
      <size>2</size>
      <mode>annotation</mode>
      <labels>
        <label><name>car</name><color>#fa3253</color><type>any</type><attributes/></label>
        <label><name>person</name><color>#34d1b7</color><type>any</type><attributes/></label>
      </labels>
    </task>
  </meta>
  <image id="0" name="a.png" width="12" height="10">
    <box label="car" source="manual" occluded="0" xtl="1.00" ytl="2.00" xbr="5.00" ybr="6.00" z_order="0">
    </box>
    <polygon label="person" source="manual" occluded="1" points="6.00,1.00;10.00,1.00;10.00,4.00" z_order="2">
      <attribute name="pose">standing</attribute>
    </polygon>
    <mask label="car" source="manual" occluded="0" rle="0, 2, 2, 2" left="7" top="6" width="3" height="2" z_order="1">
    </mask>
    <points label="person" source="manual" occluded="0" points="3.00,3.00" z_order="0">
    </points>
  </image>
  <image id="1" name="b.png" width="12" height="10">
    <polygon label="car" source="manual" occluded="0" points="1.00,1.00;4.00,1.00;4.00,4.00" z_order="0" group_id="3">
    </polygon>
    <polygon label="car" source="manual" occluded="0" points="6.00,6.00;9.00,6.00;9.00,9.00" z_order="0" group_id="3">
    </polygon>
    <box label="car" source="manual" occluded="0" xtl="0.50" ytl="0.50" xbr="9.50" ybr="9.50" z_order="0" group_id="3">
    </box>
    <polyline label="person" source="manual" occluded="0" points="0.00,9.00;11.00,9.00" z_order="0">
    </polyline>
  </image>
</annotations>
"""


def _write(folder: Path, text: str = XML) -> Path:
    (folder / "images").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        Image.new("RGB", (12, 10), (90, 90, 90)).save(folder / "images" / name)
    (folder / "annotations.xml").write_text(text)
    return folder


def test_elements_become_objects(tmp_path: Path) -> None:
    data = read_cvat(_write(tmp_path / "cvat"))
    assert data.categories.names == ["car", "person"]
    assert data.categories[0].extra == {"color": "#fa3253"}
    a, b = data
    assert (a.image_id, a.meta.file_name, a.image_size) == (0, "a.png", (10, 12))
    assert a.image.shape == (10, 12, 3)  # found under images/
    inst = a.instances
    assert inst.labels.tolist() == [0, 1, 0] and inst.ids.tolist() == [1, 2, 3]
    dense = inst.masks.to_dense()
    box = np.zeros((10, 12), bool)
    box[2:6, 1:5] = True
    np.testing.assert_array_equal(dense[0], box)  # a <box> is its rectangle
    assert isinstance(inst.masks.items[1], PolygonMask)
    # rle "0, 2, 2, 2" over the 3x2 crop at (left 7, top 6), row-major: 1 1 0 / 0 1 1
    expected = np.zeros((10, 12), bool)
    expected[6, 7:9] = True
    expected[7, 8:10] = True
    assert isinstance(inst.masks.items[2], BitmapMask)
    np.testing.assert_array_equal(dense[2], expected)
    assert inst.extras["occluded"].tolist() == [False, True, False]
    assert inst.extras["z_order"].tolist() == [0, 2, 1]
    assert inst.extras["cvat_attributes"][1] == {"pose": "standing"}
    assert len(a.meta.extra["cvat_other"]) == 1 and "<points" in a.meta.extra["cvat_other"][0]
    # image b: the three shapes of group 3 are one object: two polygon parts, the grouped box
    inst = b.instances
    assert len(inst) == 1 and len(inst.masks.items[0].parts) == 2
    np.testing.assert_array_equal(inst.boxes[0], [0.5, 0.5, 9.5, 9.5])
    assert data.read_counts == {"other_shapes": 2}


def test_round_trip_writes_unchanged_elements_back(tmp_path: Path) -> None:
    data = read_cvat(_write(tmp_path / "cvat"))
    counts = write_cvat(data, tmp_path / "out" / "annotations.xml")
    assert counts["images"] == 2 and counts["objects"] == 4 and counts["other_shapes"] == 2
    assert counts["image_ids_renumbered"] == 0 and counts["category_ids_renumbered"] == 0
    assert (tmp_path / "out" / "images" / "a.png").is_file()

    def shapes(path: Path) -> list[tuple[str, dict[str, str]]]:
        root = ET.parse(path).getroot()
        return [(el.tag, dict(el.attrib)) for image in root.iter("image") for el in image]

    assert shapes(tmp_path / "out" / "annotations.xml") == shapes(tmp_path / "cvat" / "annotations.xml")
    again = read_cvat(tmp_path / "out")
    for x, y in zip(data, again):
        assert x.instances.masks == y.instances.masks
        np.testing.assert_array_equal(x.instances.boxes, y.instances.boxes)
        assert x.instances.extras["cvat_attributes"].tolist() == \
            y.instances.extras["cvat_attributes"].tolist()


def test_changed_objects_are_written_from_their_geometry(tmp_path: Path) -> None:
    data = read_cvat(_write(tmp_path / "cvat"))
    samples = []
    for sample in data:
        inst = sample.instances
        rle = Masks([RLEMask(c) for c in inst.masks.rle_counts()], inst.image_size)
        samples.append(sample.replace(instances=inst.replace(masks=rle)))
    write_cvat(samples, tmp_path / "out.xml", data.categories)
    root = ET.parse(tmp_path / "out.xml").getroot()
    assert [el.tag for el in root.find("image")] == ["mask", "mask", "mask", "points"]
    polygon = root.find("image").findall("mask")[1]
    assert polygon.get("occluded") == "1" and polygon.get("z_order") == "2"
    assert polygon.find("attribute").text == "standing"
    again = read_cvat(tmp_path / "out.xml", images=tmp_path / "images")
    for x, y in zip(data, again):
        assert x.instances.masks == y.instances.masks  # pixel for pixel


def test_rle_encoding_matches_the_row_major_convention() -> None:
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (2, 3), (7, 5), (16, 9)]:
        crop = rng.random(shape) < 0.5
        runs = encode_cvat_rle(crop)
        assert sum(runs) == crop.size
        np.testing.assert_array_equal(decode_cvat_rle(runs, shape[1], shape[0]), crop)
    assert encode_cvat_rle(np.array([[1, 1, 0], [0, 1, 1]], bool)) == [0, 2, 2, 2]
    assert encode_cvat_rle(np.array([[0, 1], [1, 1]], bool)) == [1, 3]


@pytest.mark.parametrize(("old", "new", "where", "words"), [
    ('rle="0, 2, 2, 2"', 'rle="0, 2, 2, 3"', "image[0]/mask[2]", "sum to 7"),
    ('rle="0, 2, 2, 2"', 'rle="0, two"', "image[0]/mask[2]", "comma-separated"),
    ('label="person" source="manual" occluded="1"', 'label="bike" source="manual" occluded="1"',
     "image[0]/polygon[1]", "not among the <meta> labels"),
    ('points="6.00,1.00;10.00,1.00;10.00,4.00"', 'points="6.00,1.00;10.00"', "image[0]/polygon[1]",
     "x0,y0;x1,y1"),
    ('points="6.00,1.00;10.00,1.00;10.00,4.00"', 'points="6.00,1.00;10.00,1.00"',
     "image[0]/polygon[1]", "at least 3"),
    ('xbr="5.00"', 'xbr="0.00"', "image[0]/box[0]", "xbr < xtl"),
    ('width="12" height="10">\n    <box', 'width="12">\n    <box', "image[0]", "'height'"),
    ('width="12" height="10">\n    <box', 'width="120000" height="100000">\n    <box', "image[0]",
     "pixels, more than the limit"),
    ('xtl="1.00"', 'xtl="-1e30"', "image[0]/box[0]", "beyond +-"),
    ('left="7"', 'left="11"', "image[0]/mask[2]", "leaves the 12x10 image"),
    ('z_order="2"', 'z_order="high"', "image[0]/polygon[1]", "not a number"),
])
def test_bad_elements_are_located(tmp_path: Path, old: str, new: str, where: str,
                                  words: str) -> None:
    assert old in XML
    from instkit.sample import ImageTooLargeError

    folder = _write(tmp_path / "cvat", XML.replace(old, new, 1))
    with pytest.raises((FormatError, ImageTooLargeError)) as caught:
        read_cvat(folder)
    message = str(caught.value)
    assert words in message and f"at {where}" in message and "annotations.xml" in message


def test_video_exports_and_broken_xml_are_refused(tmp_path: Path) -> None:
    folder = _write(tmp_path / "v", XML.replace("</annotations>",
                                                '<track id="0" label="car"></track></annotations>'))
    with pytest.raises(FormatError, match="CVAT for video"):
        read_cvat(folder)
    folder = _write(tmp_path / "x", XML[:300])
    with pytest.raises(FormatError, match="invalid XML"):
        read_cvat(folder)
    folder = _write(tmp_path / "e", XML.replace('encoding="utf-8"', 'encoding="no-such"'))
    with pytest.raises(FormatError, match="unknown encoding"):
        read_cvat(folder)


PROJECT = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <project>
      <name>p</name>
      <subsets>Train
Test</subsets>
      <labels>
        <label><name>car</name><attributes/></label>
        <label><name>hand</name><type>skeleton</type><attributes/></label>
        <label><name>tip</name><type>points</type><attributes/><parent>hand</parent></label>
      </labels>
    </project>
  </meta>
  <image id="0" name="img0.png" subset="Train" task_id="4" width="8" height="6">
    <polygon label="car" occluded="0" points="1,1;5,1;5,4" z_order="0"/>
    <skeleton label="hand" occluded="0" points="" z_order="0">
      <points label="tip" occluded="0" outside="0" points="2,2" z_order="0"/>
    </skeleton>
  </image>
  <image id="0" name="img0.png" subset="Test" task_id="5" width="8" height="6">
    <box label="car" occluded="1" xtl="0" ytl="0" xbr="3" ybr="2" z_order="1"/>
  </image>
</annotations>
"""


def test_project_export_with_subsets(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    for subset in ("Train", "Test"):
        (folder / "images" / subset).mkdir(parents=True)
        Image.new("RGB", (8, 6)).save(folder / "images" / subset / "img0.png")
    (folder / "annotations.xml").write_text(PROJECT)
    data = read_cvat(folder)
    assert data.categories.names == ["car", "hand"]  # "tip" (a skeleton's point) is no class
    assert [s.meta.file_name for s in data] == ["Train/img0.png", "Test/img0.png"]
    assert [s.image_id for s in data] == [0, 1]  # frame ids repeat across subsets
    assert [s.meta.extra["split"] for s in data] == ["Train", "Test"]
    assert all(s.image.shape == (6, 8, 3) for s in data)
    assert "<skeleton" in data[0].meta.extra["cvat_other"][0]
    write_cvat(data, tmp_path / "out" / "annotations.xml")
    images = ET.parse(tmp_path / "out" / "annotations.xml").getroot().findall("image")
    assert [(i.get("name"), i.get("subset")) for i in images] == [("img0.png", "Train"),
                                                                  ("img0.png", "Test")]
    assert (tmp_path / "out" / "images" / "Test" / "img0.png").is_file()
    again = read_cvat(tmp_path / "out")
    assert [s.meta.file_name for s in again] == ["Train/img0.png", "Test/img0.png"]
    assert again[1].instances.masks == data[1].instances.masks


POSE = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <labels>
        <label><name>person</name><type>any</type><attributes/></label>
        <label><name>pose</name><type>skeleton</type><attributes/></label>
        <label><name>head</name><type>points</type><attributes/><parent>pose</parent></label>
        <label><name>tail</name><type>points</type><attributes/><parent>pose</parent></label>
      </labels>
    </task>
  </meta>
  <image id="0" name="a.png" width="12" height="10">
    <polygon label="person" occluded="0" points="1,1;8,1;8,8" z_order="0" group_id="4"/>
    <skeleton label="pose" occluded="0" points="" z_order="0" group_id="4">
      <points label="head" occluded="1" outside="0" points="2.5,3" z_order="0"/>
      <points label="tail" occluded="0" outside="1" points="7,7" z_order="0"/>
    </skeleton>
    <skeleton label="pose" occluded="0" points="" z_order="0">
      <points label="head" occluded="0" outside="0" points="1,1" z_order="0"/>
    </skeleton>
  </image>
</annotations>
"""


def test_skeletons_grouped_with_an_object_are_its_keypoints(tmp_path: Path) -> None:
    folder = tmp_path / "pose"
    (folder / "images").mkdir(parents=True)
    Image.new("RGB", (12, 10)).save(folder / "images" / "a.png")
    (folder / "annotations.xml").write_text(POSE)
    data = read_cvat(folder)
    person = data.categories[0]
    assert person.keypoints == ("head", "tail") and person.extra["cvat_skeleton"] == "pose"
    inst = data[0].instances
    assert len(inst) == 1  # the skeleton is the person's keypoints, not an object
    np.testing.assert_array_equal(inst.keypoints[0], [[2.5, 3, 1], [0, 0, 0]])
    assert data.read_counts == {"other_shapes": 1}  # the skeleton without a group
    write_cvat(data, tmp_path / "out" / "annotations.xml")
    root = ET.parse(tmp_path / "out" / "annotations.xml").getroot()
    assert [el.tag for el in root.find("image")] == ["polygon", "skeleton", "skeleton"]
    labels = {el.findtext("name"): el.findtext("parent") for el in root.iter("label")}
    assert labels == {"person": None, "pose": None, "head": "pose", "tail": "pose"}
    np.testing.assert_array_equal(read_cvat(tmp_path / "out")[0].instances.keypoints,
                                  inst.keypoints)


def test_coco_keypoints_through_cvat(pose_minicoco: dict[str, Path], tmp_path: Path) -> None:
    from instkit.io.coco import read_coco

    source = read_coco(pose_minicoco["val_json"], pose_minicoco["val_images"])
    write_cvat(source, tmp_path / "out" / "annotations.xml")
    back = {s.meta.file_name: s for s in read_cvat(tmp_path / "out")}
    names = {el.findtext("name"): el.findtext("parent")
             for el in ET.parse(tmp_path / "out" / "annotations.xml").getroot().iter("label")}
    assert names["nose"] == "person skeleton" and names["person skeleton"] is None
    for sample in source:
        mine = back[sample.meta.file_name].instances
        theirs = sample.instances
        assert mine.masks == theirs.masks
        labelled = theirs.keypoints[:, :, 2] > 0
        np.testing.assert_array_equal(mine.keypoints[:, :, 2], theirs.keypoints[:, :, 2])  # v=1 too
        np.testing.assert_array_equal(mine.keypoints[labelled], theirs.keypoints[labelled])
    assert back[source[0].meta.file_name].meta.categories[0].keypoints == source.categories[0].keypoints


def test_writing_over_the_input_is_refused(tmp_path: Path) -> None:
    from instkit.errors import InstkitError

    folder = _write(tmp_path / "cvat")
    data = read_cvat(folder)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(InstkitError, match="write over the input"):
        write_cvat(data, folder / "annotations.xml", images_dir=tmp_path / "elsewhere")
    assert (folder / "annotations.xml").read_text() == XML
