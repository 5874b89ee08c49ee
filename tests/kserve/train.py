"""Train the two iris models that play the primary and the canary InferenceService.

    python train.py OUT_DIR

writes OUT_DIR/primary/model.joblib and OUT_DIR/canary/model.joblib; each directory
stands for one InferenceService storageUri. The models are meant to disagree:

- primary: LogisticRegression, right on almost all of iris (classes 0, 1, 2).
- canary: a depth-1 decision tree. One split only separates setosa (0) from the
  rest, so it answers 0 or 1 and never 2.

Inputs (sepal length, sepal width, petal length, petal width) and answers:

    [5.1, 3.5, 1.4, 0.2]  setosa      primary 0  canary 0
    [6.9, 3.1, 5.4, 2.1]  virginica   primary 2  canary 1   <- the probe
"""
import os
import sys

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier


def train(out_dir):
    # iris ships inside scikit-learn: nothing is downloaded.
    x, y = load_iris(return_X_y=True)
    models = {
        "primary": LogisticRegression(max_iter=1000, random_state=0),
        "canary": DecisionTreeClassifier(max_depth=1, random_state=0),
    }
    for variant, model in models.items():
        model.fit(x, y)
        os.makedirs(os.path.join(out_dir, variant), exist_ok=True)
        joblib.dump(model, os.path.join(out_dir, variant, "model.joblib"))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python train.py OUT_DIR")
    train(sys.argv[1])
