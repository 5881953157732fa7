"""Training-step mechanics shared by every model: ``train.fast`` (precision, memory format, compilation), steps with
non-finite losses, the model's random stream, checkpoints and resume, progressive patches."""
