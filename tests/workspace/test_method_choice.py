"""The Train page's grouping of the registered methods and its sentence on what training costs."""

from promptlab.methods import registered_methods
from promptlab.workspace.method_choice import GROUPS, method_groups, training_cost


def test_every_method_is_offered_once_with_the_preselected_one_first():
    methods = registered_methods()
    for preselected in ("coop", "zeroshot", "nola"):
        groups = method_groups(methods, preselected)
        assert sorted(key for keys in groups.values() for key in keys) == sorted(methods)
        first_group = next(iter(groups.values()))
        assert first_group[0] == preselected
    assert set(method_groups(methods, "coop")) == set(GROUPS.values())


def test_each_method_says_what_an_epoch_costs():
    methods = registered_methods()
    assert "once" in training_cost(methods["coop"], 24) and "24 training images" in training_cost(methods["coop"], 24)
    for key in ("clip_lora", "maple"):
        assert "nothing can be cached" in training_cost(methods[key], 24)
    assert "text encoder for every image" in training_cost(methods["cocoop"], 24)
    assert "Nothing to train" in training_cost(methods["zeroshot"], 24)
    assert "unlabelled images" in training_cost(methods["nola"], 24)
