"""Training: optimizers (SGD, Adam), learning-rate schedules, mini-batches and the fit / evaluate loops."""
from .optim import SGD, Adam, Optimizer, make_optimizer  # noqa: F401
from .schedule import Constant, Cosine, Schedule, StepDecay, make_schedule  # noqa: F401
from .loop import ProgressBar, evaluate, fit, predict, with_loss  # noqa: F401

__all__ = ["SGD", "Adam", "Optimizer", "make_optimizer", "Constant", "Cosine", "Schedule", "StepDecay",
           "make_schedule", "ProgressBar", "evaluate", "fit", "predict", "with_loss"]
