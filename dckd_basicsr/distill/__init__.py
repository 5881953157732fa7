"""The distillation concepts the models combine: DCKD's negatives and history model, the loss-term table of Eq. 10,
FAKD's feature taps, the label-consistency ops (DCKD*, DUKD) and DUKD's upcycled data."""
