"""One prepared data set per numeric preprocessing a study can choose (`space.numeric_preprocessing`).

The data is read and split once; each choice fits its own preprocessing on the same training rows the first
time a trial asks for it, and its tensors stay on the device for the rest of the study. A trial picks its data
by its choice: `variants.prepared(choice)` and `variants.tensors(choice)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from automlp.data.readers import RawData, read_data
from automlp.data.splits import PreparedData, prepare_data
from automlp.data.tensors import TrainData, to_tensors
from automlp.spec import DataSpec

if TYPE_CHECKING:
    import torch


class DataVariants:
    """`first`: the data (and tensors) the search already prepared, so its choice is not prepared twice."""

    def __init__(self, spec: DataSpec, seed: int, device: torch.device, raw: RawData | None = None,
                 first: tuple[PreparedData, TrainData] | None = None) -> None:
        self.spec, self.seed, self.device, self.raw = spec, seed, device, raw
        self._prepared: dict[str, PreparedData] = {}
        self._tensors: dict[str, TrainData] = {}
        if first is not None:
            self._prepared[first[0].numeric_preprocessing] = first[0]
            self._tensors[first[0].numeric_preprocessing] = first[1]

    def prepared(self, choice: str = "standard") -> PreparedData:
        if choice not in self._prepared:
            if self.raw is None:  # read once, when a second choice first needs it
                self.raw = read_data(self.spec)
            self._prepared[choice] = prepare_data(self.spec, self.seed, self.raw, numeric=choice)
        return self._prepared[choice]

    def of(self, tensors: TrainData) -> PreparedData:
        """The prepared data whose tensors these are."""
        return next(self._prepared[c] for c, t in self._tensors.items() if t is tensors)

    def tensors(self, choice: str = "standard") -> TrainData:
        if choice not in self._tensors:
            self._tensors[choice] = to_tensors(self.prepared(choice), self.device)
        return self._tensors[choice]
