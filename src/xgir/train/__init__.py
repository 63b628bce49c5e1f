"""Training: ERM, the two-stage setup, configs."""

from xgir.train.erm import accuracy, accuracy_by_group, fit_classifier, model_device, predict_logits

__all__ = ["accuracy", "accuracy_by_group", "fit_classifier", "model_device", "predict_logits"]
