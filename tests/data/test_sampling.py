"""The few-shot draw against a direct transcription of the Dassl/CoOp reference."""

import logging
import math
import random
from collections import Counter, defaultdict

import pytest

from promptlab.data.sampling import Sample, draw_train_val, subsample_classes


def reference_draw(train, val, num_shots, seed):
    """Transcription of Dassl: set_random_seed(seed), then generate_fewshot_dataset for train and val."""
    random.seed(seed)

    def generate_fewshot_dataset(data_source, num_shots):
        tracker = defaultdict(list)
        for item in data_source:
            tracker[item.label].append(item)
        dataset = []
        for _label, items in tracker.items():
            if len(items) >= num_shots:
                sampled_items = random.sample(items, num_shots)
            else:
                sampled_items = items
            dataset.extend(sampled_items)
        return dataset

    return generate_fewshot_dataset(train, num_shots), generate_fewshot_dataset(val, min(num_shots, 4))


def reference_subsample(*args, subsample="all"):
    """Transcription of CoOp's DatasetBase.subsample_classes."""
    if subsample == "all":
        return args
    dataset = args[0]
    labels = sorted({item.label for item in dataset})
    m = math.ceil(len(labels) / 2)
    selected = labels[:m] if subsample == "base" else labels[m:]
    relabeler = {y: y_new for y_new, y in enumerate(selected)}
    return [[Sample(i.path, relabeler[i.label], i.class_name) for i in d if i.label in selected] for d in args]


def make_samples(rng_seed: int, n_classes: int = 7, prefix: str = "train") -> list[Sample]:
    rng = random.Random(rng_seed)
    samples = [
        Sample(f"{prefix}/{label}/{i}.jpg", label, f"class{label}")
        for label in range(n_classes)
        for i in range(rng.randint(2, 40))
    ]
    rng.shuffle(samples)  # labels interleaved: first-seen order matters
    return samples


@pytest.mark.parametrize("seed", [1, 2, 3, 17])
@pytest.mark.parametrize("shots", [1, 2, 4, 8, 16])
def test_draw_matches_reference(seed, shots):
    train, val = make_samples(seed), make_samples(seed + 100, prefix="val")
    assert draw_train_val(train, val, shots, seed) == reference_draw(train, val, shots, seed)


@pytest.mark.parametrize("subsample", ["all", "base", "new"])
def test_subsample_matches_reference(subsample):
    splits = [make_samples(1), make_samples(2, prefix="val"), make_samples(3, prefix="test")]
    assert list(subsample_classes(splits, subsample)) == list(reference_subsample(*splits, subsample=subsample))


def test_base_and_new_partition_the_classes():
    splits = [make_samples(1)]
    (base,), (new,) = subsample_classes(splits, "base"), subsample_classes(splits, "new")
    assert {s.class_name for s in base} | {s.class_name for s in new} == {f"class{i}" for i in range(7)}
    assert {s.label for s in base} == set(range(4)) and {s.label for s in new} == set(range(3))


def test_fewer_images_than_shots_warns_and_uses_all(caplog):
    train = [Sample(f"{i}.jpg", 0, "rare") for i in range(3)] + [Sample(f"c{i}.jpg", 1, "common") for i in range(20)]
    with caplog.at_level(logging.WARNING):
        drawn, _ = draw_train_val(train, [], 8, seed=1)
    assert sum(s.label == 0 for s in drawn) == 3 and sum(s.label == 1 for s in drawn) == 8
    assert "1 of 2 classes have fewer images than shots=8, so all of theirs are used: 'rare' (3)." in caplog.text


def test_many_short_classes_are_one_warning_line(caplog):
    train = [Sample(f"{c}-{i}.jpg", c, f"class{c}") for c in range(8) for i in range(2 + c % 3)]
    with caplog.at_level(logging.WARNING):
        draw_train_val(train, [], 16, seed=1)
    (record,) = [r for r in caplog.records if "fewer images than shots" in r.getMessage()]
    assert record.getMessage().startswith("8 of 8 classes") and record.getMessage().endswith("and 5 more.")


@pytest.mark.parametrize("shots", [1, 4, 16])
def test_without_val_split_validation_comes_from_unused_training_images(shots):
    """Never the test images; the training draw stays the reference's."""
    train = make_samples(5)
    drawn, val = draw_train_val(train, [], shots, seed=2)
    assert drawn == draw_train_val(train, make_samples(6, prefix="val"), shots, seed=2)[0]
    assert not set(drawn) & set(val) and set(val) <= set(train)
    per_class = Counter(s.label for s in val)
    left = Counter(s.label for s in train) - Counter(s.label for s in drawn)
    assert all(per_class[label] == min(shots, 4, n) for label, n in left.items())


def test_without_val_split_and_no_draw_a_share_of_each_class_validates():
    train = [Sample(f"a{i}.jpg", 0, "a") for i in range(10)] + [Sample("b.jpg", 1, "b")]
    kept, val = draw_train_val(train, [], 0, seed=1, val_fraction=0.2)
    assert Counter(s.label for s in val) == {0: 2} and Counter(s.label for s in kept) == {0: 8, 1: 1}
    assert sorted(kept + val) == sorted(train)
