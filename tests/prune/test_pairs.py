"""The prunable pairs found in a traced forward: modules and functions, and what excludes one."""

import torch.nn.functional as F
from torch import nn

from leanconv import zoo
from leanconv.prune import Pair, disjoint, find_pairs


class Functional(nn.Module):
    """conv -> bn -> F.relu -> F.max_pool2d -> conv, then a residual-style use of its output."""

    def __init__(self, residual: bool = False, groups: int = 1, twice: bool = False):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.b = nn.Conv2d(8, 8, 3, padding=1, groups=groups)
        self.c = nn.Conv2d(8, 4, 1)
        self.residual, self.twice = residual, twice

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.bn(self.a(x))), 2)
        y = self.b(h)
        if self.residual:
            y = y + h  # h is also a sum's operand: a -> b is not a pair
        if self.twice:
            y = self.b(y)
        return self.c(F.relu(y))


def test_the_inner_pairs_of_residual_blocks():
    model = zoo.create("resnet18_cifar", num_classes=10, width=0.5)
    pairs = find_pairs(model)
    assert [p.producer for p in pairs] == [
        f"layer{s}.{b}.conv1.0" for s in range(1, 5) for b in range(2)
    ]
    assert pairs[0] == Pair("layer1.0.conv1.0", "layer1.0.conv2.0", "layer1.0.conv1.1", 32)


def test_functions_and_pooling_between_the_convolutions():
    assert find_pairs(Functional()) == [Pair("a", "b", "bn", 8), Pair("b", "c", None, 8)]


def test_an_output_used_elsewhere_a_grouped_consumer_or_a_conv_called_twice_is_no_pair():
    assert find_pairs(Functional(residual=True)) == []  # b -> c: y = b(h) + h, not b's alone
    assert find_pairs(Functional(groups=2)) == []  # b is grouped: neither consumer nor producer
    assert find_pairs(Functional(twice=True)) == []


def test_a_sequential_model():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 8, 3),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1))  # fmt: skip
    assert find_pairs(model) == [Pair("0", "3", "1", 16)]


def test_disjoint_pairs_of_a_chain_take_every_other_one():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.ReLU(),
                          nn.Conv2d(16, 16, 3), nn.ReLU(), nn.Conv2d(16, 8, 3))  # fmt: skip
    pairs = find_pairs(model)
    assert [(p.producer, p.consumer) for p in pairs] == [("0", "2"), ("2", "4"), ("4", "6")]
    assert [(p.producer, p.consumer) for p in disjoint(pairs)] == [("0", "2"), ("4", "6")]


def test_padding_by_name_or_a_module_under_two_names_is_no_pair():
    same = nn.Sequential(nn.Conv2d(3, 32, 3, padding="same"), nn.ReLU(),
                         nn.Conv2d(32, 16, 3, padding="same"))  # fmt: skip
    assert find_pairs(same) == []

    class Aliased(nn.Module):  # the first convolution also reachable as body.0
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
            self.body = nn.Sequential(self.conv1, nn.BatchNorm2d(32), nn.ReLU(),
                                      nn.Conv2d(32, 16, 3, padding=1))  # fmt: skip

        def forward(self, x):
            return self.body(x)

    assert find_pairs(Aliased()) == []
