"""Galaxy Zoo style volunteer votes: a Dirichlet-multinomial head per question of a decision tree.

The schema (which questions, their answers, and which answer of which earlier question leads to
each one) comes with the data: a dataset manifest's ``votes`` entry, delivered to tasks as
``DataInfo.stats["vote_schema"]``::

    {"questions": [{"name": "smooth-or-featured", "answers": ["smooth", "featured-or-disk"], "asked_if": null},
                   {"name": "bar", "answers": ["yes", "no"], "asked_if": "smooth-or-featured_featured-or-disk"}]}

The batch key ``votes`` holds float vote counts (B, total answers) in that schema's order
(``galframe.data.format.vote_columns``).  The task config may keep a subset of the questions
(``questions: [bar]``) or give its own ``schema`` (same form), whose answer columns must all be
among the data's; the task maps them onto the data's columns.

Model (as Zoobot does): for every question the head predicts positive Dirichlet concentrations
alpha (one per answer, in ``[alpha_min, alpha_max]``); the loss of a galaxy is the sum over
questions of the Dirichlet-multinomial negative log-likelihood of its counts,

    -log P(k | alpha) = -[log N! - sum log k_a! + log G(A) - log G(N + A) + sum (log G(k_a + alpha_a) - log G(alpha_a))]

with N = sum k_a and A = sum alpha_a.  A question nobody answered (N = 0) contributes exactly 0,
so questions further down the tree only teach the network on galaxies that reached them.

Metrics (over galaxies with at least ``min_votes`` votes on a question): per question and pooled
over every (galaxy, question) pair, the mean absolute error between the expected vote fractions
alpha / A and the observed fractions k / N (averaged over the question's answers), the
majority-answer accuracy (the predicted most likely answer got the most votes; ties count as right),
and the mean summed negative log-likelihood per galaxy (``nll``).

Catalog columns: ``<question>_<answer>_fraction`` (expected fraction), ``<question>_<answer>_fraction_sigma``
(its standard deviation under the predicted Dirichlet), ``<question>_concentration`` (A: the number of
votes the prediction is "worth"; larger is more certain) and ``<question>_reached``: the expected fraction
of volunteers who would be asked the question (the product of the predicted fractions of the answers
leading to it; 1 for the first question; NaN where the path leaves the selected questions).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torchmetrics import Metric

from galframe.api import Backbone, DataInfo, Features, Task
from galframe.errors import ConfigError, did_you_mean
from galframe_tasks import mlp_head

def dirichlet_multinomial_nll(counts: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """(..., K) counts and concentrations -> (...) negative log-likelihood (0 where there are no counts)."""
    counts = counts.to(alpha.dtype)
    n = counts.sum(-1)
    total = alpha.sum(-1)
    log_coef = torch.lgamma(n + 1.0) - torch.lgamma(counts + 1.0).sum(-1)
    log_p = log_coef + torch.lgamma(total) - torch.lgamma(n + total) + (torch.lgamma(counts + alpha) - torch.lgamma(alpha)).sum(-1)
    return -log_p


def check_schema(schema: Any, where: str) -> list[dict]:
    """The questions of a vote schema, checked: names, at least two answers each, ``asked_if`` naming an
    answer of an earlier question (so the questions form a tree)."""
    if not isinstance(schema, Mapping) or not isinstance(schema.get("questions"), (list, tuple)) or not schema["questions"]:
        raise ConfigError(f"{where}: a vote schema is {{'questions': [{{'name', 'answers', 'asked_if'}}, ...]}} (got {schema!r}).")
    questions: list[dict] = []
    columns: set[str] = set()
    names: set[str] = set()
    for q in schema["questions"]:
        if not isinstance(q, Mapping) or "name" not in q or "answers" not in q:
            raise ConfigError(f"{where}: every question needs a 'name' and 'answers' (got {q!r}).")
        name, answers = str(q["name"]), [str(a) for a in q["answers"]]
        if name in names:
            raise ConfigError(f"{where}: question '{name}' appears twice.")
        if len(answers) < 2 or len(set(answers)) != len(answers):
            raise ConfigError(f"{where}: question '{name}' needs at least two distinct answers (got {answers}).")
        parent = q.get("asked_if")
        if parent is not None and str(parent) not in columns:
            raise ConfigError(
                f"{where}: question '{name}' is asked_if '{parent}', which is not an answer of an earlier question "
                f"('<question>_<answer>').{did_you_mean(str(parent), sorted(columns))}"
            )
        questions.append({"name": name, "answers": answers, "asked_if": None if parent is None else str(parent)})
        names.add(name)
        columns.update(f"{name}_{a}" for a in answers)
    return questions


class VoteMetrics(Metric):
    """Sums per question (absolute fraction errors, majority hits, galaxies counted) and the summed NLL
    over galaxies.  A torchmetrics ``Metric``: under distributed training the sums are those of the
    whole split."""

    full_state_update = False

    def __init__(self, questions: Sequence[str]) -> None:
        super().__init__()
        self.questions = list(questions)
        k = len(self.questions)
        for state in ("abs_err", "hits", "count"):
            self.add_state(state, default=torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("nll", default=torch.zeros(2, dtype=torch.float64), dist_reduce_fx="sum")  # (sum, galaxies)

    def update(self, abs_err: torch.Tensor, hits: torch.Tensor, count: torch.Tensor, nll: torch.Tensor) -> None:
        """Per question (Q,): summed mean-absolute fraction errors, majority hits, galaxies counted;
        ``nll``: (B,) summed NLL of each galaxy of the batch."""
        self.abs_err += abs_err.detach().double().to(self.abs_err.device)
        self.hits += hits.detach().double().to(self.hits.device)
        self.count += count.detach().double().to(self.count.device)
        nll = nll.detach().double()
        self.nll += torch.stack([nll.sum(), torch.tensor(float(nll.numel()), dtype=torch.float64, device=nll.device)]).to(self.nll.device)

    def compute(self) -> dict[str, torch.Tensor]:
        return {"abs_err": self.abs_err, "hits": self.hits, "count": self.count, "nll": self.nll}


class VotesTask(Task):
    requires = ("votes",)
    monitor = ("fraction_mae", "min")

    def __init__(
        self,
        name: str,
        backbone: Backbone,
        data: DataInfo,
        questions: Optional[Sequence[str]] = None,
        schema: Optional[Mapping[str, Any]] = None,
        hidden: int = 256,
        dropout: float = 0.0,
        alpha_min: float = 1.0,
        alpha_max: float = 100.0,
        min_votes: int = 1,
    ) -> None:
        super().__init__(name, backbone, data)
        data_schema = (data.stats or {}).get("vote_schema")
        if schema is None and not data_schema:
            raise ConfigError(
                f"task '{name}' (votes) needs vote counts: the dataset has no vote schema (a 'votes' entry in its "
                "manifest), and the task config gives none."
            )
        # the columns of the batch's 'votes' tensor: the data's schema if it has one, else the task's own
        data_questions = check_schema(data_schema, "the dataset's vote schema") if data_schema else None
        own = check_schema(schema, f"task '{name}' (votes): schema") if schema is not None else data_questions
        batch_columns = [f"{q['name']}_{a}" for q in (data_questions or own) for a in q["answers"]]
        if questions is not None:
            wanted = [str(q) for q in questions]
            known = [q["name"] for q in own]
            for q in wanted:
                if q not in known:
                    raise ConfigError(f"task '{name}' (votes): unknown question '{q}'.{did_you_mean(q, known)} Questions: {known}.")
            if not wanted or len(set(wanted)) != len(wanted):
                raise ConfigError(f"task '{name}' (votes): 'questions' must list distinct question names (got {wanted}).")
            own = [q for q in own if q["name"] in wanted]
        self.questions: list[dict] = own
        index: list[int] = []
        self.slices: dict[str, slice] = {}
        for q in self.questions:
            cols = [f"{q['name']}_{a}" for a in q["answers"]]
            missing = [c for c in cols if c not in batch_columns]
            if missing:
                raise ConfigError(
                    f"task '{name}' (votes): schema answer column(s) {missing} are not among the data's vote columns "
                    f"{batch_columns}."
                )
            self.slices[q["name"]] = slice(len(index), len(index) + len(cols))
            index += [batch_columns.index(c) for c in cols]
        self.register_buffer("column_index", torch.tensor(index, dtype=torch.long), persistent=False)
        self.n_answers = len(index)
        self.alpha_min, self.alpha_max = float(alpha_min), float(alpha_max)
        if not 0.0 < self.alpha_min < self.alpha_max:
            raise ConfigError(f"task '{name}' (votes): need 0 < alpha_min < alpha_max (got {alpha_min}, {alpha_max}).")
        self.min_votes = int(min_votes)
        if self.min_votes < 1:
            raise ConfigError(f"task '{name}' (votes): min_votes must be at least 1 (got {min_votes}).")
        self.head = mlp_head(backbone.embed_dim, self.n_answers, hidden, dropout)

    # -- model ------------------------------------------------------------------------
    def forward(self, features: Features) -> dict[str, torch.Tensor]:
        raw = self.head(features.embedding).float()
        return {"alpha": self.alpha_min + (self.alpha_max - self.alpha_min) * torch.sigmoid(raw)}

    def counts(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """(B, n_answers) vote counts of the task's answers (missing values count as no votes)."""
        votes = batch["votes"].float()
        votes = votes.index_select(1, self.column_index.to(votes.device))
        return torch.nan_to_num(votes, nan=0.0).clamp_min(0.0)

    def nll(self, out: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> torch.Tensor:
        """(B, n_questions) Dirichlet-multinomial NLL of each question (0 where it got no votes)."""
        alpha, counts = out["alpha"].float(), self.counts(batch).to(out["alpha"].device)
        return torch.stack([dirichlet_multinomial_nll(counts[:, sl], alpha[:, sl]) for sl in self.slices.values()], dim=1)

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
        """Sum over questions, mean over galaxies."""
        return self.nll(out, batch).sum(dim=1).mean()

    def fractions(self, out: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """question -> (B, K) expected vote fractions alpha / sum(alpha)."""
        alpha = out["alpha"].float()
        return {q: alpha[:, sl] / alpha[:, sl].sum(dim=1, keepdim=True) for q, sl in self.slices.items()}

    # -- metrics ------------------------------------------------------------------------
    def make_metrics(self) -> nn.Module:
        return VoteMetrics([q["name"] for q in self.questions])

    def update_metrics(self, metrics: nn.Module, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> None:
        counts = self.counts(batch).to(out["alpha"].device)
        q_count = len(self.questions)
        abs_err, hits, count = (torch.zeros(q_count, dtype=torch.float64, device=counts.device) for _ in range(3))
        for j, (q, frac) in enumerate(self.fractions(out).items()):
            k = counts[:, self.slices[q]]
            n = k.sum(dim=1)
            keep = n >= self.min_votes
            if not keep.any():
                continue
            k, frac, n = k[keep], frac[keep], n[keep]
            observed = k / n[:, None]
            abs_err[j] = (frac - observed).abs().mean(dim=1).double().sum()
            picked = k.gather(1, frac.argmax(dim=1, keepdim=True)).squeeze(1)
            hits[j] = (picked >= k.max(dim=1).values).double().sum()  # a tie for the most votes counts as right
            count[j] = float(keep.sum())
        metrics.update(abs_err, hits, count, self.nll(out, batch).sum(dim=1))

    def compute_metrics(self, metrics: nn.Module) -> dict[str, torch.Tensor]:
        nan = float("nan")
        k = len(self.questions)
        if metrics.update_count:
            s = metrics.compute()
            # reshape: torchmetrics squeezes one-element states (a schema of one question) to 0-d
            abs_err, hits, count, nll = (s[key].double().cpu().reshape(-1) for key in ("abs_err", "hits", "count", "nll"))
        else:
            abs_err, hits, count, nll = torch.zeros(k), torch.zeros(k), torch.zeros(k), torch.zeros(2)

        def ratio(a: Any, b: Any) -> torch.Tensor:
            return torch.tensor(float(a) / float(b) if float(b) > 0 else nan)

        result: dict[str, torch.Tensor] = {}
        for j, q in enumerate(self.questions):
            result[f"{q['name']}_fraction_mae"] = ratio(abs_err[j], count[j])
            result[f"{q['name']}_majority_accuracy"] = ratio(hits[j], count[j])
        result["fraction_mae"] = ratio(abs_err.sum(), count.sum())
        result["majority_accuracy"] = ratio(hits.sum(), count.sum())
        result["nll"] = ratio(nll[0], nll[1])
        return {key: v.float() for key, v in result.items()}

    # -- predictions and report -----------------------------------------------------------
    def predict_columns(self, out: dict[str, torch.Tensor]) -> dict[str, Any]:
        alpha = out["alpha"].float()
        cols: dict[str, Any] = {}
        expected: dict[str, torch.Tensor] = {}
        for q in self.questions:
            a = alpha[:, self.slices[q["name"]]]
            total = a.sum(dim=1, keepdim=True)
            frac = a / total
            sigma = (a * (total - a) / (total**2 * (total + 1.0))).sqrt()
            for i, answer in enumerate(q["answers"]):
                col = f"{q['name']}_{answer}"
                expected[col] = frac[:, i]
                cols[f"{col}_fraction"] = frac[:, i].cpu().numpy()
                cols[f"{col}_fraction_sigma"] = sigma[:, i].cpu().numpy()
            cols[f"{q['name']}_concentration"] = total[:, 0].cpu().numpy()
        reached: dict[str, torch.Tensor] = {}
        owner = {f"{q['name']}_{a}": q["name"] for q in self.questions for a in q["answers"]}
        for q in self.questions:  # a question comes after the one it is asked from
            parent = q["asked_if"]
            if parent is None:
                reached[q["name"]] = torch.ones_like(alpha[:, 0])
            elif parent in owner:
                reached[q["name"]] = expected[parent] * reached[owner[parent]]
            else:  # asked from a question this task does not predict
                reached[q["name"]] = torch.full_like(alpha[:, 0], math.nan)
            cols[f"{q['name']}_reached"] = reached[q["name"]].cpu().numpy()
        return cols

    def write_report(self, pred: Any, dm: Any, run_dir: Any, model: Any = None) -> list:
        panels = []
        for q in self.questions:
            cols = [f"{q['name']}_{a}" for a in q["answers"]]
            if not all(c in pred and f"{c}_fraction" in pred for c in cols):
                continue
            k = np.nan_to_num(pred[cols].to_numpy(dtype=float), nan=0.0)
            n = k.sum(axis=1)
            keep = n >= self.min_votes
            observed = k[keep] / n[keep, None]
            predicted = pred[[f"{c}_fraction" for c in cols]].to_numpy(dtype=float)[keep]
            panels.append((q["name"], q["answers"], observed, predicted))
        if not panels:
            return []
        path = run_dir / f"votes_{self.name}.png"
        return [vote_fractions_png(panels, path, f"{self.name}: held-out vote fractions")]


def vote_fractions_png(panels: list, path: Any, title: str) -> Any:
    """Predicted against observed vote fraction, one panel per question, one colour per answer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(panels))
    rows = int(math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (name, answers, observed, predicted) in zip(axes.ravel(), panels):
        ax.axis("on")
        for i, answer in enumerate(answers):
            ax.scatter(observed[:, i], predicted[:, i], s=5, alpha=0.6, label=answer)
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        mae = float(np.abs(predicted - observed).mean()) if len(observed) else float("nan")
        ax.set_title(f"{name} (n={len(observed)}, MAE {mae:.3f})", fontsize=8)
        ax.set_xlabel("observed fraction", fontsize=8)
        ax.set_ylabel("predicted fraction", fontsize=8)
        ax.legend(fontsize=6, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
