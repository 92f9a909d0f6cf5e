"""The grader's own linear probe on a submission's frozen video features (the SimCLR case).

It mirrors `homework.simclr.fit_linear_probe` (standardise with the training features' mean and
std, multinomial logistic regression with an L2 penalty, full-batch L-BFGS with a strong-Wolfe
line search), in float64 since a submission's features may be badly scaled. It lives here
because that function is a part students write: in the starter it raises NotImplementedError,
and the grader never runs a submission's version of anything in its own process.
"""

from __future__ import annotations

import numpy as np


def probe_predictions(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                      num_classes: int = 3, weight_decay: float = 1e-4, steps: int = 500) -> np.ndarray:
    """Fit on (train_x (N, D), train_y (N,)); the predicted classes of test_x (M,)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)  # the problem is convex; the seed only fixes the starting point
    train_x, test_x = torch.from_numpy(train_x).double(), torch.from_numpy(test_x).double()  # (N, D) each
    train_y = torch.from_numpy(train_y).long()
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    linear = torch.nn.Linear(train_x.shape[1], num_classes).double()
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(train_x), train_y) + weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return linear(test_x).argmax(1).numpy()
