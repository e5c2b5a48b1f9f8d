"""Category id <-> contiguous label mapping, saved as ``classes.json`` beside the MindRecord files.

COCO category ids are arbitrary integers (1..90 with gaps in COCO itself). The network wants labels
1..K with 0 for background, so the categories of the annotation file are sorted by id and numbered.
The mapping travels with the MindRecord so that training, evaluation and result files agree on it.
"""
import json
import os

from src.config import ConfigError
from src.dataset.errors import DatasetError
from src.utils.atomic_io import write_json_atomic

CLASSES_FILE = "classes.json"


class ClassMap:
    """Categories of one data set in label order.

    Args:
        categories: list of (category_id, name), in any order; ids must be distinct.
    Attributes:
        category_ids: list of K ints, category_ids[label - 1] is the COCO id of ``label``.
        names: list of K names in the same order.
        num_classes: K + 1 (background included), the network's ``num_classes``.
    """

    def __init__(self, categories):
        ordered = sorted((int(cid), str(name)) for cid, name in categories)
        self.category_ids = [cid for cid, _ in ordered]
        self.names = [name for _, name in ordered]
        self._label_of = {cid: label for label, cid in enumerate(self.category_ids, start=1)}
        if len(self._label_of) != len(self.category_ids):
            raise DatasetError(f"duplicate category ids in {self.category_ids}")
        if not self.category_ids:
            raise DatasetError("no categories")

    @property
    def num_classes(self):
        return len(self.category_ids) + 1

    def label_of(self, category_id):
        """Contiguous label 1..K of a category id, or None if the id is unknown."""
        return self._label_of.get(category_id)

    def category_id_of(self, label):
        """COCO category id of a label 1..K."""
        if not 1 <= label <= len(self.category_ids):
            raise ValueError(f"label {label} is outside 1..{len(self.category_ids)}")
        return self.category_ids[label - 1]

    def to_json(self):
        return {"categories": [{"label": label, "id": cid, "name": name}
                               for label, (cid, name) in enumerate(zip(self.category_ids, self.names), start=1)]}

    def __eq__(self, other):
        return (isinstance(other, ClassMap) and self.category_ids == other.category_ids
                and self.names == other.names)

    def __repr__(self):
        return f"ClassMap({len(self.category_ids)} classes: {list(zip(self.category_ids, self.names))[:4]}...)"


def classes_path(mindrecord_dir):
    return os.path.join(mindrecord_dir, CLASSES_FILE)


def write_class_map(class_map, path):
    """Write ``class_map`` to ``path`` atomically."""
    write_json_atomic(path, class_map.to_json(), indent=1)


def load_class_map(mindrecord_dir):
    """The ClassMap saved by the MindRecord conversion in ``mindrecord_dir``.

    Raises DatasetError (one line, naming the file) if it is missing or malformed.
    """
    path = classes_path(mindrecord_dir)
    if not os.path.isfile(path):
        raise DatasetError(f"class mapping not found: {path} (convert the data set first)")
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)["categories"]
        pairs = [(int(e["id"]), str(e["name"])) for e in entries]
        labels = [int(e["label"]) for e in entries]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"class mapping {path} is malformed: {e}") from None
    class_map = ClassMap(pairs)
    if labels != list(range(1, len(labels) + 1)) or [cid for cid, _ in pairs] != class_map.category_ids:
        raise DatasetError(f"class mapping {path} is malformed: labels must be 1..K in category id order")
    return class_map


def label_to_category(mindrecord_dir):
    """{label 1..K: COCO category id} of the data set converted in ``mindrecord_dir``."""
    class_map = load_class_map(mindrecord_dir)
    return {label: cid for label, cid in enumerate(class_map.category_ids, start=1)}


def resolve_num_classes(cfg, mindrecord_dir=None):
    """Make ``cfg.num_classes`` agree with the data set's class mapping; returns the ClassMap.

    ``cfg.num_classes == 0`` takes K + 1 from the mapping; any other value must equal it.
    ``cfg.coco_classes`` becomes ``["background"] + names`` and ``cfg.coco_category_ids`` the data
    set's ids, so that logs and result files name the classes of this data set.
    """
    class_map = load_class_map(mindrecord_dir or cfg.mindrecord_dir)
    if cfg.num_classes == 0:
        cfg.num_classes = class_map.num_classes
    elif cfg.num_classes != class_map.num_classes:
        raise ConfigError(f"config key 'num_classes' is {cfg.num_classes} but the data set has "
                          f"{class_map.num_classes - 1} categories + background = {class_map.num_classes} "
                          f"({classes_path(mindrecord_dir or cfg.mindrecord_dir)}); set num_classes to 0 or "
                          f"{class_map.num_classes}")
    cfg.coco_classes = ["background"] + class_map.names
    cfg.coco_category_ids = list(class_map.category_ids)
    return class_map
