"""``birdsnap``: Birdsnap test, the 1849 images of upstream's valid-image list, 500 species (zero-shot
classification, ``--language en``), in upstream's layout::

    <root>/species.txt                 Birdsnap's species table (tab-separated, a header line; the columns used are
                                       the 2nd, the common name = class name, and the last, the image folder)
    <root>/test_images_valid.txt       a header line, then one image per line, relative to <root>
                                       (upstream ships it: clip_benchmark/data/birdsnap/)
    <root>/<Species_Folder>/<n>.jpg    the images; a folder matches the species' folder case-insensitively

Prompt: ``a photo of a {c}, a type of bird.``, as CLIP and upstream.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from internvl.data.synthetic import SyntheticImages, save_jpeg
from internvl.errors import ConfigError, DataError, MissingFileError

from .common import DATA_HELP, ListedImages, check_images_exist, classification_prompts

__all__ = ["LAYOUT", "TEMPLATES", "build", "write_birdsnap"]

SPECIES, TEST_LIST = "species.txt", "test_images_valid.txt"
LAYOUT = f"{SPECIES}, {TEST_LIST} and the species folders of images"
TEMPLATES = {"en": ["a photo of a {c}, a type of bird."]}


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise MissingFileError(f"{path} not found: birdsnap reads {SPECIES} and {TEST_LIST} in its root; {DATA_HELP}")
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) < 2:
        raise DataError(f"{path} has no entries after its header line")
    return lines


def build(root: Path, transform, split: str = "test", language: str = "en", custom_classname_file: Optional[str] = None,
          custom_template_file: Optional[str] = None, **_) -> ListedImages:
    if split != "test":
        raise ConfigError(f"birdsnap has a test split only ({TEST_LIST}), not --split {split}")
    if language not in TEMPLATES and not custom_classname_file:
        raise ConfigError(f"birdsnap's class names are English; --language {language} needs --custom_classname_file "
                          f"with a 'birdsnap' key (languages: {', '.join(TEMPLATES)})")
    species_file, list_file = root / SPECIES, root / TEST_LIST
    classes, folders = [], {}
    for number, line in enumerate(_lines(species_file)[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 3:
            raise DataError(f"{species_file}:{number}: expected tab-separated id, common name, ..., folder; got "
                            f"{line[:80]!r}")
        folders[fields[-1].strip().lower()] = len(classes)
        classes.append(fields[1].strip())
    paths, labels, where = [], [], []
    for number, line in enumerate(_lines(list_file)[1:], start=2):
        relative = line.strip()
        if not relative:
            continue
        folder = relative.split("/")[0].lower()
        if folder not in folders:
            raise DataError(f"{list_file}:{number}: {relative!r} is in folder {folder!r}, which no species of "
                            f"{species_file} has")
        paths.append(str(root / relative))
        labels.append(folders[folder])
        where.append(f"{list_file}:{number}")
    check_images_exist(paths, where, list_file)
    classes, templates = classification_prompts("birdsnap", language, classes, TEMPLATES, custom_classname_file,
                                                custom_template_file)
    return ListedImages(paths, labels, transform, where, classes, templates)


def write_birdsnap(root: os.PathLike, num_images: int, kit: Optional[SyntheticImages] = None, start: int = 0) -> Path:
    """Write the kit's classes as species (common name "red circle", folder "Red_Circle", listed lower-case in
    species.txt as Birdsnap does) and ``num_images`` images in upstream's layout. Refuses to overwrite."""
    kit = kit or SyntheticImages()
    root = Path(root)
    for path in (root / SPECIES, root / TEST_LIST):
        if path.exists():
            raise FileExistsError(f"{path} already exists; remove it first, a writer never mixes datasets")
    rows = ["id\tcommon\tscientific\tdir"]
    for label, name in enumerate(kit.classes):
        colour, shape = name.split("_")
        rows.append(f"{label + 1}\t{colour} {shape}\tFigura {shape} {colour}\t{name}")
    listed = ["path"]
    for index in range(start, start + num_images):
        s = kit.sample(index)
        relative = f"{s.class_name.title()}/{index:04d}.jpg"
        save_jpeg(s.image, root / relative)
        listed.append(relative)
    (root / SPECIES).write_text("\n".join(rows) + "\n", encoding="utf-8")
    (root / TEST_LIST).write_text("\n".join(listed) + "\n", encoding="utf-8")
    return root
