"""What the pipeline says of layers that switch form by batch size."""

from torch import nn

from leanconv.compress.deploy import Deployed
from leanconv.compress.pipeline import switch_lines


def _deployed():
    return Deployed(
        nn.Identity(), nn.Identity(),
        algorithms={"a": "winograd4", "b": "winograd4", "c": "winograd2", "n": "narrow"},
        chains=["k"],
        min_batch={"a": 65, "b": 64, "k": 65},
    )  # fmt: skip


def test_a_layer_that_lost_at_every_batch_size_is_said_to_run_direct():
    lines = switch_lines(_deployed(), (1, 64))
    assert lines == [
        "a runs direct at every batch size measured (faster there than its algorithm)",
        "b runs its algorithm from batch 64 on (direct below: faster there)",
        "k runs one composed convolution at every batch size measured (faster there than its "
        "chain)",
    ]
    # measured up to 128, a min_batch of 65 is a switch inside the range
    assert switch_lines(_deployed(), (1, 128))[0] == (
        "a runs its algorithm from batch 65 on (direct below: faster there)"
    )
