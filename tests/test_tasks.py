"""The study's eight tasks on the real data mirror: sizes, splits, label semantics, absences."""

from __future__ import annotations

import re
from functools import cache

import numpy as np
import pytest

from plm_bench import plugins
from plm_bench.errors import BenchError
from plm_bench.tasks.task import SPLITS

STUDY_SIZES = {  # the paper's Table 2 (train / valid / test)
    "gb1": (2691, 299, 5743),
    "secondary_structure": (9712, 1080, 364),
    "disorder": (1056, 118, 117),
    "stability": (53614, 2512, 12851),
}


@pytest.fixture(scope="session")
def load(data_dir):
    """Parsed splits per task, parsed once per session (stability has ~69k records)."""

    @cache
    def splits(name: str, which: tuple[str, ...] = SPLITS) -> dict:
        return plugins.get("task", name).load(data_dir, splits=which)

    return splits


def test_the_eight_study_tasks_are_registered():
    names = {"gb1", "aav", "gfp", "stability", "meltome", "subcellular_location", "disorder", "secondary_structure"}
    assert names <= set(plugins.catalog().items["task"])


@pytest.mark.parametrize("name", sorted(STUDY_SIZES))
def test_complete_tasks_have_the_study_split_sizes(load, name):
    splits = load(name)
    assert tuple(len(splits[s]) for s in SPLITS) == STUDY_SIZES[name]


def test_partial_tasks_give_the_splits_present_in_the_mirror(load, data_dir):
    location = load("subcellular_location", ("valid", "test"))
    assert (len(location["valid"]), len(location["test"])) == (1678, 490)
    assert len(load("gfp", ("valid",))["valid"]) == 5362
    task = plugins.get("task", "subcellular_location")
    assert task.present_splits(data_dir / task.data_folder) == ("valid", "test")


@pytest.mark.parametrize(("name", "file", "url"), [
    ("aav", "aav/splits.zip", "FLIP/raw/62cace8735f5610e2743cf06ce0f944b37fffaa6/splits/aav/splits.zip"),
    ("meltome", "meltome/splits.zip", "splits/meltome/splits.zip"),
    ("gfp", "fluorescence/train.csv", "ProtHyena/73de287623064ce9e0021eb80389e94a033930f9/data/fluorescence/train.csv"),
    ("subcellular_location", "subcellular_location/deeploc_our_train_set.fasta",
     "protein-localization/7b0be1e64a91db8ad1a8feae994a4d09aa9d7b1b/data_files/deeploc_our_train_set.fasta"),
])
def test_absent_files_are_one_error_naming_file_url_and_fix(data_dir, name, file, url):
    with pytest.raises(BenchError) as error:
        plugins.get("task", name).load(data_dir)
    message = str(error.value)
    assert "\n" not in message
    assert f"{data_dir / file} is missing" in message and url in message
    assert f"bench data fetch {name}" in message


def test_disorder_split_reproduces_the_study_notebook(load):
    """train_test_split(test_size=0.1, random_state=42) over CheZOD1174 in FASTA order: the
    notebook's printed head of the training split (first residues, and labels with 999 shown as
    -100) must come out identically."""
    train = load("disorder")["train"]
    heads = ["GVGETKVIYHLDEEETPYLVKIPVPAERITLGDFKSVLQRPAGAKY", "GSSGSSGRKKPVSQSLEFPTRYSPYRPYRCVHQGCFAAFTIQQNLI",
             "GIHKQKEKSRLQGGVLVNEILNHMKRATQIPSYKKLIMY", "MGMIVFVRFNSSYGFPVEVDSDTSILQLKEVVAKRQGVPADQLRVI",
             "SVLQVLHIPDERLRKVAKPVEEVNAEIQRIVDDMFETMYAEEGIGL"]
    assert [e.sequence[:len(h)] for e, h in zip(train, heads, strict=False)] == heads
    assert train[2].sequence == heads[2]
    first = train[0]
    assert not first.mask[0] and first.label[0] == 0  # 999: masked, never scored
    assert first.label[1:6] == pytest.approx([3.219, 4.014, 3.745, 3.53, 2.301])
    assert list(train[1].mask[:7]) == [False] * 6 + [True]
    assert train[1].label[6] == pytest.approx(-2.194)


def test_disorder_masks_exactly_the_999_scores(load, data_dir):
    text = (data_dir / "disorder/datasets/CheZOD1174_training_set_CheZOD_scores.txt").read_text()
    unknown = len(re.findall(r"(?<![\d.])999(?![\d.])", text))
    splits = load("disorder")
    masked = sum(int((~e.mask).sum()) for s in ("train", "valid") for e in splits[s])
    assert masked == unknown == 6896
    assert all(e.mask.all() for e in splits["test"])  # CheZOD117 has no unknown scores
    assert all(len(e.label) == len(e.sequence) for s in SPLITS for e in splits[s])


def test_secondary_structure_masks_unresolved_residues_and_keeps_rare_codes(load):
    splits = load("secondary_structure")
    unresolved = {s: sum(int((~e.mask).sum()) for e in splits[s]) for s in SPLITS}
    assert sum(unresolved.values()) == 186876 and unresolved["test"] == 9139  # zeros in mask.fasta
    assert all(not e.label[~e.mask].any() for e in splits["test"])
    residues = "".join(e.sequence for s in SPLITS for e in splits[s])
    assert {"U", "O", "X"} <= set(residues)  # kept verbatim; backbone families map them
    labels = np.concatenate([e.label[e.mask] for e in splits["train"]])
    assert set(np.unique(labels)) == {0, 1, 2}


def test_subcellular_location_classes_and_the_cytoplasm_nucleus_rule(load, data_dir):
    task = plugins.get("task", "subcellular_location")
    assert len(task.classes) == 10
    valid = load("subcellular_location", ("valid", "test"))["valid"]
    counts = np.bincount([e.label for e in valid], minlength=10)
    headers = (data_dir / "subcellular_location/deeploc_our_val_set.fasta").read_text().count("Cytoplasm-Nucleus-U")
    assert headers == 23
    assert counts[task.classes.index("Cytoplasm")] == 299  # 276 Cytoplasm-* + 23 Cytoplasm-Nucleus-*
    assert counts[task.classes.index("Nucleus")] == 476
    assert counts.sum() == 1678


def test_stability_reads_the_csv_conversion_record_by_record(load):
    train = load("stability")["train"]
    assert train[0].sequence == "DQSVRKLVRKLPDEGLDREKVKTYLDKLGVDREELQKFSDAIGLESSGGS"
    assert train[0].label == pytest.approx(-0.209999993443489)
    assert len({e.id for s in SPLITS for e in load("stability")[s]}) == sum(STUDY_SIZES["stability"])


def test_gb1_flip_encoding_of_validation(load):
    splits = load("gb1")
    assert all(len(e.sequence) == 265 for s in SPLITS for e in splits[s])
    assert all(np.isfinite(e.label) for e in splits["train"])
