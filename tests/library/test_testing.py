"""optimlib.testing.check_optimizer: passes good optimizers, names the fault in bad ones."""

from __future__ import annotations

import pytest
import torch

import optimlib
from optimlib.testing import CheckReport, check_optimizer
from tests.library.optimizer_cases import OPTIMIZERS

ALL_CHECKS = 8


@pytest.mark.parametrize("info", OPTIMIZERS, ids=lambda info: info.name)
def test_every_optimlib_optimizer_passes_and_matches_its_twin(info):
    config = {key: value for key, value in info.configs[0].items()}
    report = check_optimizer(
        lambda params: info.ours(params, **config),
        reference=lambda params: info.theirs(params, **config),
    )
    assert isinstance(report, CheckReport)
    assert len(report.passed) == ALL_CHECKS + 1 and not report.skipped, str(report)


@pytest.mark.parametrize(
    "factory",
    [
        lambda p: optimlib.LBFGS(p, line_search_fn="strong_wolfe"),
        lambda p: optimlib.Lion(p, lr=1e-2, weight_decay=0.1),
        lambda p: optimlib.RandomScaleSGD(p, lr=0.1, seed=7),
    ],
    ids=["LBFGS", "Lion", "RandomScaleSGD"],
)
def test_optimlibs_other_optimizers_pass(factory):
    report = check_optimizer(factory)
    if "LBFGS" in report.name:
        assert [check for check, _ in report.skipped] == ["parameter groups keep their own options"]
        assert "single parameter group" in report.skipped[0][1]
    else:
        assert len(report.passed) == ALL_CHECKS and not report.skipped


@pytest.mark.parametrize("cls", [torch.optim.SGD, torch.optim.Adam], ids=lambda c: c.__name__)
def test_torch_optimizers_pass(cls):
    report = check_optimizer(lambda params: cls(params, lr=0.01))
    assert len(report.passed) == ALL_CHECKS
    assert "8 checks passed" in str(report)


def test_a_different_reference_is_reported_with_the_difference():
    with pytest.raises(AssertionError, match=r"same trajectory as the reference.*differs"):
        check_optimizer(
            lambda p: optimlib.SGD(p, lr=0.1),
            reference=lambda p: optimlib.SGD(p, lr=0.1, momentum=0.5),
        )


def test_each_remaining_check_can_fail():
    class IgnoresGroups(optimlib.SGD):
        def update_group(self, group, params, grads, *, foreach):
            super().update_group(
                {**group, "lr": self.defaults["lr"]}, params, grads, foreach=foreach
            )

    class LosesDtype(torch.optim.Optimizer):
        def __init__(self, params, lr=0.1):
            super().__init__(params, {"lr": lr})

        @torch.no_grad()
        def step(self, closure=None):
            with torch.enable_grad():
                loss = closure()
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        self.state[p]["velocity"] = p.grad.double()
                        p.add_(p.grad, alpha=-group["lr"])
            return loss

    class TouchesGradless(optimlib.SGD):
        def update_group(self, group, params, grads, *, foreach):
            super().update_group(group, params, grads, foreach=foreach)
            for p in group["params"]:
                if p.grad is None:
                    p.mul_(0.5)

    class GlobalRandom(optimlib.SGD):
        def update_group(self, group, params, grads, *, foreach):
            factor = torch.rand(()).item()  # the global generator: not reproducible
            super().update_group(
                {**group, "lr": group["lr"] * factor}, params, grads, foreach=foreach
            )

    with pytest.raises(AssertionError, match="'two identical runs give identical results'"):
        check_optimizer(lambda p: GlobalRandom(p, lr=0.1))
    with pytest.raises(AssertionError, match="'the learning rate is read from param_groups'"):
        check_optimizer(lambda p: IgnoresGroups(p, lr=0.1))
    with pytest.raises(AssertionError, match=r"state\['velocity'\] is torch\.float64"):
        check_optimizer(lambda p: LosesDtype(p))
    with pytest.raises(AssertionError, match=r"whose \.grad is None was changed"):
        check_optimizer(lambda p: TouchesGradless(p, lr=0.1))


def test_the_closure_in_place_and_resume_checks_can_fail():
    class IgnoresClosure(torch.optim.SGD):
        @torch.no_grad()
        def step(self, closure=None):
            return super().step()

    class Rebinds(torch.optim.SGD):
        @torch.no_grad()
        def step(self, closure=None):
            with torch.enable_grad():
                loss = closure() if closure is not None else None
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.data = p - group["lr"] * p.grad
            return loss

    class CountsOnSelf(torch.optim.SGD):
        calls = 0  # a step counter outside state: a resumed run starts it again

        @torch.no_grad()
        def step(self, closure=None):
            with torch.enable_grad():
                loss = closure() if closure is not None else None
            self.calls += 1
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-group["lr"] / self.calls)
            return loss

    with pytest.raises(AssertionError, match="'step\\(closure\\) calls the closure"):
        check_optimizer(lambda p: IgnoresClosure(p, lr=0.1))
    with pytest.raises(AssertionError, match="'the update is in place"):
        check_optimizer(lambda p: Rebinds(p, lr=0.1))
    with pytest.raises(AssertionError, match="'a checkpoint resumes exactly"):
        check_optimizer(lambda p: CountsOnSelf(p, lr=0.1))
